"""hpclab.slurm, the one SLURM core, without SLURM: job spec → #SBATCH lines, job states, units, the commands'
argument lists (parse_slurm_time/parse_slurm_mem_mb are in test_session.py; the hub's profile → script in
tests/hub/backends/slurm/test_slurm_units.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from hpclab import slurm
from hpclab.slurm import (ACTIVE_STATES, FINISHED_STATES, JobSpec, base_state, duration_seconds, format_memory,
                          format_time, is_finished, memory_bytes, parse_time, sbatch_memory)
from hpclab.slurm import commands

KiB, MiB, GiB, TiB = 2**10, 2**20, 2**30, 2**40


# -- JobSpec → #SBATCH lines ---------------------------------------------------

def test_minimal_spec_writes_only_the_job_name():
    assert JobSpec(job_name="j").directives() == ["--job-name=j"]
    assert JobSpec(job_name="j").header() == ["#!/bin/bash", "#SBATCH --job-name=j"]


def test_every_field_in_its_fixed_order():
    spec = JobSpec(
        job_name="train", output="/o/%j.out", chdir="/w", comment="hpclab:hub:gpu", nodes=2, ntasks=8,
        ntasks_per_node=4, cpus_per_task=8, array="0-9%2", partition="gpu", account="proj", qos="high",
        reservation="course", mem="64G", gpus=4, gpu_type="a100", time="1-00:00:00", signal="B:USR2@120",
        constraint="a100", extra=("--exclusive", "--requeue"),
    )
    assert spec.directives() == [
        "--job-name=train", "--comment=hpclab:hub:gpu", "--chdir=/w", "--output=/o/%j.out", "--array=0-9%2",
        "--nodes=2", "--ntasks=8", "--ntasks-per-node=4", "--cpus-per-task=8", "--partition=gpu",
        "--account=proj", "--qos=high", "--reservation=course", "--mem=64G", "--gres=gpu:a100:4",
        "--time=1-00:00:00", "--signal=B:USR2@120", "--constraint=a100", "--exclusive", "--requeue",
    ]


@pytest.mark.parametrize(("field", "value"), [("output", ""), ("partition", ""), ("mem", ""), ("time", ""),
                                              ("partition", None), ("mem", None), ("time", None), ("gpus", 0),
                                              ("constraint", "")])
def test_empty_or_unset_fields_are_not_written(field, value):
    assert JobSpec(job_name="j", **{field: value}).directives() == ["--job-name=j"]


@pytest.mark.parametrize(("gpus", "gpu_type", "gres"), [(1, None, "--gres=gpu:1"), (2, "a100", "--gres=gpu:a100:2"),
                                                        (8, "", "--gres=gpu:8")])
def test_gres(gpus, gpu_type, gres):
    assert JobSpec(job_name="j", gpus=gpus, gpu_type=gpu_type).directives()[1:] == [gres]


def test_gpu_type_without_gpus_asks_for_none():
    assert JobSpec(job_name="j", gpu_type="a100").directives() == ["--job-name=j"]


@pytest.mark.parametrize(("mem", "line"), [
    ("64G", "--mem=64G"), ("512M", "--mem=512M"), ("1536M", "--mem=1536M"), ("1.5G", "--mem=1536M"),
    ("4GiB", "--mem=4G"), ("2T", "--mem=2T"), ("4000", "--mem=4000M"),  # a bare number is MiB, as for sbatch
    (64 * GiB, "--mem=64G"), (3 * GiB + 1, "--mem=3G"), (MiB + 5, "--mem=1M"), (100, "--mem=1M"),  # bytes: whole MiB, >= 1M
])
def test_memory_is_written_in_sbatch_syntax(mem, line):
    assert JobSpec(job_name="j", mem=mem).directives()[1:] == [line]


@pytest.mark.parametrize(("time", "line"), [
    ("04:00:00", "--time=04:00:00"), (" 30 ", "--time=30"), ("2-12", "--time=2-12"),  # strings kept (checked)
    (3600, "--time=01:00:00"), (90061, "--time=1-01:01:01"), (dt.timedelta(minutes=90), "--time=01:30:00"),
])
def test_time_is_written_in_slurm_syntax(time, line):
    assert JobSpec(job_name="j", time=time).directives()[1:] == [line]


def test_signal_needs_a_time_limit():
    assert JobSpec(job_name="j", signal="B:USR2@60").directives() == ["--job-name=j"]
    assert JobSpec(job_name="j", time=600, signal="B:USR2@60").directives()[1:] == ["--time=00:10:00",
                                                                                      "--signal=B:USR2@60"]


@pytest.mark.parametrize(("field", "value"), [("mem", "lots"), ("mem", "4X"), ("mem", -1), ("mem", True),
                                              ("time", "4h"), ("time", "1:2:3:4")])
def test_bad_memory_or_time_is_refused_not_written(field, value):
    with pytest.raises(ValueError):
        JobSpec(job_name="j", **{field: value}).directives()


def test_script_quotes_list_commands_and_keeps_strings():
    text = JobSpec(job_name="j", cpus_per_task=2).script(
        ["set -e", ["echo", "two words", "$HOME"], 'echo "$SLURM_ARRAY_TASK_ID"'], shell="#!/bin/bash -l")
    assert text == ("#!/bin/bash -l\n#SBATCH --job-name=j\n#SBATCH --cpus-per-task=2\nset -e\n"
                    "echo 'two words' '$HOME'\necho \"$SLURM_ARRAY_TASK_ID\"\n")


def test_spec_is_frozen():
    spec = JobSpec(job_name="j")
    with pytest.raises(AttributeError):
        spec.job_name = "other"  # type: ignore[misc]


# -- job states ----------------------------------------------------------------

@pytest.mark.parametrize(("state", "base", "finished"), [
    ("CANCELLED by 0", "CANCELLED", True), ("CANCELLED by 1001", "CANCELLED", True), ("COMPLETED", "COMPLETED", True),
    ("RUNNING", "RUNNING", False), ("PENDING", "PENDING", False), ("RUNNING+", "RUNNING", False),
    ("completed", "COMPLETED", True), ("TIMEOUT", "TIMEOUT", True), ("OUT_OF_MEMORY", "OUT_OF_MEMORY", True),
    ("FAILED", "FAILED", True), ("NODE_FAIL", "NODE_FAIL", True), ("COMPLETING", "COMPLETING", False),
    ("  ", "", False), ("", "", False), ("WHATEVER", "WHATEVER", False),
])
def test_base_state_and_is_finished(state, base, finished):
    assert base_state(state) == base
    assert is_finished(state) is finished


def test_active_and_finished_states_do_not_overlap():
    assert not ACTIVE_STATES & FINISHED_STATES
    assert {"PENDING", "RUNNING"} <= ACTIVE_STATES and {"COMPLETED", "CANCELLED", "FAILED"} <= FINISHED_STATES


# -- units: durations ----------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("45", 45 * 60), ("0", 0), ("05:30", 5 * 60 + 30), ("02:03:04", 2 * 3600 + 3 * 60 + 4),
    ("1-00:00:00", 86400), ("1-02:03:04", 86400 + 2 * 3600 + 3 * 60 + 4), ("2-12", 2 * 86400 + 12 * 3600),
    ("2-12:30", 2 * 86400 + 12 * 3600 + 30 * 60), ("100:00:00", 100 * 3600), (" 10 \n", 600),
])
def test_duration_seconds(text, seconds):
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "1:2:3:4", "1-2:3:4:5", "4h", "1.5", "-5", "1-", "-1-00:00", "UNLIMITED",
                                  "01:00:00 extra"])
def test_duration_seconds_refuses_bad_input(text):
    with pytest.raises(ValueError):
        duration_seconds(text)


def test_parse_time_has_no_limit_words_duration_seconds_does_not():
    assert parse_time("NOT_SET") is None and parse_time("infinite") is None
    assert parse_time("90") == dt.timedelta(minutes=90)


@pytest.mark.parametrize(("value", "text"), [
    (0, "00:00:00"), (59, "00:00:59"), (3600, "01:00:00"), (86399, "23:59:59"), (86400, "1-00:00:00"),
    (10 * 86400 + 5, "10-00:00:05"), (90.9, "00:01:30"), (dt.timedelta(hours=25), "1-01:00:00"),
    ("1-02:03:04", "1-02:03:04"), (" 30:00 ", "30:00"),
])
def test_format_time(value, text):
    assert format_time(value) == text


@pytest.mark.parametrize("seconds", [0, 1, 59, 3600, 86399, 86400, 86401, 7 * 86400 + 3661])
def test_format_time_round_trips(seconds):
    assert duration_seconds(format_time(seconds)) == seconds


def test_format_time_checks_strings():
    with pytest.raises(ValueError):
        format_time("soon")


# -- units: memory -------------------------------------------------------------

@pytest.mark.parametrize(("value", "size"), [
    ("512K", 512 * KiB), ("512M", 512 * MiB), ("4G", 4 * GiB), ("2T", 2 * TiB), ("4g", 4 * GiB),
    ("1.5G", 3 * GiB // 2), ("4GiB", 4 * GiB), ("4GB", 4 * GiB), ("4 G", 4 * GiB), (" 8M ", 8 * MiB),
    ("1000", 1000), (4096, 4096), (0, 0),
])
def test_memory_bytes(value, size):
    assert memory_bytes(value) == size


def test_memory_bytes_default_unit_is_for_bare_numbers_only():
    assert memory_bytes("100", default_unit="M") == 100 * MiB
    assert memory_bytes("1G", default_unit="M") == GiB
    assert memory_bytes(100, default_unit="M") == 100  # an int is always bytes


@pytest.mark.parametrize("value", ["", "lots", "4X", "4P", "G", "-1G", "4 GB extra", "1e9", -1, True, None, 4.0])
def test_memory_bytes_refuses_bad_input(value):
    with pytest.raises(ValueError):
        memory_bytes(value)


@pytest.mark.parametrize(("size", "text"), [
    (4 * GiB, "4G"), (1536 * MiB, "1536M"), (2 * TiB, "2T"), (3 * KiB, "3K"), (1000, "1000"), (GiB + 1, str(GiB + 1)),
])
def test_format_memory(size, text):
    assert format_memory(size) == text


@pytest.mark.parametrize(("value", "text"), [("16G", "16G"), ("200", "200M"), (10 * MiB + 1, "10M"), (1, "1M"),
                                             ("1.5G", "1536M")])
def test_sbatch_memory(value, text):
    assert sbatch_memory(value) == text


# -- commands: the argument lists (SLURM itself is never called here) -----------

@pytest.fixture
def calls(monkeypatch):
    """Each command's argv and environment, with ``_run`` answering what sbatch/squeue would print."""
    seen: list[tuple[list[str], object]] = []
    answers = {"sbatch": "4242;cluster\n", "squeue": "4242 RUNNING\n4243_1 COMPLETED\nbad\n", "scancel": ""}

    def fake_run(argv, env=None, timeout=60, stdin=None):
        seen.append((list(argv), env))
        return answers.get(argv[0].rsplit("/", 1)[-1], "")

    monkeypatch.setattr(commands, "_run", fake_run)
    return seen


def test_submit_is_sbatch_parsable_with_an_optional_dependency(calls):
    assert slurm.submit("/x/a.sbatch") == "4242"
    assert slurm.submit("/x/b.sbatch", dependency="afterany:41", env={"SLURM_CONF": "/c"}, sbatch="/opt/sbatch") == "4242"
    assert calls == [(["sbatch", "--parsable", "/x/a.sbatch"], None),
                     (["/opt/sbatch", "--parsable", "--dependency=afterany:41", "/x/b.sbatch"], {"SLURM_CONF": "/c"})]


def test_cancel_is_scancel_with_every_job(calls):
    slurm.cancel(["12", "13_4"])
    assert calls == [(["scancel", "12", "13_4"], None)]


def test_job_states_asks_squeue_for_all_states_and_skips_odd_lines(calls):
    assert slurm.job_states(["4242", "4243"]) == {"4242": "RUNNING", "4243_1": "COMPLETED"}
    assert calls == [(["squeue", "-h", "-t", "all", "-j", "4242,4243", "-o", "%i %T"], None)]


def test_missing_slurm_client_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(slurm.SlurmCommandError, match="sbatch not found"):
        slurm.submit("/x/a.sbatch", env={"PATH": "/nonexistent"})


# -- dask's SLURM workers read memory and wall time through the core -------------

@pytest.mark.parametrize(("memory", "walltime", "mem_line", "time_line"), [
    ("2GiB", "01:00:00", "#SBATCH --mem=2G", "#SBATCH -t 01:00:00"),
    ("4G", 5400, "#SBATCH --mem=4G", "#SBATCH -t 01:30:00"),
    ("500", "1-00:00:00", "#SBATCH --mem=500M", "#SBATCH -t 1-00:00:00"),  # bare number: MiB (dask alone: 500 bytes)
])
def test_dask_slurm_workers_use_the_cores_units(monkeypatch, memory, walltime, mem_line, time_line):
    pytest.importorskip("dask_jobqueue")
    from dask_jobqueue.slurm import SLURMJob

    from hpclab import dask_cluster

    # what slurm_cluster hands SLURMCluster, written out as SLURMJob writes each worker's script (no sbatch here)
    job = dask_cluster.slurm_cluster_options(cores=3, memory=memory, walltime=walltime, queue="cpu", python="/py")
    assert job["memory"] == memory_bytes(memory, default_unit="M")
    script = SLURMJob(scheduler="tcp://127.0.0.1:8786", name="w", **job).job_script().splitlines()
    assert mem_line in script and time_line in script and "#SBATCH --cpus-per-task=3" in script
    # a worker whose scheduler is gone (its process SIGKILLed) exits instead of holding the job to its wall time
    assert f"--death-timeout {dask_cluster.WORKER_DEATH_TIMEOUT}" in script[-1]


@pytest.mark.parametrize(("memory", "walltime"), [("lots", "01:00:00"), ("2GiB", "1h")])
def test_dask_slurm_workers_refuse_bad_units_before_starting(monkeypatch, memory, walltime):
    pytest.importorskip("dask_jobqueue")
    from hpclab import dask_cluster

    monkeypatch.setattr(dask_cluster, "_cluster_class", lambda: pytest.fail("cluster started"))
    with pytest.raises(ValueError):
        dask_cluster.slurm_cluster(memory=memory, walltime=walltime)
