"""Units admins write in the deploy YAML: memory sizes (binary, as SLURM) and SLURM durations."""

from __future__ import annotations

import pytest

from hpclab_hub.config.units import format_duration, format_memory, parse_duration, parse_memory

KiB, MiB, GiB, TiB = 2**10, 2**20, 2**30, 2**40


# --- memory -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512M", 512 * MiB),
        ("4G", 4 * GiB),
        ("1.5GiB", 3 * GiB // 2),
        ("4GB", 4 * GiB),
        ("4g", 4 * GiB),
        ("4 G", 4 * GiB),
        ("64K", 64 * KiB),
        ("2T", 2 * TiB),
        ("1024", 1024),
        (" 8G ", 8 * GiB),
    ],
)
def test_memory_with_a_binary_unit_is_bytes(text, size):
    assert parse_memory(text) == size


@pytest.mark.parametrize("size", [0, 1, 1000, 4 * GiB])
def test_memory_as_a_plain_integer_is_bytes(size):
    assert parse_memory(size) == size


@pytest.mark.parametrize("value", ["lots", "", "4X", "G", "four gigs", "-1G", "1.5.2G", 1.5, None, [4]])
def test_memory_that_is_not_a_size_is_rejected(value):
    with pytest.raises(ValueError, match="must be a size such as 4G or 512M"):
        parse_memory(value)


def test_negative_memory_is_rejected():
    with pytest.raises(ValueError, match="must be ≥ 0"):
        parse_memory(-1)


@pytest.mark.parametrize("value", [True, False])
def test_memory_as_a_boolean_is_rejected(value):
    with pytest.raises(ValueError, match="not a boolean"):
        parse_memory(value)


@pytest.mark.parametrize(
    ("size", "text"),
    [(4 * GiB, "4G"), (1536 * MiB, "1536M"), (3 * GiB // 2, "1536M"), (512 * MiB, "512M"), (TiB, "1T"), (KiB, "1K"), (1000, "1000"), (0, "0")],
)
def test_memory_is_written_in_its_shortest_exact_unit(size, text):
    assert format_memory(size) == text


@pytest.mark.parametrize("size", [0, 1, 1000, KiB, 1536 * MiB, 4 * GiB, 3 * TiB, 5 * GiB + 1])
def test_memory_survives_format_then_parse(size):
    assert parse_memory(format_memory(size)) == size


@pytest.mark.parametrize("text", ["512M", "4G", "1T", "64K"])
def test_memory_text_survives_parse_then_format(text):
    assert format_memory(parse_memory(text)) == text


# --- durations ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 5400),  # an integer is minutes, as in SLURM's --time=90
        ("90", 5400),
        ("30:00", 1800),  # MM:SS
        ("01:30:00", 5400),  # HH:MM:SS
        ("2-00:00:00", 2 * 86400),  # D-HH:MM:SS
        ("1-12", 36 * 3600),  # D-HH
        ("1-12:30", 36 * 3600 + 1800),  # D-HH:MM
        ("0-00:00:30", 30),
        (" 01:00:00 ", 3600),
    ],
)
def test_duration_in_slurm_formats_is_seconds(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", [0, "0", "00:00", "00:00:00", "0-00:00:00", -5])
def test_zero_or_negative_duration_is_rejected(value):
    with pytest.raises(ValueError, match="must be > 0"):
        parse_duration(value)


@pytest.mark.parametrize("value", ["abc", "", "1:2:3:4", "1-", "01:30:", "-5", "1h", 1.5, None])
def test_duration_that_is_not_slurm_time_is_rejected(value):
    with pytest.raises(ValueError, match="must be a duration such as 01:30:00"):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, False])
def test_duration_as_a_boolean_is_rejected(value):
    with pytest.raises(ValueError, match="must be a duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(30, "00:00:30"), (1800, "00:30:00"), (5400, "01:30:00"), (86399, "23:59:59"), (86400, "1-00:00:00"), (2 * 86400, "2-00:00:00"), (90061, "1-01:01:01")],
)
def test_duration_is_written_as_slurm_time(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [1, 59, 60, 1800, 5400, 86400, 129600, 90061, 30 * 86400])
def test_duration_survives_format_then_parse(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(("text", "canonical"), [("1-12", "1-12:00:00"), ("30:00", "00:30:00"), ("01:30:00", "01:30:00"), ("90", "01:30:00")])
def test_duration_text_is_normalised_by_parse_then_format(text, canonical):
    assert format_duration(parse_duration(text)) == canonical
