"""SLURM's units, parsed and written once for the whole project: durations and memory sizes."""

from __future__ import annotations

import datetime as _dt
import re

#: Values SLURM prints instead of a time when there is no (known) limit.
NO_LIMIT_WORDS = frozenset({"UNLIMITED", "NOT_SET", "INFINITE", "N/A", "NONE", "INVALID"})

_DURATION = re.compile(r"^(?:(?P<days>\d+)-)?(?P<clock>\d+(?::\d+){0,2})$")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?\s*$", re.IGNORECASE)
_FACTORS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def duration_seconds(text: str) -> int:
    """Seconds in a SLURM duration: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``.

    Raises ValueError for anything else (including SLURM's no-limit words; see ``parse_time``).
    """
    match = _DURATION.match(str(text).strip())
    if match is None:
        raise ValueError(f"not a SLURM time: {text!r}")
    fields = [int(x) for x in match["clock"].split(":")]
    if match["days"] is not None:  # with a day part the fields are hours[:minutes[:seconds]]
        hours, minutes, seconds = fields + [0] * (3 - len(fields))
        return int(match["days"]) * 86400 + hours * 3600 + minutes * 60 + seconds
    if len(fields) == 1:
        return fields[0] * 60
    if len(fields) == 2:
        return fields[0] * 60 + fields[1]
    return fields[0] * 3600 + fields[1] * 60 + fields[2]


def parse_time(text: str) -> _dt.timedelta | None:
    """A SLURM duration as a timedelta; None for "UNLIMITED", "NOT_SET" and the other no-limit words."""
    if str(text).strip().upper() in NO_LIMIT_WORDS:
        return None
    return _dt.timedelta(seconds=duration_seconds(text))


def format_time(value: int | float | _dt.timedelta | str) -> str:
    """SLURM's ``D-HH:MM:SS`` (``HH:MM:SS`` under a day) for seconds or a timedelta; a string is checked and kept."""
    if isinstance(value, str):
        duration_seconds(value)
        return value.strip()
    seconds = int(value.total_seconds() if isinstance(value, _dt.timedelta) else value)
    days, rest = divmod(seconds, 86400)
    clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{clock}" if days else clock


def memory_bytes(value: int | str, default_unit: str = "") -> int:
    """Bytes from an int (bytes) or a size such as ``512M``, ``4G``, ``1.5GiB`` (binary units, as SLURM's).

    A bare number is in ``default_unit``: "" (bytes) for what admins write in YAML, "M" for what
    SLURM itself prints (SLURM_MEM_PER_NODE, sbatch's --mem).
    """
    if isinstance(value, bool):
        raise ValueError("must be a size such as 4G or 512M, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must be ≥ 0")
        return value
    match = _MEMORY.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"must be a size such as 4G or 512M, got {value!r}")
    unit = (match.group(2) or default_unit).upper()
    return int(float(match.group(1)) * _FACTORS[unit])


def format_memory(size: int) -> str:
    """Shortest exact binary form (``4G``, ``1536M``) for a byte count, as SLURM writes it."""
    for unit in ("T", "G", "M", "K"):
        factor = _FACTORS[unit]
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def sbatch_memory(value: int | str) -> str:
    """A memory amount for ``--mem``: bytes become whole MiB (at least 1M); ``16G`` stays; a bare number is MiB."""
    size = memory_bytes(value, default_unit="M")
    return format_memory(max(2**20, size - size % 2**20))
