"""Lab features inside a SLURM job (issue 30), against the real dev cluster: jupyterlab-slurm's jobs view (the
`slurm-jobs` feature) lists the server's own job, through its server API and in its panel in Chromium; `module
load` (the `modules` feature, Debian's Lmod) works in a kernel of the job's server; the desktop app's VNC server and
xfce4 session run inside the job; in Chromium each app tile of one job's server opens and shows its app (VS Code's
workbench, TensorBoard's scalars of a real `hpclab train` run, the xfce panel over noVNC), each app's process
running inside the job (tests/e2e/test_apps_browser.py does the same on the local backend). The commands
jupyterlab-slurm runs (squeue, sacct, scontrol) must find SLURM inside the job: SLURM_CONF and PATH reach the job
from the environment the hub submits with, which sbatch exports into it."""

from __future__ import annotations

import asyncio
import pwd
import shutil
import time
from pathlib import Path

import psutil
import pytest

from support.apptiles import open_tile, processes_of, wait_for_desktop, wait_for_scalars, wait_for_workbench
from support.browsertools import browser_login
from support.docs_images import docs_image
from support.hubprocess import make_reachable
from support.hubtools import Hub, login, stop_server, write_owned
from support.kerneltools import run_in_kernel, user_token
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
                               "lab_features": ["slurm-jobs", "modules"], "apps": ["vscode", "desktop", "tensorboard"]})
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


@pytest.mark.browser
def test_the_jobs_panel_and_each_app_tile_in_chromium_inside_the_servers_job(lab_slurm_hub, training_events, browser,
                                                                            artifacts):
    account = pwd.getpwnam("bob")  # SLURM jobs run as the user's own account, in its home
    home, owner = Path(account.pw_dir), (account.pw_uid, account.pw_gid)
    for event_file in training_events:
        write_owned(home, *owner, Path("runs/slurm-tiles") / event_file.name, event_file.read_bytes())
    write_owned(home, *owner, "slurm-tiles-notes/notes.md", "# what the cohort showed\n")
    bob = login(lab_slurm_hub, "bob")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(90_000)
    try:
        browser_login(page, lab_slurm_hub, "bob")
        page.wait_for_url("**/hub/spawn**")
        assert page.locator('[data-profile="cpu-lab"] .hpclab-apps').inner_text().strip() == (
            "Apps: VS Code, Desktop, TensorBoard")
        page.check("#profile-cpu-lab")
        page.click("form#spawn_form [type=submit]")
        page.wait_for_url("**/user/bob/lab**", timeout=240_000)
        job = _own_job(lab_slurm_hub, "bob")
        page.goto(page.url.split("/lab")[0] + "/lab?reset")
        page.locator(".jp-LauncherCard", has_text="Slurm").first.click()
        # the dashboard's table (a data grid): the job's row, with its id, user and state as squeue gave them
        row = page.get_by_role("row").filter(has=page.get_by_role("gridcell", name=job["id"], exact=True))
        row.first.wait_for(timeout=60_000)
        cells = [cell.strip() for cell in row.first.get_by_role("gridcell").all_inner_texts()]
        assert {"bob", "RUNNING", "hpclab-bob", "cpu"} <= set(cells), cells
        page.locator('.jp-SideBar [data-id="filebrowser"]').click()  # the file browser folded, for the picture
        page.wait_for_timeout(500)
        page.screenshot(path=str(docs_image(artifacts, "lab-slurm-jobs.png")))

        # each app tile: its page through the job's server proxy, the app in it, its process inside the job; the
        # jobs view took the launcher's place
        page.goto(page.url.split("/lab")[0] + "/lab?reset")
        for app, title, path, shows, marker in (
            ("vscode", "VS Code", "vscode/", lambda tab: wait_for_workbench(tab, "slurm-tiles-notes"), "code-server"),
            ("tensorboard", "TensorBoard", "tensorboard/", wait_for_scalars, "tensorboard.main"),
            ("desktop", "Desktop", "desktop/",
             lambda tab: wait_for_desktop(tab, owner[0], artifacts / "slurm-desktop-canvas.png"), "Xtigervnc"),
        ):
            started = time.monotonic()
            tab = open_tile(page, title)
            tab.set_default_timeout(180_000)
            try:
                assert f"/user/bob/{path}" in tab.url, tab.url
                shows(tab)
                print(f"SLURM job {job['id']}: {title} tile to its app shown: {time.monotonic() - started:.1f} s")
                assert _in_job(owner[0], job["id"], marker), f"no {marker} process of bob's in job {job['id']}"
            except Exception:
                tab.screenshot(path=str(artifacts / f"slurm-{app}-failure.png"))
                raise
            finally:
                tab.close()
        processes = processes_of(owner[0])
        assert any(env.get("SLURM_JOB_ID") == job["id"] for _, argv, env in processes
                   if argv and Path(argv[0]).name == "xfce4-panel"), "the desktop's panel runs outside the job"
    except Exception:
        page.screenshot(path=str(artifacts / "slurm-jobs-failure.png"))
        raise
    finally:
        page.close()
        stop_server(bob, "bob")
        shutil.rmtree(home / "runs" / "slurm-tiles", ignore_errors=True)
        shutil.rmtree(home / "slurm-tiles-notes", ignore_errors=True)
        if (home / "runs").is_dir() and not any((home / "runs").iterdir()):
            (home / "runs").rmdir()
