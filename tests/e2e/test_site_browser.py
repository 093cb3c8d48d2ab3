"""The seeds' site as one hub, in a real browser: a CPU job on the real dev SLURM and a second, named
server on the hub's own machine, side by side; the Josephson example runs in its curated kernel.

Real parts throughout: Debian's chromium through Playwright, JupyterHub with its proxy, slurmctld and
slurmd from Debian, jobs and local servers as alice's own Unix account (so both see one home).
"""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from support.browsertools import browser_login
from support.hubtools import HUB_CLI, Hub, hub_yaml, login, make_reachable, stop_server
from support.kerneltools import run_in_kernel
from support.paths import REPO_ROOT
from support.slurmtools import jobs, started_slurm_hub


pytestmark = pytest.mark.hub

REPO = REPO_ROOT
KERNELS = {
    "josephson": {"display_name": "Josephson (SciPy, numba, joblib)", "runtime": {"type": "venv", "prefix": str(REPO / ".venv")}},
    "mri": {"display_name": "MRI (nibabel, dcm2niix, SimpleITK)", "runtime": {"type": "venv", "prefix": str(REPO / ".venv")}},
}


def site_yaml(workdir: Path, slurm_conf: str) -> dict:
    """A mixed site like deploy/examples/site.yaml: a SLURM cluster and this machine (no GPU here)."""
    jupyter_path = {"JUPYTER_PATH": str(workdir / "kernels" / "share" / "jupyter")}
    return hub_yaml(
        workdir / "state",
        backends={
            "cluster": {"type": "slurm", "slurm_conf": slurm_conf, "poll_interval": 2, "command_timeout": 20,
                        "environment": jupyter_path},
            "gpu-server": {"type": "local", "cpus": "auto", "gpus": [], "accounts": {"mode": "existing"},
                           "environment": jupyter_path},
        },
        profiles=[
            {"slug": "cluster-cpu", "display_name": "Cluster CPU", "backend": "cluster", "cpus": 1, "memory": "1G",
             "time_limit": "00:30:00", "default": True, "kernels": ["josephson", "mri"], "slurm": {"partition": "cpu"}},
            {"slug": "server-cpu", "display_name": "Teaching server CPU", "backend": "gpu-server", "cpus": 1, "memory": "3G",
             "kernels": ["josephson", "mri"]},
            {"slug": "server-gpu", "display_name": "GPU server", "backend": "gpu-server", "cpus": 1, "gpus": 1,
             "groups": ["gpu-users"], "kernels": ["josephson"]},
        ],
        kernels=KERNELS,
    )


@pytest.fixture(scope="module")
def site_hub(slurm_cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("site-browser")
    hub = Hub(workdir, site_yaml(workdir, slurm_cluster))
    installed = subprocess.run([str(HUB_CLI), "kernels", "install", "--config", str(hub.config_path), "--prefix", str(workdir / "kernels")],
                               capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stderr
    make_reachable(workdir / "kernels" / "share" / "jupyter" / "kernels" / "josephson" / "kernel.json")
    with started_slurm_hub(hub, slurm_cluster, accounts=("alice",)):
        yield hub


@pytest.mark.timeout(600)
def test_a_cluster_job_and_a_local_server_side_by_side_and_the_example_runs_in_its_kernel(site_hub, browser, artifacts):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    client = login(site_hub, "alice")
    try:
        browser_login(page, site_hub, "alice")
        page.goto(f"{site_hub.url}/hub/spawn")
        # the GPU profile is on the form, disabled, saying why (this machine has no GPU)
        assert page.locator("#profile-server-gpu").is_disabled()
        assert "This server has no GPU" in page.locator("#blocked-server-gpu").inner_text()
        assert page.locator("#profile-cluster-cpu").is_checked()
        page.click("form#spawn_form [type=submit]")
        page.wait_for_url("**/user/alice/lab**", timeout=180_000)

        # a second server, named, on the hub's own machine: the link preselects its profile
        page.goto(f"{site_hub.url}/hub/spawn/alice/local?profile=server-cpu")
        assert page.locator("#profile-server-cpu").is_checked()
        page.click("form#spawn_form [type=submit]")
        page.wait_for_url("**/user/alice/local/lab**", timeout=120_000)

        # both listed on the home page, each with its profile and backend
        page.goto(f"{site_hub.url}/hub/home")
        rows = page.locator("#hpclab-servers tbody tr")
        assert rows.count() == 2
        table = page.locator("#hpclab-servers").inner_text()
        assert re.search(r"default\s+Cluster CPU\s+cluster \(SLURM cluster\)\s+running \(SLURM job \d+\)", table), table
        assert re.search(r"local\s+Teaching server CPU\s+gpu-server \(this server\)\s+running", table), table

        # the example, opened from examples/ of the local server, runs top to bottom in the Josephson kernel
        page.goto(site_hub.user_url("alice", "local") + "lab/tree/examples/josephson-sweep.ipynb?reset")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
        page.locator(".jp-Toolbar-kernelName", has_text="Josephson").first.wait_for(timeout=60_000)
        page.locator(".jp-StatusBar-TextItem", has_text="Idle").first.wait_for(timeout=90_000)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        page.get_by_text("round trip identical: True").first.wait_for(timeout=400_000)
        outputs = page.locator(".jp-Notebook .jp-OutputArea-output")
        text = " ".join(outputs.all_inner_texts())
        assert re.search(r"144 points \(G 12 x alpha 12\)", text), text[:2000]
        assert "Traceback" not in text
        page.locator(".jp-Cell").nth(6).scroll_into_view_if_needed()
        maps = page.locator(".jp-Notebook .jp-OutputArea-output img")
        assert maps.count() >= 3  # m_z(t), the reversal map, the map pair
        page.screenshot(path=str(artifacts / "site-josephson-map.png"), full_page=False)

        # the cluster server's kernel runs inside its SLURM job
        (job,) = [j for j in jobs(site_hub.slurm_conf) if j["user"] == "alice" and j["state"] == "RUNNING"]
        with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's event loop
            out, errors = pool.submit(run_in_kernel, client, "alice", "import os; print(os.environ.get('SLURM_JOB_ID'))").result()
        assert not errors and out.strip() == job["id"]
    finally:
        page.close()
        stop_server(client, "alice", server_name="local")
        stop_server(client, "alice")


def test_a_restarted_hub_readopts_each_server_with_its_own_backend(site_hub):
    """Both halves keep their server's state (job id; pid, account, cgroup) through a hub restart."""
    client = login(site_hub, "alice")
    assert client.post_spawn("alice", "cluster-cpu").status_code == 302
    assert client.post_spawn("alice", "server-cpu", server_name="local").status_code == 302
    try:
        client.wait_ready("alice", timeout=120)
        client.wait_ready("alice", server_name="local")
        (job,) = [j for j in jobs(site_hub.slurm_conf) if j["user"] == "alice" and j["state"] == "RUNNING"]
        (local,) = [p for p in psutil.process_iter(["username", "cmdline"]) if p.info["username"] == "alice"
                    and any("jupyterhub-singleuser" in part for part in p.info["cmdline"] or [])
                    and "SLURM_JOB_ID" not in p.environ()]
        site_hub.stop()
        site_hub.start()
        client = login(site_hub, "alice")
        servers = client.api("GET", "/users/alice").json()["servers"]
        assert servers[""]["ready"] and servers["local"]["ready"], servers
        assert [j["id"] for j in jobs(site_hub.slurm_conf) if j["user"] == "alice"] == [job["id"]]
        assert local.is_running()
        # each answers through the proxy after the restart
        for server in ("", "local"):
            token = client.api("POST", "/users/alice/tokens", json={"note": "restart test"}).json()["token"]
            status = client.http.get(site_hub.user_url("alice", server) + "api/status", headers={"Authorization": f"token {token}"})
            assert status.status_code == 200, (prefix, status.status_code)
    finally:
        stop_server(client, "alice", server_name="local")
        stop_server(client, "alice")
    assert not [j for j in jobs(site_hub.slurm_conf) if j["user"] == "alice"]
    assert not local.is_running() or local.status() == psutil.STATUS_ZOMBIE  # dead; reparented to PID 1 after the restart


def test_check_live_validates_the_site_example_against_the_running_cluster(slurm_cluster):
    import os

    proc = subprocess.run([str(HUB_CLI), "check", "--live", str(REPO / "deploy/examples/site.yaml")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "SLURM_CONF": slurm_cluster})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fits the running cluster" in proc.stdout
