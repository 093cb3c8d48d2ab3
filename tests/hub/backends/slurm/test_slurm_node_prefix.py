"""Software on the nodes: ``hpclab-hub node-install PREFIX`` makes a shared prefix, and a job's server runs from it
(its Python, its packages), not from the hub's venv."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from support.hubtools import HUB_CLI, Hub, login, make_reachable, stop_server
from support.slurmtools import jobs, slurm_hub_yaml, started_slurm_hub, wait_for

pytestmark = pytest.mark.hub

PREFIX = Path("/tmp/hpclab-node-test")


@pytest.fixture(scope="module")
def node_prefix() -> str:
    started = time.monotonic()
    done = subprocess.run([str(HUB_CLI), "node-install", str(PREFIX)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    sys.stderr.write(f"\nnode-install took {time.monotonic() - started:.1f} s\n")
    assert (PREFIX / "bin" / "hpclab-singleuser").exists() and (PREFIX / "hpclab-node.json").exists()
    make_reachable(PREFIX / "bin" / "python")
    return str(PREFIX)


def test_the_jobs_server_runs_from_the_node_prefix_not_the_hubs_venv(slurm_cluster, node_prefix, tmp_path):
    config = slurm_hub_yaml(tmp_path / "state", slurm_cluster)
    config["backends"]["cluster"]["node_prefix"] = node_prefix
    with started_slurm_hub(Hub(tmp_path, config), slurm_cluster) as hub:
        alice = login(hub, "alice")
        assert alice.post_spawn("alice", "cpu").status_code == 302
        try:
            alice.wait_ready("alice", timeout=120)
            (job,) = [j for j in jobs(slurm_cluster) if j["user"] == "alice"]

            def server():
                for proc in psutil.process_iter(["username", "cmdline"]):
                    cmdline = proc.info["cmdline"] or []
                    if proc.info["username"] == "alice" and any("jupyterhub-singleuser" in part for part in cmdline):
                        return proc
                return None

            proc = wait_for(server, 30, "no server process of alice's job")
            assert proc.environ()["SLURM_JOB_ID"] == job["id"]
            assert proc.cmdline()[0] == f"{node_prefix}/bin/python", proc.cmdline()
            assert all(sys.prefix not in part for part in proc.cmdline()), proc.cmdline()
            mapped = {m.path for m in proc.memory_maps()}
            assert any(path.startswith(f"{node_prefix}/lib/") for path in mapped)  # compiled modules from the prefix
            assert not [path for path in mapped if path.startswith(sys.prefix)], "the server loaded code from the hub's venv"
            assert alice.http.get(hub.user_url("alice") + "lab").status_code == 200
        finally:
            stop_server(alice, "alice")
