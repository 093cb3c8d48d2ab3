"""The hub's SLURM parsers on what Slurm 22.05 (bookworm), 24.11 (trixie) and 26.05 (sid) really printed.

tests/hub/backends/slurm/data/<release>/ was recorded by tests/hub/backends/slurm/record_outputs.py on the dev cluster of each release
(deploy/slurm/dev-cluster with HPCLAB_SLURM_RELEASE, GPUs typed a100): bob's job runs on one of the two GPUs
with 2 of the 8 cores, alice's asks for both GPUs and pends (Resources); a reservation `course` holds one core.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from hpclab.slurm import parse_slurm_time
from hpclab.slurm.commands import parse_job_line
from hpclab_hub.backends.slurm.availability import parse_qos_max_wall
from hpclab_hub.backends.slurm.errors import SlurmError
from hpclab_hub.backends.slurm.live_check import _node_capacity
from hpclab_hub.backends.slurm.outputs import (
    parse_gpu_types,
    parse_partition_lines,
    parse_reservations,
    parse_sinfo_json,
    parse_squeue,
    parse_squeue_json,
    parse_start_times,
    parse_test_only,
    reserved_cores,
    sinfo_groups,
)

DATA = Path(__file__).parent / "data"
RELEASES = {"bookworm": "22.05", "trixie": "24.11", "sid": "26.05"}


def read(release: str, name: str) -> str:
    return (DATA / release / name).read_text()


def read_json(release: str, name: str) -> dict[str, Any]:
    return json.loads(read(release, name))


def recorded_jobs(release: str) -> dict[str, str]:
    return dict(line.split("=") for line in read(release, "jobs.txt").split())


@pytest.mark.parametrize("release", RELEASES)
def test_the_recording_is_of_the_release_it_is_named_after(release):
    assert read(release, "version.txt").strip().startswith(f"slurm-wlm {RELEASES[release]}.")


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("name", ["sinfo.json", "sinfo-N.json"])
def test_sinfo_json_gives_each_partitions_free_cores_gpus_and_gpu_types(release, name):
    data = read_json(release, name)
    partitions = parse_sinfo_json(data)
    assert sorted(partitions) == ["cpu", "gpu", "short"]
    for state in partitions.values():  # one node in all three partitions; bob's job holds 2 cores and 1 GPU
        assert (state.nodes, state.cpus_total, state.cpus_free, state.gpus_total, state.gpus_free) == (1, 8, 6, 2, 1)
    assert parse_gpu_types(data) == {"cpu": ["a100"], "gpu": ["a100"], "short": ["a100"]}
    assert _node_capacity(data)["gpu"] == {"cpus": 8, "memory": 16000 * 2**20, "gpus": 2, "gpu_types": {"a100"}}


@pytest.mark.parametrize("release", RELEASES)
def test_a_drained_node_leaves_nothing_free(release):
    """22.05 writes drain as a state flag beside the state ("mixed" + ["DRAIN", ...]); 23.02+ in the state list."""
    partitions = parse_sinfo_json(read_json(release, "sinfo-drained.json"))
    assert {(p.cpus_total, p.cpus_free, p.gpus_total, p.gpus_free) for p in partitions.values()} == {(8, 0, 2, 0)}
    assert all("drain" in group.state for group in sinfo_groups(read_json(release, "sinfo-drained.json")))


def test_the_layout_found_decides_how_sinfo_is_read_not_the_version():
    old, new = read_json("bookworm", "sinfo.json"), read_json("trixie", "sinfo.json")
    assert "nodes" in old and "sinfo" not in old  # openapi v0.0.38: one entry per node, its partitions listed
    assert "sinfo" in new and "nodes" not in new  # data_parser: records per partition; the old reading found none
    assert isinstance(old["nodes"][0]["state"], str) and isinstance(new["sinfo"][0]["node"]["state"], list)
    assert new["meta"]["plugin"]["data_parser"] == "data_parser/v0.0.42"
    assert read_json("sid", "sinfo.json")["meta"]["plugin"]["data_parser"] == "data_parser/v0.0.45"
    # a 26.05 answer with the version fields taken out still reads the same: nothing keys on the version
    stripped = {key: value for key, value in read_json("sid", "sinfo.json").items() if key != "meta"}
    assert parse_sinfo_json(stripped) == parse_sinfo_json(read_json("sid", "sinfo.json"))
    with pytest.raises(ValueError, match="neither 'sinfo' records"):
        parse_sinfo_json({"meta": {}, "errors": []})


@pytest.mark.parametrize("release", RELEASES)
def test_squeue_json_and_the_text_the_queue_reads_agree(release):
    """States: a word in 22.05, a list of flags since 23.02; times: numbers, then {"set", "infinite", "number"}."""
    ids = recorded_jobs(release)
    raw = {str(job["job_id"]): job for job in read_json(release, "squeue.json")["jobs"]}
    as_list = release != "bookworm"
    assert isinstance(raw[ids["pending"]]["job_state"], list) == as_list
    assert isinstance(raw[ids["pending"]]["start_time"], dict) == as_list
    from_json = parse_squeue_json(read_json(release, "squeue.json"))
    from_text = parse_squeue(read(release, "squeue.txt"))
    for job_id in ids.values():
        assert from_json[job_id].info == from_text[job_id]
    assert from_text[ids["running"]].state == "RUNNING" and from_text[ids["running"]].node
    assert (from_text[ids["pending"]].state, from_text[ids["pending"]].reason) == ("PENDING", "Resources")
    assert from_text[ids["pending"]].comment == "hpclab:0123abcd:gpu-1"
    # the expected start: squeue --start's local time is the JSON's epoch
    (start,) = parse_start_times(read(release, "squeue-start.txt")).values()
    assert time.mktime(time.strptime(start, "%Y-%m-%dT%H:%M:%S")) == from_json[ids["pending"]].start
    assert from_json[ids["pending"]].time_limit == 30


@pytest.mark.parametrize("release", RELEASES)
def test_scontrol_partitions_reservations_and_jobs(release):
    settings = parse_partition_lines(read(release, "scontrol-partition.txt"))
    assert {name: (s["MaxTime"], s["State"], s["Default"]) for name, s in settings.items()} == {
        "cpu": ("7-00:00:00", "UP", "YES"), "gpu": ("2-00:00:00", "UP", "NO"), "short": ("01:00:00", "UP", "NO")}
    reservations = read(release, "scontrol-reservation.txt")
    assert parse_reservations(reservations, "alice") == ["course"] and parse_reservations(reservations, "carol") == []
    assert reserved_cores(reservations, settings) == {name: {"course": 1} for name in ("cpu", "gpu", "short")}
    ids = recorded_jobs(release)
    pending = parse_job_line(read(release, "scontrol-job-pending.txt"))
    running = parse_job_line(read(release, "scontrol-job-running.txt"))
    assert (pending["JobId"], pending["JobState"], pending["Reason"]) == (ids["pending"], "PENDING", "Resources")
    assert (running["JobId"], running["JobState"], running["ExitCode"]) == (ids["running"], "RUNNING", "0:0")
    assert pending["Comment"] == "hpclab:0123abcd:gpu-1" and pending["TimeLimit"] == "00:30:00"
    if release == "sid":  # 26.05 adds the whole sbatch line, spaces and all, before the later fields
        assert "SubmitLine=" in read(release, "scontrol-job-pending.txt") and " --wrap sleep 300 " in read(release, "scontrol-job-pending.txt")


@pytest.mark.parametrize("release", RELEASES)
def test_sbatch_test_only_accounting_and_time_left(release):
    start = parse_test_only(read(release, "sbatch-test-only.txt"))
    assert time.strptime(start, "%Y-%m-%dT%H:%M:%S")
    never = read(release, "sbatch-test-only-never.txt")
    assert "allocation failure: Requested node configuration is not available" in never  # the spawner's refusal
    with pytest.raises(SlurmError):
        parse_test_only(never)
    assert parse_qos_max_wall(read(release, "sacctmgr-qos.txt")) == {"debug": 1800}
    assert read(release, "sacctmgr-assoc-alice.txt").split() == ["physics", "teaching"]
    left = parse_slurm_time(read(release, "squeue-time-left.txt").strip())
    assert left is not None and 47 * 3600 < left.total_seconds() <= 48 * 3600  # partition gpu's 2 days, just begun
