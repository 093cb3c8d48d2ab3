"""SLURM batch scripts for MRI work (pure builders), and thin sbatch/squeue calls to submit and wait."""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class JobResources:
    """What one SLURM job (or array task) asks for."""

    cpus: int = 1
    mem: str = "4G"
    time: str = "02:00:00"
    partition: str | None = None
    account: str | None = None


def batch_script(
    commands: Sequence[Sequence[str] | str],
    *,
    job_name: str,
    log_dir: str | Path,
    resources: JobResources = JobResources(),
    array: str | None = None,
    modules: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> str:
    """A bash batch script: ``#SBATCH`` lines, ``module load`` lines, exports, then ``commands``.

    A command given as a list is shell-quoted word by word; a string is used as it is (so it
    may refer to ``$SLURM_ARRAY_TASK_ID``). ``array`` is sbatch's ``--array`` value, e.g. ``0-7%2``.
    """
    log_pattern = "%x-%A_%a.out" if array else "%x-%j.out"
    lines = ["#!/bin/bash", f"#SBATCH --job-name={job_name}"]
    if array:
        lines.append(f"#SBATCH --array={array}")
    lines += [
        f"#SBATCH --cpus-per-task={resources.cpus}",
        f"#SBATCH --mem={resources.mem}",
        f"#SBATCH --time={resources.time}",
        f"#SBATCH --output={Path(log_dir) / log_pattern}",
    ]
    if resources.partition:
        lines.append(f"#SBATCH --partition={resources.partition}")
    if resources.account:
        lines.append(f"#SBATCH --account={resources.account}")
    lines.append("set -euo pipefail")
    lines += [f"module load {shlex.quote(m)}" for m in modules]
    lines.append('export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"')
    for key, value in (env or {}).items():
        lines.append(f"export {key}={shlex.quote(str(value))}")
    for command in commands:
        lines.append(command if isinstance(command, str) else shlex.join([str(c) for c in command]))
    return "\n".join(lines) + "\n"


def sbatch_command(script: str | Path, *, dependency: str | None = None, sbatch: str = "sbatch") -> list[str]:
    """The sbatch call for ``script`` (``--parsable`` so the job id can be read back)."""
    command = [sbatch, "--parsable"]
    if dependency:
        command.append(f"--dependency={dependency}")
    command.append(str(script))
    return command


def submit(script: str | Path, *, dependency: str | None = None, sbatch: str = "sbatch") -> str:
    """Submit ``script`` with sbatch and return the job id; raise RuntimeError with sbatch's message."""
    try:
        proc = subprocess.run(sbatch_command(script, dependency=dependency, sbatch=sbatch),
                              capture_output=True, text=True, check=False, timeout=60)
    except FileNotFoundError:
        raise RuntimeError(f"{sbatch} not found: this machine has no SLURM client (run on a login node)") from None
    if proc.returncode != 0:
        raise RuntimeError(f"sbatch {script} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip().split(";", 1)[0]


FINISHED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                      "PREEMPTED", "BOOT_FAIL", "DEADLINE"})


def job_states(job_ids: Sequence[str], *, squeue: str = "squeue") -> dict[str, str]:
    """State of every job and array task of ``job_ids`` (``"123_4" -> "COMPLETED"``), from squeue -t all."""
    proc = subprocess.run([squeue, "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i %T"],
                          capture_output=True, text=True, check=False, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"squeue failed ({proc.returncode}): {proc.stderr.strip()}")
    states: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def wait(job_ids: Sequence[str], *, timeout: float = 3600.0, poll: float = 2.0) -> dict[str, str]:
    """Poll squeue until every job (and array task) of ``job_ids`` has finished; return their states."""
    deadline = time.monotonic() + timeout
    while True:
        states = job_states(job_ids)
        pending = {k: v for k, v in states.items() if v not in FINISHED}
        if states and not pending:
            return states
        if time.monotonic() > deadline:
            raise TimeoutError(f"SLURM jobs {', '.join(job_ids)} not finished after {timeout:.0f} s: {states}")
        time.sleep(poll)
