"""Tests for the human formatting helpers in hpclab.formatting."""

import datetime as dt

import pytest

from hpclab.formatting import format_bytes, format_cpu_ids, format_timedelta
from hpclab.slurm import parse_slurm_time


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (300 * 2**20, "300.0 MiB"),
        (4 * 2**30, "4.0 GiB"),
        (3 * 2**40, "3.0 TiB"),
    ],
)
def test_format_bytes(n, text):
    assert format_bytes(n) == text


def test_format_bytes_none_and_negative():
    assert format_bytes(None) == "no limit"
    assert format_bytes(None, none="-") == "-"
    with pytest.raises(ValueError):
        format_bytes(-1)


@pytest.mark.parametrize(
    ("ids", "text"),
    [
        ([], ""),
        ([5], "5"),
        ([0, 1], "0-1"),
        ([0, 1, 2, 3, 6], "0-3,6"),
        ([6, 3, 2, 1, 0, 0], "0-3,6"),
        ([0, 2, 4, 5, 6, 9, 10], "0,2,4-6,9-10"),
    ],
)
def test_format_cpu_ids(ids, text):
    assert format_cpu_ids(ids) == text


@pytest.mark.parametrize(
    ("td", "text"),
    [
        (None, "none"),
        (dt.timedelta(0), "0:00:00"),
        (dt.timedelta(seconds=59.9), "0:00:59"),
        (dt.timedelta(hours=2, minutes=3, seconds=4), "2:03:04"),
        (dt.timedelta(days=1, hours=2, minutes=3, seconds=4), "1-02:03:04"),
    ],
)
def test_format_timedelta(td, text):
    assert format_timedelta(td) == text


@pytest.mark.parametrize("seconds", [0, 59, 3600, 86399, 86400, 93784, 14 * 86400 + 1])
def test_format_timedelta_round_trips_through_slurm_parser(seconds):
    td = dt.timedelta(seconds=seconds)
    assert parse_slurm_time(format_timedelta(td)) == td
