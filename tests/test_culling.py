"""Idle culling on a real hub: an idle server is stopped, one whose kernel is busy computing is not."""

from __future__ import annotations

import time

import pytest

from conftest import browser_login, login, run_in_new_notebook, started_hub
from hubtools import hub_yaml, stop_server
from slurmtools import wait_for

pytestmark = [pytest.mark.hub, pytest.mark.browser]


@pytest.fixture(scope="module")
def culling_hub(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("culling-hub")
    config = hub_yaml(workdir / "state")
    config["culling"] = {"enabled": True, "timeout": "00:20", "every": "00:05"}  # MM:SS: 20 s idle, checked every 5 s
    with started_hub(workdir, config) as hub:
        yield hub


def test_idle_server_is_culled_and_busy_kernel_is_not(culling_hub, browser):
    alice, bob = login(culling_hub, "alice"), login(culling_hub, "bob")
    assert alice.post_spawn("alice", "cpu-small").status_code == 302
    alice.wait_ready("alice")

    page = browser.new_page()
    page.set_default_timeout(60_000)
    browser_login(page, culling_hub, "bob")
    page.wait_for_url("**/hub/spawn**")
    page.click("form#spawn_form [type=submit]")
    page.wait_for_url("**/user/bob/lab**", timeout=120_000)
    run_in_new_notebook(page, "while True: sum(range(10**6))")
    page.locator(".jp-StatusBar-TextItem", has_text="Busy").first.wait_for(timeout=60_000)
    page.close()  # no browser polling from here on: only the busy kernel can keep bob's server alive
    started = time.monotonic()

    wait_for(lambda: "" not in alice.api("GET", "/users/alice").json()["servers"], 120, "idle server was not culled")
    # give the culler as long again as it needed for alice: bob's busy server must survive
    time.sleep(max(30.0, time.monotonic() - started))
    assert "" in bob.api("GET", "/users/bob").json()["servers"], "a server with a busy kernel was culled"
    stop_server(bob, "bob")
