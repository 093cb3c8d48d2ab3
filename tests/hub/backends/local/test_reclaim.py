"""Issue 31: reclaim under pressure, by measured use, on the CPU path. With one (fake) GPU held by alice and bob waiting
for it: while a process in alice's server keeps a core busy she keeps the GPU; once her server is idle by measure,
she is warned (the new end on her walltime API, notebooks saved), then reclaimed, and bob's start gets the GPU."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from hpclab_hub.ops.events import parse_event
from support.hubtools import hub_yaml, login, started_hub, stop_server
from support.kerneltools import run_in_kernel

BUSY = 45  # seconds the load in alice's server lasts

BURNER = f"""
import subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time\\nend = time.time() + {BUSY}\\nwhile time.time() < end: pass"],
                 start_new_session=True)
print("started")
"""


def _reclaims(hub) -> list[dict]:
    events = (parse_event(line) for line in hub.log_path.read_text(errors="replace").splitlines())
    return [e for e in events if e and e["kind"] == "reclaim"]


@pytest.mark.hub
@pytest.mark.timeout(420)
def test_a_busy_holder_keeps_its_gpu_and_an_idle_one_is_warned_then_reclaimed(tmp_path):
    config = hub_yaml(tmp_path / "state")
    config["backends"]["local"]["poll_interval"] = 2
    config["profiles"][1].update({"spawn_timeout": 400})
    config["auth"]["groups"]["gpu-users"] = ["admin", "alice", "bob"]
    config["priorities"] = {"wait": "06:00", "reclaim": {"enabled": True, "window": "00:20", "below": 0.05, "grace": "00:15"}}
    with started_hub(tmp_path, config) as hub:
        alice, bob = login(hub, "alice"), login(hub, "bob")
        assert alice.api("POST", "/users/alice/server", json={"profile": "gpu-1"}).status_code in (201, 202)
        alice.wait_ready("alice")
        out, errors = run_in_kernel(alice, "alice", BURNER)
        assert "started" in out, errors
        busy_until = time.time() + BUSY
        answer: dict[str, int] = {}
        waiting = threading.Thread(
            target=lambda: answer.setdefault("bob", bob.api("POST", "/users/bob/server", json={"profile": "gpu-1"}).status_code)
        )
        waiting.start()
        try:
            # busy: measured over the 20 s window (and more), alice keeps her GPU and is never warned
            time.sleep(max(0, busy_until - time.time() - 3))
            assert _reclaims(hub) == [], _reclaims(hub)
            assert alice.api("GET", "/users/alice").json()["servers"][""]["ready"]
            assert bob.api("GET", "/users/bob").json()["servers"][""]["pending"] == "spawn"

            # idle from now on: after the window she is warned, her end moves to the grace's end
            deadline = busy_until + 20 + 20
            while time.time() < deadline and not _reclaims(hub):
                time.sleep(1)
            (warned,) = _reclaims(hub)
            assert warned["user"] == "alice" and warned["stage"] == "warned" and float(warned["cpu"]) < 0.05, warned
            end = alice.api("GET", "/hpclab/servers/alice").json()["end"]
            assert time.time() < end <= time.time() + 15, end
            # then she is stopped and bob's start gets the GPU
            bob.wait_ready("bob", timeout=60)
            assert "" not in alice.api("GET", "/users/alice").json()["servers"]
            waiting.join()
            assert answer["bob"] in (201, 202)
            home = alice.http.get(f"{hub.url}/hub/home").text
            assert "Your last session ended: its GPU was reclaimed for a waiting start" in home
            database = sqlite3.connect(f"{hub.config['hub']['data_dir']}/jupyterhub.sqlite")
            (reason,) = database.execute("SELECT end_reason FROM hpclab_sessions WHERE user = 'alice'").fetchone()
            assert reason.startswith("its GPU was reclaimed for a waiting start: it used 0.0"), reason
        finally:
            waiting.join(timeout=120)
            for name, client in (("alice", alice), ("bob", bob)):
                if "" in client.api("GET", f"/users/{name}").json()["servers"]:
                    stop_server(client, name)
