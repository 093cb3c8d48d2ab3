"""Parse the human units admins write in YAML: memory sizes and SLURM-style durations."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from hpclab.slurm.units import duration_seconds, format_memory, memory_bytes
from hpclab.slurm.units import format_time as format_duration

__all__ = ["DurationSeconds", "MemoryBytes", "format_duration", "format_memory", "parse_duration", "parse_memory"]


def parse_memory(value: Any) -> int:
    """Bytes from an int (bytes) or a string like ``512M``/``4G``/``1.5GiB`` (binary units, as SLURM)."""
    return memory_bytes(value)


def parse_duration(value: Any) -> int:
    """Seconds from SLURM's time formats (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) or an int of minutes."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"must be a duration such as 01:30:00, 90 (minutes) or 2-00:00:00, got {value!r}")
    try:
        seconds = value * 60 if isinstance(value, int) else duration_seconds(value)
    except ValueError:
        raise ValueError(f"must be a duration such as 01:30:00, 90 (minutes) or 2-00:00:00, got {value!r}") from None
    if seconds <= 0:
        raise ValueError("must be > 0")
    return seconds


MemoryBytes = Annotated[
    int,
    BeforeValidator(parse_memory),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^\d+(\.\d+)?\s*[KMGTkmgt]?(i?[Bb])?$"}],
            "description": "bytes, or a size with a binary unit: 512M, 4G, 1.5GiB",
        }
    ),
    PlainSerializer(format_memory, return_type=str),
]

DurationSeconds = Annotated[
    int,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer", "exclusiveMinimum": 0}, {"type": "string"}],
            "description": "minutes as an integer, or SLURM's MM:SS, HH:MM:SS, D-HH[:MM[:SS]]",
        }
    ),
    PlainSerializer(format_duration, return_type=str),
]
