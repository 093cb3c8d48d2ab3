"""hpclab.dask_cluster.slurm_cluster against the real dev cluster: its SLURM jobs last no longer than it does.

A user pays for the core-hours of every worker job, so the cluster cancels its jobs and submits no more once
it is closed, once its ``with`` block is left, when the interpreter exits without a close, and on SIGTERM.
Each test names its jobs (``job_name``) and reads squeue for that name only: what is left, and what was
submitted after the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from support.slurmtools import slurm, wait_for

pytest.importorskip("dask_jobqueue")


def _named(conf: str, name: str) -> list[dict[str, str]]:
    """Every job called ``name`` that SLURM still lists (any state): id and state."""
    out = slurm(conf, "squeue", "-h", "-t", "all", "-n", name, "-o", "%i|%T")
    return [dict(zip(("id", "state"), line.split("|"))) for line in out.splitlines()]


def _active(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [r for r in rows if r["state"] in ("PENDING", "RUNNING", "CONFIGURING", "SUSPENDED", "REQUEUED")]


def _assert_ended_and_none_submitted(conf: str, name: str, submitted: set[str], quiet: float = 5.0) -> None:
    """The jobs ``submitted`` end (cancelled), and for ``quiet`` seconds more no job of this name appears."""
    wait_for(lambda: not _active(_named(conf, name)), 20, f"jobs of {name} still queued or running: {_named(conf, name)}")
    time.sleep(quiet)  # anything that still submits (dask's loop, a re-scale) would show up by now
    rows = _named(conf, name)
    assert {r["id"] for r in rows} == submitted, f"jobs submitted after the end: {rows} (had {sorted(submitted)})"
    assert not _active(rows), rows
    assert all(r["state"] in ("CANCELLED", "COMPLETED", "COMPLETING") for r in rows), rows


def _options(tmp_path, name: str) -> dict:
    return dict(jobs=2, cores=1, memory="1GiB", walltime="00:10:00", queue="cpu", job_name=name,
                log_directory=str(tmp_path), local_directory=str(tmp_path), scheduler_options={"host": "127.0.0.1"})


def _submitted(conf: str, name: str, n: int = 2) -> set[str]:
    rows = wait_for(lambda: (r := _named(conf, name)) and len(r) >= n and r, 60, f"{n} jobs of {name} not submitted")
    return {r["id"] for r in rows}


@pytest.fixture
def conf(slurm_cluster, monkeypatch) -> str:
    monkeypatch.setenv("SLURM_CONF", slurm_cluster)
    return slurm_cluster


def test_slurm_cluster_close_cancels_its_jobs_and_submits_no_more(conf, tmp_path):
    from hpclab.dask_cluster import slurm_cluster

    name = f"hpclab-t-{uuid.uuid4().hex[:8]}"
    cluster = slurm_cluster(**_options(tmp_path, name))
    try:
        submitted = _submitted(conf, name)
    finally:
        cluster.close()
    _assert_ended_and_none_submitted(conf, name, submitted)
    for scale in (lambda: cluster.scale(jobs=2), lambda: cluster.scale(2), lambda: cluster.adapt(maximum_jobs=2)):
        with pytest.raises(RuntimeError, match="closed: it submits no more worker jobs"):
            scale()
    assert {r["id"] for r in _named(conf, name)} == submitted
    cluster.close()  # a second close is harmless


def test_slurm_cluster_leaving_its_with_block_cancels_its_jobs(conf, tmp_path):
    from hpclab.dask_cluster import slurm_cluster

    name = f"hpclab-t-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ZeroDivisionError):  # left by an exception, as a failing sweep would leave it
        with slurm_cluster(**_options(tmp_path, name)):
            submitted = _submitted(conf, name)
            1 / 0
    _assert_ended_and_none_submitted(conf, name, submitted)


SCRIPT = textwrap.dedent("""
    import sys, time
    from hpclab.dask_cluster import slurm_cluster

    name, folder, how = sys.argv[1:4]
    cluster = slurm_cluster(jobs=2, cores=1, memory="1GiB", walltime="00:10:00", queue="cpu", job_name=name,
                            log_directory=folder, local_directory=folder, scheduler_options={"host": "127.0.0.1"})
    while len(cluster._submissions.ids) < 2:
        time.sleep(0.1)
    print("submitted", flush=True)
    if how == "exit":
        del cluster  # dropped without close(): the interpreter's exit still cancels the jobs
        sys.exit(0)
    time.sleep(600)  # waiting for SIGTERM
""")


def _run_script(conf: str, tmp_path, name: str, how: str) -> subprocess.Popen:
    script = tmp_path / "cluster_script.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), name, str(tmp_path), how], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, SLURM_CONF=conf))
    line = proc.stdout.readline().strip()
    if line != "submitted":
        proc.kill()
        pytest.fail(f"script did not submit: {line!r} {proc.communicate()[1]}")
    return proc


def test_slurm_cluster_jobs_end_when_the_interpreter_exits_without_close(conf, tmp_path):
    name = f"hpclab-t-{uuid.uuid4().hex[:8]}"
    proc = _run_script(conf, tmp_path, name, "exit")
    assert proc.wait(60) == 0, proc.stderr.read()
    submitted = {r["id"] for r in _named(conf, name)}
    assert len(submitted) == 2
    _assert_ended_and_none_submitted(conf, name, submitted)


def test_slurm_cluster_jobs_end_on_sigterm_and_the_process_still_dies_of_it(conf, tmp_path):
    name = f"hpclab-t-{uuid.uuid4().hex[:8]}"
    proc = _run_script(conf, tmp_path, name, "sigterm")
    submitted = _submitted(conf, name)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == -signal.SIGTERM, proc.stderr.read()  # a shell sees 143, as before
    _assert_ended_and_none_submitted(conf, name, submitted)
