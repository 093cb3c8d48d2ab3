"""Issue 31, item 3, on the real dev cluster: a SLURM server's history is SLURM's account of its job. A short server job
runs and stops; its history row takes sacct's Start, End and AllocCPUS for that job id, ``hpclab-hub usage`` gives
the core-hours sacct's numbers make (and settles a row the hub had not). While it ran, the admins' page showed its
job id, SLURM's node and, under load, the CPU and memory sstat measured; and a start pending in SLURM's queue was in
the line of waiting starts with its job id and SLURM's reason."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import threading
import time

import pytest
from bs4 import BeautifulSoup

from hpclab_hub.backends.slurm.accounting import parse_sacct
from hpclab_hub.backends.slurm.job_use import elapsed_seconds, parse_sstat, sstat_errors
from support.hubtools import HUB_CLI, Hub, login, stop_server
from support.kerneltools import run_in_kernel
from support.slurmtools import jobs, slurm, slurm_argv, slurm_hub_yaml, started_slurm_hub, wait_for

pytestmark = pytest.mark.hub


def test_sacct_lines_are_read_for_the_job_and_only_once_it_has_ended():
    text = "4711|1765000000|1765000090|2|billing=2,cpu=2,gres/gpu=1,mem=1G,node=1|CANCELLED by 0\n4711.batch|1|2|2||CANCELLED\n"
    usage = parse_sacct(text, "4711")
    assert usage is not None and (usage.started, usage.ended, usage.cpus, usage.gpus) == (1765000000, 1765000090, 2, 1)
    assert usage.state == "CANCELLED"
    assert parse_sacct("4711|1765000000|Unknown|2|cpu=2|RUNNING\n", "4711") is None  # no end yet
    assert parse_sacct("4712|1765000000|1765000090|2|cpu=2|COMPLETED\n", "4711") is None  # another job


def test_sstat_lines_add_up_per_job_over_its_steps():
    text = (
        "42.batch|cpu=00:01:05,energy=0,fs/disk=48400,mem=214420K,pages=2,vmem=221348K|300M\n"
        "42.0|cpu=1-00:00:01,mem=1G|1G\n"
        "43.batch|cpu=00:00:00,energy=0,mem=3096K|3096K\n"
    )
    uses = parse_sstat(text, measured_at=7.0)
    assert (uses["42"].cpu_seconds, uses["42"].memory) == (86466, 214420 * 1024 + 2**30)
    assert uses["42"].peak_memory == 300 * 2**20 + 2**30
    assert (uses["43"].cpu_seconds, uses["43"].memory, uses["43"].measured_at) == (0, 3096 * 1024, 7.0)
    assert elapsed_seconds("02:03.500") == 123.5 and parse_sstat("sstat: error: couldn't get steps for job 9\n") == {}
    refused = "sstat: error: slurm_job_step_stat: there was an error with the request to vm rc = Invalid user id\n" \
              "sstat: error: problem getting step_layout for StepId=12.batch: Invalid user id\n"
    assert sstat_errors(refused) == {"": "slurm_job_step_stat: there was an error with the request to vm rc = Invalid user id",
                                     "12": "problem getting step_layout for StepId=12.batch: Invalid user id"}


#: in alice's server: hold 200 MiB (touched, so resident) and keep a core busy for 15 s
LOAD = "data = b'x' * (200 * 2**20)\nimport time\nend = time.time() + 15\nwhile time.time() < end: pass\nprint('done')"


def _server_row(admin, hub):
    page = BeautifulSoup(admin.http.get(f"{hub.url}/hub/hpclab/admin").text, "html.parser")
    (row,) = page.select(".hpclab-admin-server")
    return row, page


def _use(row) -> tuple[float, int, str]:
    """(CPU seconds, memory bytes, the recent-use words) of a server row; zeros where the page shows none yet."""
    seconds, memory = row.select_one(".a-cpu-seconds"), row.select_one(".a-memory")
    recent = row.select_one(".a-use-recent")
    return (float(seconds.text) if seconds else 0.0, int(memory["data-bytes"]) if memory else 0,
            recent.text if recent else (row.select_one(".a-use").get_text(" ", strip=True)))


def _measured_use_and_pending_start(hub, admin, alice, bob, job_id: str) -> None:
    """Alice's server under load shows sstat's CPU and memory; bob's start pending behind a job holding both GPUs
    is in the waiting line with its job id and SLURM's reason."""
    conf = hub.slurm_conf
    load = threading.Thread(target=run_in_kernel, args=(alice, "alice", LOAD, 90))
    load.start()
    try:
        # the kernel started and holds its 200 MiB: the job's memory, as sstat adds it up over the job's processes
        wait_for(lambda: _use(_server_row(admin, hub)[0])[1] > 200 * 2**20, 60,
                 f"no memory above 200 MiB on the admin page: {_use(_server_row(admin, hub)[0])}", interval=1)
        first = _use(_server_row(admin, hub)[0])
        time.sleep(4)
        row, _ = _server_row(admin, hub)
        seconds, memory, recent = _use(row)
        assert seconds > first[0] > 0 and memory > 200 * 2**20, (first, seconds, memory)
        busy = re.fullmatch(r"(\d+\.\d\d) of 1 core over the last (\d+) s", recent)
        assert busy and float(busy[1]) > 0 and int(busy[2]) >= 3, recent
        assert re.fullmatch(r"\d+\.\d\d of 1 core since start", row.select_one(".a-use-life").text)
        held = row.select_one(".a-memory").text
        assert re.fullmatch(r"[\d.]+ [MG]iB \(peak [\d.]+ [MG]iB\) of 1.00 GiB", held), held
    finally:
        load.join(timeout=90)

    blocker = slurm(conf, "sbatch", "--parsable", "-p", "gpu", "--gres=gpu:2", "-c", "1", "--mem=100M", "-o", "/dev/null",
                    "--chdir=/tmp", "--wrap", "sleep 600", user="bob").strip()
    try:
        wait_for(lambda: any(j["id"] == blocker and j["state"] == "RUNNING" for j in jobs(conf)), 20, "blocker did not start")
        assert bob.post_spawn("bob", "gpu-1").status_code == 302
        (pending,) = wait_for(lambda: [j for j in jobs(conf) if j["name"] == "hpclab-bob"], 30, "bob's job was not submitted")

        def waiter():
            waiting = _server_row(admin, hub)[1].select(".hpclab-admin-waiter")
            return [w for w in waiting if "pending (Resources" in w.select_one(".w-message").text]

        (row,) = wait_for(waiter, 30, "bob's start is not in the waiting line with SLURM's reason", interval=1)
        assert row["data-user"] == "bob" and row.select_one(".w-job").text == pending["id"] != job_id
        assert row.select_one(".w-backend").text == "cluster" and row.select_one(".w-message").text.startswith(
            f"Job {pending['id']} pending (Resources: waiting for free resources)"
        )
    finally:
        slurm(conf, "scancel", "--user=bob")  # bob's pending job (his start fails with SLURM's words) and the blocker
    wait_for(lambda: "" not in bob.api("GET", "/users/bob").json()["servers"], 30, "bob's start did not end")


def _sacct(conf: str, job_id: str) -> list[str]:
    argv = slurm_argv(conf, "sacct", "-X", "-n", "-P", "-j", job_id, "--format=JobID,Start,End,AllocCPUS")
    env = dict(os.environ, SLURM_CONF=conf, SLURM_TIME_FORMAT="%s")
    return subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout.strip().split("|")


@pytest.mark.timeout(300)
def test_the_usage_of_a_slurm_server_is_sacct_s(slurm_cluster, tmp_path):
    config = slurm_hub_yaml(tmp_path / "state", slurm_cluster)
    config["auth"]["groups"]["gpu-users"].append("bob")
    hub = Hub(tmp_path, config)
    with started_slurm_hub(hub, slurm_cluster):
        alice, admin, bob = login(hub, "alice"), login(hub, "admin"), login(hub, "bob")
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
        _measured_use_and_pending_start(hub, admin, alice, bob, job["id"])
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
