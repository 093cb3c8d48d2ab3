"""Human-readable formatting helpers shared by the terminal and notebook views."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable

_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def format_bytes(n: int | None, none: str = "no limit") -> str:
    """Format a byte count with binary units, e.g. 4294967296 -> "4.0 GiB".

    ``None`` (no known limit) is shown as *none*.
    """
    if n is None:
        return none
    if n < 0:
        raise ValueError(f"byte count must be >= 0, got {n}")
    if n < 1024:
        return f"{n} B"
    value = float(n)
    unit = 0
    while value >= 1024 and unit < len(_BYTE_UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{value:.1f} {_BYTE_UNITS[unit]}"


def format_cpu_ids(ids: Iterable[int]) -> str:
    """Compress CPU ids into the kernel's list syntax, e.g. [0, 1, 2, 3, 6] -> "0-3,6".

    This is the same notation as ``taskset -c`` and ``/sys/.../cpuset.cpus``.
    """
    sorted_ids = sorted(set(ids))
    if not sorted_ids:
        return ""
    parts: list[str] = []
    start = prev = sorted_ids[0]
    for cpu in sorted_ids[1:]:
        if cpu == prev + 1:
            prev = cpu
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = cpu
    parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(parts)


def format_timedelta(td: _dt.timedelta | None, none: str = "none") -> str:
    """Format a duration the way SLURM prints times: "H:MM:SS" or "D-HH:MM:SS".

    Fractions of a second are dropped; ``None`` is shown as *none*.
    """
    if td is None:
        return none
    total = int(td.total_seconds())
    sign = "-" if total < 0 else ""
    total = abs(total)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{sign}{days}-{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{sign}{hours}:{minutes:02d}:{seconds:02d}"
