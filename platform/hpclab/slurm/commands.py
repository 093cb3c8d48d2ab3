"""Submit, query and cancel SLURM jobs from Python code (blocking calls; the hub has its own async runner)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .states import is_finished


class SlurmCommandError(RuntimeError):
    """A SLURM command failed or is missing; the message is SLURM's own words."""


def _run(argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 60, stdin: str | None = None) -> str:
    import subprocess  # here, not at the top: ``import hpclab`` stays light

    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            input=stdin,
            env=dict(os.environ if env is None else env),
        )
    except FileNotFoundError:
        raise SlurmCommandError(f"{argv[0]} not found: this machine has no SLURM client (run on a login node)") from None
    except subprocess.TimeoutExpired:
        raise SlurmCommandError(f"{argv[0]} did not answer within {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise SlurmCommandError(f"{Path(argv[0]).name} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def submit(
    script: str | Path, *, dependency: str | None = None, env: Mapping[str, str] | None = None, sbatch: str = "sbatch"
) -> str:
    """Submit a batch script (a file) with ``sbatch --parsable``; return the job id."""
    argv = [sbatch, "--parsable"] + ([f"--dependency={dependency}"] if dependency else []) + [str(script)]
    return _run(argv, env).strip().split(";", 1)[0]


def job_states(job_ids: Sequence[str], *, env: Mapping[str, str] | None = None, squeue: str = "squeue") -> dict[str, str]:
    """State of every job and array task of ``job_ids`` still known to squeue (``"123_4" -> "COMPLETED"``)."""
    out = _run([squeue, "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i %T"], env)
    return dict(line.split(None, 1) for line in out.splitlines() if len(line.split()) == 2)


def job_state(job_id: str, *, env: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """(state, exit code) of one job from ``scontrol show job -o``; (None, None) once SLURM forgot it."""
    try:
        out = _run(["scontrol", "show", "job", "-o", str(job_id)], env)
    except SlurmCommandError:
        return None, None
    fields = parse_job_line(out)
    return fields.get("JobState"), fields.get("ExitCode")


def parse_job_line(line: str) -> dict[str, str]:
    """``scontrol show job -o`` as Key=Value pairs, each key's first occurrence: since 26.05 the line holds
    ``SubmitLine=<the sbatch command line>`` with its spaces, whose words may look like pairs too."""
    fields: dict[str, str] = {}
    for key, value in re.findall(r"(\w+)=(\S*)", line):
        fields.setdefault(key, value)
    return fields


def cancel(job_ids: Sequence[str], *, env: Mapping[str, str] | None = None) -> None:
    """``scancel`` these jobs."""
    _run(["scancel", *job_ids], env)


def wait(
    job_ids: Sequence[str], *, timeout: float = 3600.0, poll: float = 2.0, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Poll squeue until every job (and array task) of ``job_ids`` has finished; return their states."""
    deadline = time.monotonic() + timeout
    while True:
        states = job_states(job_ids, env=env)
        if states and all(is_finished(state) for state in states.values()):
            return states
        if time.monotonic() > deadline:
            raise TimeoutError(f"SLURM jobs {', '.join(job_ids)} not finished after {timeout:.0f} s: {states}")
        time.sleep(poll)
