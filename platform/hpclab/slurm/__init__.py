"""HPCLab's SLURM core, standard library only: units, job states, a job spec that writes its own
``#SBATCH`` lines, and blocking submit/query/cancel. The hub (with its own async runner), the MRI
cohort, training jobs and the session helpers all build on it, so SLURM is written once.
"""

from __future__ import annotations

import datetime as _dt

from .commands import SlurmCommandError, cancel, job_state, job_states, submit, wait
from .jobspec import JobSpec
from .states import ACTIVE_STATES, FINISHED_STATES, base_state, is_finished
from .units import NO_LIMIT_WORDS, duration_seconds, format_memory, format_time, memory_bytes, parse_time, sbatch_memory

__all__ = [
    "ACTIVE_STATES",
    "FINISHED_STATES",
    "JobSpec",
    "NO_LIMIT_WORDS",
    "SlurmCommandError",
    "base_state",
    "cancel",
    "duration_seconds",
    "format_memory",
    "format_time",
    "is_finished",
    "job_state",
    "job_states",
    "memory_bytes",
    "parse_slurm_mem_mb",
    "parse_slurm_time",
    "parse_time",
    "sbatch_memory",
    "squeue_time_left",
    "submit",
    "wait",
]


def parse_slurm_time(text: str) -> _dt.timedelta | None:
    """A SLURM duration as a timedelta (None for no limit); ValueError otherwise. Same as ``parse_time``."""
    return parse_time(text)


def parse_slurm_mem_mb(text: str) -> int | None:
    """Bytes in a memory value as SLURM prints it (a bare number is MiB); None for 0 ("all of the node") or garbage."""
    try:
        return (
            memory_bytes(text.strip().removesuffix("B").removesuffix("b") if isinstance(text, str) else text, default_unit="M")
            or None
        )
    except ValueError:
        return None


def squeue_time_left(job_id: str, timeout: float = 5.0) -> _dt.timedelta | None:
    """How long the job has left (``squeue -h -j JOB -o %L``); None on any failure, so non-SLURM machines are fine."""
    import subprocess

    try:
        proc = subprocess.run(
            ["squeue", "-h", "-j", str(job_id), "-o", "%L"], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    line = next((line for line in proc.stdout.splitlines() if line.strip()), "") if proc.returncode == 0 else ""
    try:
        return parse_time(line) if line else None
    except ValueError:
        return None
