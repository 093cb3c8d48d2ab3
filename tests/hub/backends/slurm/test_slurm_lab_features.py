"""Lab features inside a SLURM job (issue 30), against the real dev cluster: jupyterlab-slurm's jobs view (the
`slurm-jobs` feature) lists the server's own job, through its server API and in its panel in Chromium; `module
load` (the `modules` feature, Debian's Lmod) works in a kernel of the job's server; the desktop app's VNC server and
xfce4 session run inside the job. In Chromium, one job's server (one job, to keep the suite short) is checked as the
local backend's browser tests check each feature (tests/e2e, sharing their steps through tests/support): the
resource display shows the profile's memory limit, each app tile opens and shows its app (VS Code's workbench,
TensorBoard's scalars of a real `hpclab train` run, the xfce panel over noVNC) with its process inside the job,
`module load` in a notebook changes its environment, a dask cluster's dashboard opens in the dask panel through the
server's proxy, the git panel clones and commits, and alice shares the server with bob: both edit one notebook in
two browsers and her revoke shuts him out. The commands jupyterlab-slurm runs (squeue, sacct, scontrol) must find
SLURM inside the job: SLURM_CONF and PATH reach the job from the environment the hub submits with, which sbatch
exports into it."""

from __future__ import annotations

import asyncio
import json
import pwd
import re
import shutil
import time
from pathlib import Path

import psutil
import pytest

from support.apptiles import open_tile, processes_of, wait_for_desktop, wait_for_scalars, wait_for_workbench
from support.browsertools import browser_login, run_in_new_notebook
from support.docs_images import docs_image
from support.hubprocess import make_reachable
from support.hubtools import Hub, login, stop_server, write_owned
from support.kerneltools import run_in_kernel, user_token
from support.labsteps import (
    DASK_CLUSTER,
    clone_and_commit_in_panel,
    close_dialog,
    edit_together,
    open_notebook,
    open_share_from_home,
    revoke_shuts_out,
    seed_origin,
    share_from_dialog,
    show_dask_dashboard,
    wait_for_memory_limit,
)
from support.slurmtools import jobs, slurm_hub_yaml, started_slurm_hub, wait_for

pytestmark = pytest.mark.hub


@pytest.fixture(scope="module")
def lab_slurm_hub(slurm_cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm-lab-hub")
    site = workdir / "modulefiles"
    site.mkdir()
    (site / "josephson-data.lua").write_text('setenv("JOSEPHSON_DATA", "/data/josephson")\n')
    make_reachable(site / "josephson-data.lua")
    site.chmod(0o755)
    config = slurm_hub_yaml(workdir / "state", slurm_cluster)
    cpu = next(p for p in config["profiles"] if p["slug"] == "cpu")
    config["profiles"].append({**cpu, "slug": "cpu-lab", "display_name": "CPU job with its jobs view", "default": False,
                               "lab_features": ["slurm-jobs", "modules", "dask", "collaboration"],
                               "apps": ["vscode", "desktop", "tensorboard"]})
    config["modules"] = {"modulepath": [str(site)]}
    with started_slurm_hub(Hub(workdir, config), slurm_cluster) as hub:
        yield hub


async def _first_message(url: str, headers: dict[str, str], timeout: float = 90) -> bytes:
    """The first message a websocket sends (jupyter-server-proxy starts the app on the first connection)."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    connection = await websocket_connect(HTTPRequest(url, headers=headers, request_timeout=timeout))
    try:
        message = await asyncio.wait_for(connection.read_message(), timeout)
    finally:
        connection.close()
    return message if isinstance(message, bytes) else (message or "").encode()


def _own_job(hub: Hub, user: str) -> dict[str, str]:
    (job,) = [j for j in jobs(hub.slurm_conf) if j["user"] == user]
    assert job["state"] == "RUNNING"
    return job


def test_the_jobs_view_modules_and_the_desktop_inside_the_servers_job(lab_slurm_hub):
    alice = login(lab_slurm_hub, "alice")
    assert alice.post_spawn("alice", "cpu-lab").status_code == 302
    try:
        alice.wait_ready("alice", timeout=90)
        job = _own_job(lab_slurm_hub, "alice")
        base = lab_slurm_hub.user_url("alice")
        headers = {"Authorization": f"token {user_token(alice, 'alice')}"}
        queue = alice.http.get(base + "jupyterlab_slurm/squeue", headers=headers, timeout=60)
        assert queue.status_code == 200, queue.text
        envelope = queue.json()
        assert envelope["success"] is True, envelope  # squeue ran inside the job (PATH, SLURM_CONF)
        rows = envelope["data"]["rows"]
        mine = [row for row in rows if row[0] == job["id"]]
        assert mine, rows
        assert mine[0][3] == "alice" and mine[0][4] == "R", mine  # the user and the running state, as squeue says
        user = alice.http.get(base + "jupyterlab_slurm/user", headers=headers).json()
        assert user["data"]["user"] == "alice", user  # "My jobs only" filters on the hub's user

        out, error = run_in_kernel(alice, "alice", (
            "import os, module, shutil\n"
            "print(os.environ.get('SLURM_CONF'), shutil.which('squeue'))\n"
            "print(os.environ.get('SLURM_JOB_ID'), os.environ.get('JOSEPHSON_DATA'))\n"
            "print(await module.load('josephson-data'))\n"
            "print(os.environ.get('SLURM_JOB_ID'), os.environ.get('JOSEPHSON_DATA'))\n"
        ))
        assert error == "", error
        # the desktop app inside the job: its page, and the VNC server's RFB greeting through the proxied websocket
        page = alice.http.get(base + "desktop/", headers=headers)
        assert page.status_code == 200 and "desktop/static/dist/viewer.js" in page.text, page.text[:300]
        greeting = asyncio.run(_first_message(base.replace("http", "ws", 1) + "desktop-websockify/", headers))
        assert greeting.startswith(b"RFB 003.00"), greeting
        wait_for(lambda: _panels_of("alice"), 90, "no xfce4-panel of alice's in her job")

        where, *loads = out.split("\n")[:4]
        assert where.split()[0] == lab_slurm_hub.slurm_conf and where.split()[1] != "None", where  # what the jobs view runs
        assert loads == [f"{job['id']} None", "None", f"{job['id']} /data/josephson"], out
    finally:
        stop_server(alice, "alice")
    wait_for(lambda: not _panels_of("alice"), 30, "alice's desktop outlived her job")


def _panels_of(user: str) -> list[psutil.Process]:
    processes = psutil.process_iter(["name", "username"])
    return [p for p in processes if p.info["name"] == "xfce4-panel" and p.info["username"] == user]


def _in_job(uid: int, job_id: str, marker: str) -> list[int]:
    """Processes of ``uid`` with ``marker`` in their command line that run in SLURM job ``job_id``."""
    return [pid for pid, argv, env in processes_of(uid)
            if any(marker in arg for arg in argv) and env.get("SLURM_JOB_ID") == job_id]


#: typed into a notebook of the job's server: a site module's load changes the kernel's environment, then a live
#: hpclab.dask_cluster local cluster inside the job (labsteps.DASK_CLUSTER)
MODULE_AND_CLUSTER = (
    "import os, module\n"
    "before = os.environ.get('JOSEPHSON_DATA')\n"
    "error = await module.load('josephson-data')\n"
    "print('MODULE', before, error, os.environ.get('JOSEPHSON_DATA'), os.environ.get('SLURM_JOB_ID'))\n"
) + DASK_CLUSTER

#: alice's notebook that she and bob edit together
NOTEBOOK = json.dumps({
    "cells": [{"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {}, "outputs": [], "source": []}],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5,
})
#: what the browser test leaves in alice's home, removed after it
LEFT_IN_HOME = ("runs/slurm-tiles", "slurm-tiles-notes", "origin.git", "origin", "slurm-shared.ipynb", "Untitled.ipynb",
                ".gitconfig")


@pytest.mark.browser
def test_the_lab_in_chromium_inside_the_servers_job(lab_slurm_hub, training_events, browser, artifacts):
    """One job's server, in Chromium, as the local backend's browser tests check each (tests/e2e): the resource
    display shows the profile's 1G, the jobs panel lists the job, each app tile shows its app, `module load` in a
    notebook changes its environment, the dask panel shows a live cluster's dashboard through the server's proxy,
    the git panel clones and commits, and alice shares the server with bob: both edit one notebook, the revoke
    shuts him out."""
    hub = lab_slurm_hub
    account = pwd.getpwnam("alice")  # SLURM jobs run as the user's own account, in its home
    home, owner = Path(account.pw_dir), (account.pw_uid, account.pw_gid)
    assert not (home / ".gitconfig").exists(), "alice's home has a .gitconfig of its own"
    for event_file in training_events:
        write_owned(home, *owner, Path("runs/slurm-tiles") / event_file.name, event_file.read_bytes())
    write_owned(home, *owner, "slurm-tiles-notes/notes.md", "# what the cohort showed\n")
    write_owned(home, *owner, ".gitconfig", "[user]\n\tname = Alice Example\n\temail = alice@example.org\n")
    write_owned(home, *owner, "slurm-shared.ipynb", NOTEBOOK)
    origin = seed_origin(home, owner)
    alice_api, bob_api = login(hub, "alice"), login(hub, "bob")
    lab_url = hub.user_url("alice")
    alice_ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    bob_ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page, bob = alice_ctx.new_page(), bob_ctx.new_page()
    page.set_default_timeout(90_000)
    bob.set_default_timeout(90_000)
    steps: dict[str, float] = {}
    try:
        browser_login(page, hub, "alice")
        page.wait_for_url("**/hub/spawn**")
        assert page.locator('[data-profile="cpu-lab"] .hpclab-apps').inner_text().strip() == (
            "Apps: VS Code, Desktop, TensorBoard")
        page.check("#profile-cpu-lab")
        page.click("form#spawn_form [type=submit]")
        page.wait_for_url("**/user/alice/lab**", timeout=240_000)
        job = _own_job(hub, "alice")
        lab = page.url.split("/lab")[0]
        page.goto(lab + "/lab?reset")
        started = time.monotonic()
        wait_for_memory_limit(page, 1024)  # jupyter-resource-usage against the job's memory (the profile's 1G)
        page.locator(".jp-LauncherCard", has_text="Slurm").first.click()
        # the dashboard's table (a data grid): the job's row, with its id, user and state as squeue gave them
        row = page.get_by_role("row").filter(has=page.get_by_role("gridcell", name=job["id"], exact=True))
        row.first.wait_for(timeout=60_000)
        cells = [cell.strip() for cell in row.first.get_by_role("gridcell").all_inner_texts()]
        assert {"alice", "RUNNING", "hpclab-alice", "cpu"} <= set(cells), cells
        page.locator('.jp-SideBar [data-id="filebrowser"]').click()  # the file browser folded, for the picture
        page.wait_for_timeout(500)
        page.screenshot(path=str(docs_image(artifacts, "lab-slurm-jobs.png")))
        steps["memory and jobs"] = time.monotonic() - started

        # each app tile: its page through the job's server proxy, the app in it, its process inside the job; the
        # jobs view took the launcher's place
        page.goto(lab + "/lab?reset")
        for app, title, path, shows, marker in (
            ("vscode", "VS Code", "vscode/", lambda tab: wait_for_workbench(tab, "slurm-tiles-notes"), "code-server"),
            ("tensorboard", "TensorBoard", "tensorboard/", wait_for_scalars, "hpclab.tensorboard_socket"),
            ("desktop", "Desktop", "desktop/",
             lambda tab: wait_for_desktop(tab, owner[0], artifacts / "slurm-desktop-canvas.png"), "Xtigervnc"),
        ):
            started = time.monotonic()
            tab = open_tile(page, title)
            tab.set_default_timeout(180_000)
            try:
                assert f"/user/alice/{path}" in tab.url, tab.url
                shows(tab)
                print(f"SLURM job {job['id']}: {title} tile to its app shown: {time.monotonic() - started:.1f} s")
                assert _in_job(owner[0], job["id"], marker), f"no {marker} process of alice's in job {job['id']}"
            except Exception:
                tab.screenshot(path=str(artifacts / f"slurm-{app}-failure.png"))
                raise
            finally:
                tab.close()
        processes = processes_of(owner[0])
        assert any(env.get("SLURM_JOB_ID") == job["id"] for _, argv, env in processes
                   if argv and Path(argv[0]).name == "xfce4-panel"), "the desktop's panel runs outside the job"

        # `module load` in a notebook, then a dask cluster whose dashboard the dask panel shows through the proxy
        started = time.monotonic()
        run_in_new_notebook(page, MODULE_AND_CLUSTER)
        output = page.locator(".jp-OutputArea-output", has_text="DASHBOARD=").first
        output.wait_for(timeout=180_000)
        printed = page.locator(".jp-OutputArea").first.inner_text()
        assert f"MODULE None None /data/josephson {job['id']}" in printed, printed
        link = re.search(r"DASHBOARD=(\S+)", printed).group(1)
        assert re.fullmatch(r"/user/alice/proxy/\d+/status", link), printed
        assert printed.rstrip().endswith(" 200 285"), printed  # the dashboard answers, and the cluster ran the tasks
        show_dask_dashboard(page, link)
        steps["module and dask"] = time.monotonic() - started

        # alice shares the job's server with bob; he opens it from his home page in his own browser, both edit one
        # notebook; her revoke shuts him out. While the hub's 30 s for the revoke run, git: a clone and a commit from
        # the panel, in a second tab of alice's
        started = time.monotonic()
        open_notebook(page, lab_url, "slurm-shared.ipynb")
        share_from_dialog(page, alice_api, "alice", "bob")
        close_dialog(page)
        browser_login(bob, hub, "bob")
        open_share_from_home(bob, hub, "alice")
        open_notebook(bob, lab_url, "slurm-shared.ipynb")
        edit_together(page, bob, "bob")

        def git_in_a_second_tab() -> None:
            git_tab = alice_ctx.new_page()
            git_tab.set_default_timeout(90_000)
            git_started = time.monotonic()
            try:
                git_tab.goto(lab + "/lab")
                clone_and_commit_in_panel(git_tab, lab, origin, home, owner, "Alice Example")
            except Exception:
                git_tab.screenshot(path=str(artifacts / "slurm-git-failure.png"))
                raise
            finally:
                git_tab.close()
            steps["git"] = time.monotonic() - git_started

        revoke_shuts_out(page, bob, alice_api, "alice", lab_url, "slurm-shared.ipynb", meanwhile=git_in_a_second_tab)
        assert 'id="hpclab-shared"' not in bob_api.http.get(f"{hub.url}/hub/home").text
        steps["sharing and git"] = time.monotonic() - started
        print(f"SLURM job {job['id']}: " + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in steps.items()))
    except Exception:
        page.screenshot(path=str(artifacts / "slurm-lab-failure.png"))
        bob.screenshot(path=str(artifacts / "slurm-lab-bob-failure.png"))
        raise
    finally:
        alice_ctx.close()
        bob_ctx.close()
        alice_api.api("DELETE", "/shares/alice/")
        stop_server(alice_api, "alice")
        for left in (home / name for name in LEFT_IN_HOME):
            if left.is_dir():
                shutil.rmtree(left, ignore_errors=True)
            else:
                left.unlink(missing_ok=True)
        if (home / "runs").is_dir() and not any((home / "runs").iterdir()):
            (home / "runs").rmdir()
