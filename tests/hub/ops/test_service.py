"""The hub as a service (issue 29, item 2): deploy/systemd/hpclab-hub.service and the hub's event lines.

The unit is checked by Debian's ``systemd-analyze verify`` (systemd need not be running); the event lines
by a real hub (root: servers under the users' own accounts) that starts, stops and refuses servers.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from hpclab_hub.ops.culling import ProfileIdleArbiter
from hpclab_hub.ops.events import event_line, parse_event
from support.hubtools import hub_yaml, login, started_hub, stop_server
from support.paths import REPO_ROOT as REPO

UNIT = REPO / "deploy" / "systemd" / "hpclab-hub.service"
SOCKET_UNIT = REPO / "deploy" / "systemd" / "hpclab-hub.socket"
INSTALLED_CLI = "/opt/hpclab/.venv/bin/hpclab-hub"


def _systemd_version() -> int:
    out = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"systemd (\d+)", out)[1])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing: make system-packages (systemd)")
def test_the_unit_passes_systemd_analyze_verify(tmp_path):
    """The unit as shipped, but for where hpclab-hub is installed (/opt/hpclab there; this venv here)."""
    here = Path(sys.executable).with_name("hpclab-hub")
    assert UNIT.read_text().count(INSTALLED_CLI) == 2  # ExecStart and ExecReload
    unit = tmp_path / "hpclab-hub.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_CLI, str(here)))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False)
    messages = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    if _systemd_version() < 254:  # Debian 12's systemd 252 does not know DelegateSubgroup= yet (docs say so)
        messages = [m for m in messages if "Unknown key 'DelegateSubgroup'" not in m]
    assert done.returncode == 0 and messages == [], done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing: make system-packages (systemd)")
def test_the_socket_unit_passes_systemd_analyze_verify_and_holds_the_default_hub_port(tmp_path):
    """deploy/systemd/hpclab-hub.socket (restarts that refuse no one) beside its service, as installed."""
    here = Path(sys.executable).with_name("hpclab-hub")
    (tmp_path / "hpclab-hub.service").write_text(UNIT.read_text().replace(INSTALLED_CLI, str(here)))
    socket_unit = tmp_path / "hpclab-hub.socket"
    socket_unit.write_text(SOCKET_UNIT.read_text())
    done = subprocess.run(["systemd-analyze", "verify", str(socket_unit)], capture_output=True, text=True, check=False)
    messages = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    if _systemd_version() < 254:
        messages = [m for m in messages if "Unknown key 'DelegateSubgroup'" not in m]
    assert done.returncode == 0 and messages == [], done.stdout + done.stderr
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(SOCKET_UNIT.read_text())
    from hpclab_hub.config.hub_model import HubSettings

    defaults = HubSettings()
    assert parser["Socket"]["ListenStream"] == f"{defaults.hub_ip}:{defaults.hub_port}"


def test_the_unit_keeps_servers_across_a_restart_and_delegates_their_cgroups():
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    service = parser["Service"]
    assert service["KillMode"] == "process"  # a stop or restart signals the hub, never the servers
    assert service["Delegate"] == "yes" and service["DelegateSubgroup"] == "hub"  # as cgroups.HUB_LEAF
    assert service["Restart"] == "on-failure"
    assert service["OOMPolicy"] == "continue"  # a user's OOM kill does not stop the hub
    assert service["ExecStart"] == f"{INSTALLED_CLI} run --config /etc/hpclab/hub.yaml"
    assert service["ExecReload"] == f"{INSTALLED_CLI} reload --config /etc/hpclab/hub.yaml"  # checks before it signals
    assert service["StateDirectory"] == "hpclab" and service["WorkingDirectory"] == "/var/lib/hpclab"
    from hpclab_hub.backends.local.cgroups import HUB_LEAF

    assert HUB_LEAF == service["DelegateSubgroup"]


def test_event_lines_are_one_line_with_user_and_profile_and_parse_back():
    line = event_line("refused", "bob", "gpu-1", "", backend="local", reason='Quota: 2 of 2 servers "running"\nstop one')
    assert "\n" not in line
    assert parse_event("[I 2025-01-01 hub] " + line) == {
        "kind": "refused", "user": "bob", "profile": "gpu-1", "server": "", "backend": "local",
        "reason": 'Quota: 2 of 2 servers "running"\nstop one',
    }
    with pytest.raises(ValueError):
        event_line("exploded", "bob", "gpu-1")


def test_the_culler_writes_a_reclaim_line_for_the_server_it_stops(capsys):
    arbiter = ProfileIdleArbiter({"gpu-1": 600})
    server = {"name": "", "url": "/user/alice/", "user_options": {"profile": "gpu-1"}}
    assert not arbiter(inactive=timedelta(seconds=599), inactive_limit=3600, server=server)
    assert capsys.readouterr().out == ""
    assert arbiter(inactive=timedelta(seconds=601), inactive_limit=3600, server=server)
    assert parse_event(capsys.readouterr().out) == {"kind": "reclaim", "user": "alice", "profile": "gpu-1", "server": "", "idle": "601"}


@pytest.mark.hub
@pytest.mark.skipif(os.geteuid() != 0, reason="servers run under the users' own accounts: the hub must run as root")
def test_the_hub_logs_one_line_per_start_stop_and_refusal(tmp_path):
    config = hub_yaml(tmp_path / "state")
    config["hub"]["log_level"] = "INFO"
    config["profiles"][0]["memory"] = "512M"
    with started_hub(tmp_path, config, accounts=("alice", "bob")) as hub:
        alice, bob = login(hub, "alice"), login(hub, "bob")
        assert alice.post_spawn("alice", "cpu-small").status_code == 302
        alice.wait_ready("alice")
        bob.post_spawn("bob", "gpu-1")  # bob is not in gpu-users: refused before anything starts
        stop_server(alice, "alice")
        events = [e for e in map(parse_event, hub.log_path.read_text().splitlines()) if e]
    assert [(e["kind"], e["user"], e["profile"]) for e in events] == [
        ("start", "alice", "cpu-small"), ("refused", "bob", "gpu-1"), ("stop", "alice", "cpu-small")]
    assert events[0]["backend"] == "local" and int(events[0]["pid"]) > 0
    assert events[1]["status"] == "403" and "gpu-1" in events[1]["reason"]
