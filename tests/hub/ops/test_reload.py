"""Changing the YAML of a running hub (issue 29, item 4): ``hpclab-hub reload`` and SIGHUP.

A real hub as root (servers under the users' own accounts) with two running servers: a reload with a
changed YAML keeps both server processes, the hub's pid and the proxy (its pid and routes), and the change shows;
a broken YAML is refused with its key path and line, and the hub goes on unchanged; SIGHUP alone does the same.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest
import yaml

from support.hubtools import HUB_CLI, hub_yaml, login, server_process, started_hub, stop_server

pytestmark = pytest.mark.hub


def _reload(hub) -> subprocess.CompletedProcess:
    return subprocess.run([str(HUB_CLI), "reload", "--config", str(hub.config_path), "--timeout", "90"],
                          capture_output=True, text=True, timeout=120, check=False)


def _proxy_pid(hub) -> int:
    return int((hub.workdir / "state" / "jupyterhub-proxy.pid").read_text())


def _site_name(hub, client) -> str:
    return client.http.get(f"{hub.url}/hub/home").text


def test_reload_keeps_two_running_servers_and_refuses_a_broken_yaml(tmp_path):
    workdir = tmp_path / "hub"
    config = hub_yaml(workdir / "state")
    config["hub"]["site_name"] = "Before Reload"
    with started_hub(workdir, config) as hub:
        data_dir = config["hub"]["data_dir"]
        alice, bob = login(hub, "alice"), login(hub, "bob")
        for client, name in ((alice, "alice"), (bob, "bob")):
            assert client.post_spawn(name, "cpu-small").status_code == 302
        for client, name in ((alice, "alice"), (bob, "bob")):
            client.wait_ready(name)
        servers = {name: server_process(data_dir, name) for name in ("alice", "bob")}
        hub_pid, proxy_pid = hub.proc.pid, _proxy_pid(hub)
        assert "Before Reload" in _site_name(hub, alice)

        # a good change: the hub replaces itself in place; servers, proxy and logins stay
        good = dict(config, hub={**config["hub"], "site_name": "After Reload"})
        hub.config_path.write_text(yaml.safe_dump(good, sort_keys=False))
        started = time.monotonic()
        done = _reload(hub)
        took = time.monotonic() - started
        assert done.returncode == 0, done.stdout + done.stderr + hub.log_tail()
        assert "reloaded" in done.stdout
        assert hub.proc.poll() is None and psutil.Process(hub_pid).is_running()
        assert _proxy_pid(hub) == proxy_pid and psutil.Process(proxy_pid).is_running(), "the proxy was restarted"
        assert "kept the running proxy" in hub.log_path.read_text()
        for name, before in servers.items():
            assert server_process(data_dir, name).pid == before.pid, f"{name}'s server was restarted"
        assert "After Reload" in _site_name(hub, alice), "the new YAML did not take effect"
        for client, name in ((alice, "alice"), (bob, "bob")):
            server = client.wait_ready(name, timeout=30)
            assert server["ready"]
            lab = client.http.get(hub.user_url(name) + "lab")
            assert lab.status_code == 200 and "JupyterLab" in lab.text, f"{name}'s server unreachable after the reload"
        print(f"reload took {took:.1f} s")

        # a broken YAML: refused with key path and line, nothing sent to the hub
        log_size = hub.log_path.stat().st_size
        broken = hub.config_path.read_text().replace("site_name: After Reload", "site_name: After Reload\n  prot: 80")
        hub.config_path.write_text(broken)
        refused = _reload(hub)
        assert refused.returncode == 1
        assert "hub.prot" in refused.stderr and "line" in refused.stderr, refused.stderr
        assert "running hub is unchanged" in refused.stderr
        assert "SIGHUP" not in hub.log_path.read_text()[log_size:]
        # SIGHUP sent by hand on the broken YAML: the hub checks, says why in its log, and goes on
        os.kill(hub_pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "reload refused" not in hub.log_path.read_text()[log_size:] and time.monotonic() < deadline:
            time.sleep(0.2)
        tail = hub.log_path.read_text()[log_size:]
        assert "reload refused, the hub goes on unchanged" in tail and "hub.prot" in tail, tail
        assert "After Reload" in _site_name(hub, bob)
        assert _proxy_pid(hub) == proxy_pid
        for name, before in servers.items():
            assert server_process(data_dir, name).pid == before.pid

        # servers started before the reload still stop cleanly (the new hub reaps its inherited children)
        stop_server(alice, "alice")
        assert not servers["alice"].is_running() or servers["alice"].status() != psutil.STATUS_ZOMBIE
        stop_server(bob, "bob")
