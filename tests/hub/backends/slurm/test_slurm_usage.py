"""Issue 31, item 3, on the real dev cluster: a SLURM server's history is SLURM's account of its job. A short server job
runs and stops; its history row takes sacct's Start, End and AllocCPUS for that job id, ``hpclab-hub usage`` gives
the core-hours sacct's numbers make (and settles a row the hub had not), and while it ran the admins' page showed
its job id and SLURM's node."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time

import pytest
from bs4 import BeautifulSoup

from hpclab_hub.backends.slurm.accounting import parse_sacct
from support.hubtools import HUB_CLI, Hub, login, stop_server
from support.slurmtools import jobs, slurm_argv, slurm_hub_yaml, started_slurm_hub, wait_for

pytestmark = pytest.mark.hub


def test_sacct_lines_are_read_for_the_job_and_only_once_it_has_ended():
    text = "4711|1765000000|1765000090|2|billing=2,cpu=2,gres/gpu=1,mem=1G,node=1|CANCELLED by 0\n4711.batch|1|2|2||CANCELLED\n"
    usage = parse_sacct(text, "4711")
    assert usage is not None and (usage.started, usage.ended, usage.cpus, usage.gpus) == (1765000000, 1765000090, 2, 1)
    assert usage.state == "CANCELLED"
    assert parse_sacct("4711|1765000000|Unknown|2|cpu=2|RUNNING\n", "4711") is None  # no end yet
    assert parse_sacct("4712|1765000000|1765000090|2|cpu=2|COMPLETED\n", "4711") is None  # another job


def _sacct(conf: str, job_id: str) -> list[str]:
    argv = slurm_argv(conf, "sacct", "-X", "-n", "-P", "-j", job_id, "--format=JobID,Start,End,AllocCPUS")
    env = dict(os.environ, SLURM_CONF=conf, SLURM_TIME_FORMAT="%s")
    return subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout.strip().split("|")


@pytest.mark.timeout(300)
def test_the_usage_of_a_slurm_server_is_sacct_s(slurm_cluster, tmp_path):
    hub = Hub(tmp_path, slurm_hub_yaml(tmp_path / "state", slurm_cluster))
    with started_slurm_hub(hub, slurm_cluster):
        alice, admin = login(hub, "alice"), login(hub, "admin")
        assert alice.post_spawn("alice", "cpu").status_code == 302
        alice.wait_ready("alice", timeout=120)
        (job,) = [j for j in jobs(slurm_cluster) if j["user"] == "alice" and j["state"] == "RUNNING"]
        node = subprocess.run(
            slurm_argv(slurm_cluster, "squeue", "-h", "-j", job["id"], "-o", "%N"),
            env=dict(os.environ, SLURM_CONF=slurm_cluster),
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        page = BeautifulSoup(admin.http.get(f"{hub.url}/hub/hpclab/admin").text, "html.parser")
        (row,) = page.select(".hpclab-admin-server")
        assert row.select_one(".a-backend").text == "cluster (slurm)" and row.select_one(".a-job").text == job["id"]
        assert (
            row.select_one(".a-node").text in (node, f"{node} (127.0.0.1)")
            and " left (ends " in row.select_one(".a-time-left").text
        )
        time.sleep(5)
        stop_server(alice, "alice")

        database = f"{hub.config['hub']['data_dir']}/jupyterhub.sqlite"

        def settled():
            with sqlite3.connect(database) as db:
                return (
                    db.execute(
                        "SELECT job_id, started, ended, cpus, accounted FROM hpclab_sessions WHERE user = 'alice'"
                    ).fetchall()[-1:]
                    if db.execute("SELECT 1 FROM hpclab_sessions WHERE accounted = 'sacct'").fetchone()
                    else None
                )

        ((job_id, started, ended, cpus, accounted),) = wait_for(settled, 120, f"no row settled from sacct:\n{hub.log_tail()}", 1)
        sacct_id, sacct_start, sacct_end, sacct_cpus = _sacct(slurm_cluster, job["id"])
        assert (job_id, accounted) == (job["id"], "sacct") and sacct_id == job["id"]
        assert (started, ended, cpus) == (float(sacct_start), float(sacct_end), int(sacct_cpus))
        assert float(sacct_end) - float(sacct_start) >= 5  # the job's life, not a hub-side instant

        # a row the hub did not settle (it stopped first, sacct was down) is settled by the report
        with sqlite3.connect(database) as db:
            db.execute("UPDATE hpclab_sessions SET accounted = '', started = started + 100, cpus = 99 WHERE user = 'alice'")
        out = subprocess.run(
            [str(HUB_CLI), "usage", "--config", str(hub.config_path), "--by", "user", "--format", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (mine,) = [r for r in json.loads(out)["rows"] if r["user"] == "alice"]
        expected = (float(sacct_end) - float(sacct_start)) / 3600 * int(sacct_cpus)
        assert mine["sessions"] == 1 and mine["core_hours"] == pytest.approx(round(expected, 4), abs=1e-4), (mine, expected)
        with sqlite3.connect(database) as db:
            again = db.execute("SELECT started, cpus, accounted FROM hpclab_sessions WHERE user = 'alice'").fetchall()
        assert again == [(float(sacct_start), int(sacct_cpus), "sacct")]
