"""SLURM job states, named once: which mean the job may still run and which mean it is over."""

from __future__ import annotations

#: Queued or running: the job (and what it runs) may still be, or is, alive.
ACTIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"})

#: Over for good.
FINISHED_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "SPECIAL_EXIT",
        "REVOKED",
    }
)


def base_state(state: str) -> str:
    """``CANCELLED by 1001`` → ``CANCELLED``; ``RUNNING+`` → ``RUNNING`` (what squeue/sacct add to a state)."""
    return state.split()[0].rstrip("+").upper() if state.strip() else ""


def is_finished(state: str) -> bool:
    """Whether a job in ``state`` is over (completed, failed, cancelled, out of time or memory, ...)."""
    return base_state(state) in FINISHED_STATES
