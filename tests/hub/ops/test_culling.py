"""Idle culling on a real hub: timeouts per profile; an idle server is stopped, a busy kernel's is not."""

from __future__ import annotations

import json
import signal
import time
from datetime import timedelta

import psutil
import pytest

from hpclab_hub.config import parse_deployment
from hpclab_hub.ops.culling import TIMEOUTS_VARIABLE, ProfileIdleArbiter, culler_service

from support.browsertools import browser_login, run_in_new_notebook
from support.hubtools import Hub, hub_yaml, login, started_hub, stop_server
from support.slurmtools import wait_for


@pytest.fixture(scope="module")
def culling_hub(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("culling-hub")
    config = hub_yaml(workdir / "state")
    # MM:SS: servers idle for 5 min are stopped, cpu-small ones after 20 s; checked every 5 s
    config["culling"] = {"enabled": True, "timeout": "05:00", "every": "00:05"}
    config["profiles"][0]["idle_timeout"] = "00:20"
    with started_hub(workdir, config, accounts=("alice", "bob", "carol")) as hub:
        yield hub


@pytest.mark.hub
@pytest.mark.browser
def test_idle_servers_are_culled_after_their_profiles_timeout_and_busy_kernels_never(culling_hub, browser):
    alice, bob, carol = (login(culling_hub, name) for name in ("alice", "bob", "carol"))
    assert alice.post_spawn("alice", "gpu-1").status_code == 302  # 5-minute profile, idle
    assert carol.api("POST", "/users/carol/server").status_code in (201, 202)  # no profile asked: the default, cpu-small
    alice.wait_ready("alice")
    carol.wait_ready("carol")
    assert carol.api("GET", "/users/carol").json()["servers"][""]["user_options"] == {"profile": "cpu-small"}

    page = browser.new_page()
    page.set_default_timeout(60_000)
    browser_login(page, culling_hub, "bob")
    page.wait_for_url("**/hub/spawn**")
    page.click("form#spawn_form [type=submit]")  # cpu-small, 20 s
    page.wait_for_url("**/user/bob/lab**", timeout=120_000)
    run_in_new_notebook(page, "while True: sum(range(10**6))")
    page.locator(".jp-StatusBar-TextItem", has_text="Busy").first.wait_for(timeout=60_000)
    page.close()  # no browser polling from here on: only the busy kernel can keep bob's server alive
    started = time.monotonic()

    wait_for(lambda: "" not in carol.api("GET", "/users/carol").json()["servers"], 120, "idle cpu-small server was not culled")
    # give the culler as long again as it needed for carol: bob's busy server and alice's 5-minute one must survive
    time.sleep(max(30.0, time.monotonic() - started))
    assert "" in bob.api("GET", "/users/bob").json()["servers"], "a server with a busy kernel was culled"
    assert "" in alice.api("GET", "/users/alice").json()["servers"], "a gpu-1 server was culled before its profile's 5 minutes"
    assert "Culling server carol" in culling_hub.log_tail(2000)
    stop_server(bob, "bob")
    stop_server(alice, "alice")


def test_arbiter_applies_each_profiles_timeout_and_the_default_for_unknown_profiles():
    arbiter = ProfileIdleArbiter({"gpu": 600, "cpu": 3600})
    idle = timedelta(minutes=20)
    assert arbiter(inactive=idle, inactive_limit=7200, server={"user_options": {"profile": "gpu"}})
    assert not arbiter(inactive=idle, inactive_limit=7200, server={"user_options": {"profile": "cpu"}})
    assert not arbiter(inactive=idle, inactive_limit=7200, server={"user_options": {}})  # culling.timeout
    assert arbiter(inactive=timedelta(hours=3), inactive_limit=7200, server={"user_options": None})


def test_culler_service_passes_every_profiles_timeout(tmp_path):
    config = hub_yaml(tmp_path)
    config["culling"] = {"enabled": True, "timeout": "1:00:00"}
    config["profiles"][1]["idle_timeout"] = "15:00"
    import yaml

    service, role = culler_service(parse_deployment(yaml.safe_dump(config), tmp_path))
    assert json.loads(service["environment"][TIMEOUTS_VARIABLE]) == {"cpu-small": 3600, "gpu-1": 900}
    assert "--timeout=3600" in service["command"] and any(a.startswith("--config=") for a in service["command"])
    assert "delete:servers" in role["scopes"]


@pytest.mark.hub
def test_the_hub_stops_within_seconds_on_ctrl_c_even_when_its_shell_ignores_sigint(tmp_path):
    """A hub started as a background job inherits SIGINT ignored; its culler must still stop at once.

    JupyterHub stops services with SIGINT and waits 30 s (``interrupt_timeout``) before SIGTERM: a
    culler that ignores SIGINT made every stop of ``make hub`` take half a minute.
    """
    config = hub_yaml(tmp_path / "state")
    config["culling"] = {"enabled": True, "timeout": "05:00", "every": "00:05"}
    hub = Hub(tmp_path, config)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # what `cmd &` in a non-interactive shell gives
    try:
        hub.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        culler = wait_for(
            lambda: [p for p in psutil.Process(hub.proc.pid).children() if "jupyterhub_idle_culler" in " ".join(p.cmdline())],
            30, "the hub started no idle-culler service",
        )[0]
        # stopped once it runs: its first look at the users comes after it has read its configuration
        wait_for(lambda: "(idle-culler@" in hub.log_tail(200), 30, "the idle-culler never asked the hub for its users")
        started = time.monotonic()
        hub.proc.send_signal(signal.SIGINT)  # what Ctrl-C delivers to the hub
        hub.proc.wait(timeout=60)
        took = time.monotonic() - started
        assert took < 10, f"the hub took {took:.1f} s to stop"
        assert not culler.is_running() or culler.status() == psutil.STATUS_ZOMBIE
    finally:
        hub.stop()
