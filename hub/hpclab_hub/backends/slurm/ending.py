"""Say in words why a job ended, for the user's home page and the hub log."""

from __future__ import annotations

from hpclab_hub.backends.slurm.outputs import JobInfo

_STATES = {
    "CANCELLED": "was cancelled (scancel, or an administrator)",
    "TIMEOUT": "reached its time limit",
    "OUT_OF_MEMORY": "ran out of memory",
    "NODE_FAIL": "lost its node (node failure)",
    "FAILED": "failed (the server exited with an error)",
    "COMPLETED": "ended (the server exited)",
    "PREEMPTED": "was preempted by a higher-priority job",
    "BOOT_FAIL": "could not boot its node",
    "DEADLINE": "missed its deadline",
}


def describe_end(info: JobInfo) -> str:
    """One sentence: ``SLURM job 42 reached its time limit (TIMEOUT).``"""
    words = _STATES.get(info.state, f"ended in state {info.state}")
    reason = f", reason: {info.reason}" if info.reason and info.reason not in ("None", "") else ""
    return f"SLURM job {info.job_id} {words} ({info.state}{reason})."


def describe_pending(info: JobInfo, start_time: str | None, waited: float) -> str:
    """Progress line while queued: SLURM's reason, the expected start where known, the wait so far."""
    reason = {
        "Priority": "other jobs have priority",
        "Resources": "waiting for free resources",
        "QOSMaxGRESPerUser": "your QOS GPU limit is reached",
        "ReqNodeNotAvail": "requested nodes are not available",
        "PartitionTimeLimit": "the time limit exceeds the partition's",
    }.get(info.reason, "")
    if info.reason in ("None", "(null)", ""):  # just queued: the scheduler has not looked at it yet
        text = f"Job {info.job_id} pending (queued, waiting for the scheduler)"
    else:
        text = f"Job {info.job_id} pending ({info.reason}{': ' + reason if reason else ''})"
    if start_time:
        text += f", expected start {start_time.replace('T', ' ')}"
    return text + f", waiting {int(waited)} s"


def output_tail(path: str, lines: int = 5) -> str:
    """The last lines of a job's output file, to show why it failed (where the hub can read it)."""
    try:
        with open(path, errors="replace") as handle:
            tail = handle.read()[-4000:].strip().splitlines()[-lines:]
    except OSError:
        return f"See {path}."
    return f"Last lines of {path}: " + " | ".join(tail) if tail else f"{path} is empty."
