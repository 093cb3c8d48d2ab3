"""Apps beside notebooks and what the server uses on the SLURM backend (issue 30), against the real dev cluster:
a job's server offers its profile's apps only, TensorBoard starts inside the job, and jupyter-resource-usage
reports the job's memory limit. The browser side is tests/e2e/test_apps_browser.py (local backend)."""

from __future__ import annotations

import pytest

from support.hubtools import Hub, login, stop_server
from support.slurmtools import jobs, slurm_hub_yaml, started_slurm_hub

pytestmark = pytest.mark.hub


@pytest.fixture(scope="module")
def apps_slurm_hub(slurm_cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm-apps-hub")
    config = slurm_hub_yaml(workdir / "state", slurm_cluster)
    cpu = next(p for p in config["profiles"] if p["slug"] == "cpu")
    config["profiles"].append(
        {
            **cpu,
            "slug": "cpu-board",
            "display_name": "CPU job with TensorBoard",
            "default": False,
            "memory": "1536M",
            "apps": ["tensorboard"],
        }
    )
    with started_slurm_hub(Hub(workdir, config), slurm_cluster) as hub:
        yield hub


def test_a_jobs_server_offers_its_profiles_apps_and_reports_the_jobs_memory_limit(apps_slurm_hub):
    alice = login(apps_slurm_hub, "alice")
    for slug, apps, memory in (("cpu-board", ["tensorboard"], 1536 * 2**20), ("cpu", [], 2**30)):
        assert alice.post_spawn("alice", slug).status_code == 302
        try:
            alice.wait_ready("alice", timeout=90)
            (job,) = [j for j in jobs(apps_slurm_hub.slurm_conf) if j["user"] == "alice"]
            assert job["state"] == "RUNNING"
            base = apps_slurm_hub.user_url("alice")
            assert alice.http.get(base + "lab").status_code == 200  # logs in to the server (OAuth)
            info = alice.http.get(base + "server-proxy/servers-info").json()
            assert [s["name"] for s in info["server_processes"]] == apps, info
            board = alice.http.get(base + "tensorboard/", timeout=120)
            assert board.status_code == (200 if apps else 404)
            if apps:
                assert "TensorBoard" in board.text  # served from inside the job
            metrics = alice.http.get(base + "api/metrics/v1").json()
            assert metrics["limits"]["memory"]["rss"] == memory, metrics
        finally:
            stop_server(alice, "alice")
