"""Small SLURM helpers: parse SLURM time strings and ask squeue for time left."""

from __future__ import annotations

import datetime as _dt
import re

#: Values SLURM prints instead of a time when there is no (known) limit.
NO_LIMIT_WORDS = frozenset({"UNLIMITED", "NOT_SET", "INFINITE", "N/A", "NONE", "INVALID"})

_TIME_RE = re.compile(r"^(?:(?P<days>\d+)-)?(?P<clock>\d+(?::\d+){0,2})$")


def parse_slurm_time(text: str) -> _dt.timedelta | None:
    """Parse a SLURM duration ("D-HH:MM:SS", "HH:MM:SS", "MM:SS", ...) into a timedelta.

    Accepts every form squeue/sbatch use: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``,
    ``D-HH:MM`` and ``D-HH:MM:SS``. Returns None for "UNLIMITED", "NOT_SET" and
    similar no-limit words; raises ValueError on anything else.
    """
    s = text.strip()
    if s.upper() in NO_LIMIT_WORDS:
        return None
    m = _TIME_RE.match(s)
    if m is None:
        raise ValueError(f"not a SLURM time: {text!r}")
    fields = [int(x) for x in m["clock"].split(":")]
    if m["days"] is not None:
        # With a day part the fields are hours[:minutes[:seconds]].
        fields += [0] * (3 - len(fields))
        hours, minutes, seconds = fields
        days = int(m["days"])
    else:
        days = 0
        if len(fields) == 1:  # minutes
            hours, minutes, seconds = 0, fields[0], 0
        elif len(fields) == 2:  # minutes:seconds
            hours, (minutes, seconds) = 0, fields
        else:  # hours:minutes:seconds
            hours, minutes, seconds = fields
    return _dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def squeue_time_left(job_id: str, timeout: float = 5.0) -> _dt.timedelta | None:
    """Ask ``squeue -h -j JOB -o %L`` how long the job has left; None on any failure.

    Fails soft (None) when squeue is missing, times out, errors, or prints
    something unparsable, so callers on non-SLURM machines are never hurt.
    """
    import subprocess  # local import keeps ``import hpclab`` light

    try:
        proc = subprocess.run(
            ["squeue", "-h", "-j", str(job_id), "-o", "%L"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    for line in proc.stdout.splitlines():
        if line.strip():
            try:
                return parse_slurm_time(line)
            except ValueError:
                return None
    return None


def parse_slurm_mem_mb(text: str) -> int | None:
    """Convert a SLURM memory value (MB by default, optional K/M/G/T suffix) to bytes.

    SLURM's "MB" are mebibytes. Returns None for 0 (meaning "all memory of the
    node") or an unparsable value.
    """
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)B?\s*", text, flags=re.IGNORECASE)
    if m is None:
        return None
    factor = {"K": 2**10, "": 2**20, "M": 2**20, "G": 2**30, "T": 2**40}[m[2].upper()]
    value = int(m[1]) * factor
    return value or None
