"""Parse the human units admins write in YAML: memory sizes and SLURM-style durations."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?\s*$", re.IGNORECASE)
_FACTORS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_memory(value: Any) -> int:
    """Bytes from an int (bytes) or a string like ``512M``/``4G``/``1.5GiB`` (binary units, as SLURM)."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 4G or 512M, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must be ≥ 0")
        return value
    if isinstance(value, str):
        match = _MEMORY.match(value)
        if match:
            number, unit = float(match.group(1)), match.group(2).upper()
            return int(number * _FACTORS[unit])
    raise ValueError(f"must be a size such as 4G or 512M, got {value!r}")


_DURATION = re.compile(
    r"^(?:(?P<days>\d+)-(?P<d_h>\d+)(?::(?P<d_m>\d+)(?::(?P<d_s>\d+))?)?"
    r"|(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)"
    r"|(?P<mm>\d+):(?P<ss>\d+)"
    r"|(?P<minutes>\d+))$"
)


def parse_duration(value: Any) -> int:
    """Seconds from SLURM's time formats (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) or an int of minutes."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 01:30:00 or 2-00:00:00")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("must be > 0")
        return value * 60
    if isinstance(value, str):
        m = _DURATION.match(value.strip())
        if m:
            g = {k: int(v) for k, v in m.groupdict().items() if v is not None}
            if "days" in g:
                seconds = g["days"] * 86400 + g["d_h"] * 3600 + g.get("d_m", 0) * 60 + g.get("d_s", 0)
            elif "h" in g:
                seconds = g["h"] * 3600 + g["m"] * 60 + g["s"]
            elif "mm" in g:
                seconds = g["mm"] * 60 + g["ss"]
            else:
                seconds = g["minutes"] * 60
            if seconds <= 0:
                raise ValueError("must be > 0")
            return seconds
    raise ValueError(f"must be a duration such as 01:30:00, 90 (minutes) or 2-00:00:00, got {value!r}")


def format_duration(seconds: int) -> str:
    """SLURM's ``D-HH:MM:SS`` (or ``HH:MM:SS`` under a day) for a number of seconds."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def format_memory(size: int) -> str:
    """Shortest exact binary form (``4G``, ``1536M``) for a byte count, as SLURM writes it."""
    for unit in ("T", "G", "M", "K"):
        factor = _FACTORS[unit]
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


MemoryBytes = Annotated[
    int,
    BeforeValidator(parse_memory),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^\d+(\.\d+)?\s*[KMGTkmgt]?(i?[Bb])?$"}],
         "description": "bytes, or a size with a binary unit: 512M, 4G, 1.5GiB"}
    ),
    PlainSerializer(format_memory, return_type=str),
]

DurationSeconds = Annotated[
    int,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "exclusiveMinimum": 0}, {"type": "string"}],
         "description": "minutes as an integer, or SLURM's MM:SS, HH:MM:SS, D-HH[:MM[:SS]]"}
    ),
    PlainSerializer(format_duration, return_type=str),
]
