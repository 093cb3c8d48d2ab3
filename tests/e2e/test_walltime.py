"""Wall-time safety inside JupyterLab on a real hub and browser: time left, warning, saving on the early signal.

SLURM delivers the early signal itself in tests/hub/backends/slurm/test_slurm_hub.py; here the local backend's server gets
the same SIGUSR2 from the test, which is what ``--signal=B:USR2@N`` does to the batch shell.
"""

from __future__ import annotations

import json
import re
import signal
import time
import uuid
from pathlib import Path

import pytest

from support.browsertools import browser_login
from support.hubtools import home_of, hub_yaml, login, server_process, started_hub, stop_server, write_in_home
from support.slurmtools import wait_for


pytestmark = [pytest.mark.hub]

AUTOSAVE_OFF = Path(".jupyter/lab/user-settings/@jupyterlab/docmanager-extension/plugin.jupyterlab-settings")


@pytest.fixture(scope="module")
def walltime_hub(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("walltime-hub")
    config = hub_yaml(workdir / "state")
    config["profiles"][0]["time_limit"] = "30:00"  # MM:SS
    config["walltime"] = {"warn_before": "31:00", "save_before": "00:30"}  # warned as soon as JupyterLab opens
    config["backends"]["local"]["poll_interval"] = 2
    config["profiles"].append({"slug": "short", "display_name": "Twenty seconds", "backend": "local", "cpus": 1,
                               "time_limit": "00:20"})
    with started_hub(workdir, config) as hub:
        yield hub


def user_home(hub, name: str) -> Path:
    return home_of(hub.config["hub"]["data_dir"], name)


def test_walltime_endpoint_answers_the_end_and_lead_times_to_the_user_only(walltime_hub):
    alice = login(walltime_hub, "alice")
    assert alice.post_spawn("alice", "cpu-small").status_code == 302
    try:
        alice.wait_ready("alice")
        assert alice.http.get(walltime_hub.user_url("alice") + "lab").status_code == 200  # logs in to the server (OAuth)
        status = alice.http.get(walltime_hub.user_url("alice") + "hpclab/walltime").json()
        assert status["source"] == "HPCLAB_JOB_END_TIME"
        assert 1700 < status["end"] - status["now"] <= 1800
        assert (status["warn_before"], status["save_before"], status["signalled"]) == (1860, 30, False)
        server_process(walltime_hub.config["hub"]["data_dir"], "alice").send_signal(signal.SIGUSR2)
        wait_for(lambda: alice.http.get(walltime_hub.user_url("alice") + "hpclab/walltime").json()["signalled"], 10, "signal not seen")
        bob = login(walltime_hub, "bob")
        bob.http.get(walltime_hub.user_url("alice") + "lab")  # bob tries to log in to alice's server
        assert bob.http.get(walltime_hub.user_url("alice") + "hpclab/walltime").status_code == 403
        assert "SIGUSR2 received, the job ends soon" in walltime_hub.log_tail(400)
    finally:
        stop_server(alice, "alice")


def test_local_server_gets_the_early_signal_and_is_stopped_at_its_time_limit(walltime_hub):
    alice = login(walltime_hub, "alice")
    assert alice.post_spawn("alice", "short").status_code == 302
    started = time.monotonic()
    try:
        alice.wait_ready("alice")
        wait_for(lambda: "hpclab walltime: SIGUSR2 received" in walltime_hub.log_tail(300), 15, "no early signal")
        assert "" in alice.api("GET", "/users/alice").json()["servers"]  # signalled, not stopped yet
        wait_for(lambda: "" not in alice.api("GET", "/users/alice").json()["servers"], 60, "server outlived its time limit")
        assert time.monotonic() - started >= 18  # not before its 20 seconds
        home = alice.http.get(f"{walltime_hub.url}/hub/home").text
        assert "hpclab-end-reason" in home and "reached its time limit (00:00:20)" in home
    finally:
        if "" in alice.api("GET", "/users/alice").json()["servers"]:
            stop_server(alice, "alice")


@pytest.mark.browser
def test_jupyterlab_shows_time_left_warns_and_saves_unsaved_edits_on_the_early_signal(walltime_hub, browser, artifacts):
    marker = f"walltime-{uuid.uuid4().hex[:8]}"
    # only the wall-time plugin may save this edit
    settings = write_in_home(walltime_hub.config["hub"]["data_dir"], "bob", AUTOSAVE_OFF, json.dumps({"autosave": False}))
    bob = login(walltime_hub, "bob")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    try:
        browser_login(page, walltime_hub, "bob")
        page.wait_for_url("**/hub/spawn**")
        page.click("form#spawn_form [type=submit]")
        page.wait_for_url("**/user/bob/lab**", timeout=120_000)
        page.goto(page.url.split("/lab")[0] + "/lab?reset")
        label = page.locator("#hpclab-walltime")
        label.wait_for()
        assert re.fullmatch(r"Job: (29|30) min left", label.inner_text().strip()), label.inner_text()
        assert label.get_attribute("data-level") == "warning"
        page.get_by_text("This session ends in").first.wait_for()

        page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click(timeout=120_000)
        editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
        editor.click()
        page.keyboard.type(f"note = '{marker}'")  # typed, never saved by hand, autosave off
        name = page.locator(".jp-DirListing-item.jp-mod-selected .jp-DirListing-itemText").first.inner_text().strip()
        notebook = user_home(walltime_hub, "bob") / name
        time.sleep(12)  # a whole check interval of the plugin: nothing saves the edit before the signal
        assert marker not in notebook.read_text()

        server_process(walltime_hub.config["hub"]["data_dir"], "bob").send_signal(signal.SIGUSR2)
        page.get_by_text("The scheduler stops this job").first.wait_for(timeout=30_000)
        wait_for(lambda: marker in notebook.read_text(), 20, "the edit was not saved after the early signal")
        assert label.get_attribute("data-level") == "final"
        page.screenshot(path=str(artifacts / "walltime-warning.png"))
    finally:
        page.close()
        settings.unlink()
        stop_server(bob, "bob")
