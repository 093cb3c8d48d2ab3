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


def test_use_is_the_gpus_busy_fraction_where_nvml_measured_them_else_cpu():
    """Where NVML answered throughout the window the GPUs' busy fraction decides (gpu_below); a look without it (no
    driver, an unknown GPU) restarts the GPU measure and CPU use decides (below per core)."""
    from types import SimpleNamespace

    from hpclab_hub.backends.local.reclaim import Watch

    settings = SimpleNamespace(below=0.05, gpu_below=0.1)
    watch = Watch()
    for t, cpu, gpu in ((0, 0.0, 0.02), (10, 0.1, 0.04), (20, 0.2, 0.06)):
        watch.add(float(t), cpu, keep=100, gpu_busy=gpu)
    assert watch.measured(0.0, 2, settings) == pytest.approx((0.04, 0.1, "gpu"))  # busy 4 % < 10 %: idle by GPU
    watch.add(30.0, 10.2, keep=100, gpu_busy=None)  # NVML gave no answer this time
    used, threshold, unit = watch.measured(0.0, 2, settings)
    assert unit == "cpu" and used == pytest.approx(10.2 / 30) and threshold == pytest.approx(0.1)


def test_without_an_nvidia_driver_nvml_is_not_used_and_says_why():
    from hpclab.lab_features import gpu_driver_problem
    from hpclab_hub.backends.local.gpu_use import gpu_busy, nvml_available

    if nvml_available():
        pytest.skip("an NVIDIA driver is present: test_nvml_measures_a_real_gpu covers this machine")
    assert gpu_busy(["0"]) is None and gpu_busy(["fake0"]) is None
    assert "NVML" in gpu_driver_problem(), gpu_driver_problem()


def test_nvml_measures_a_real_gpu():
    """The NVML path on a machine with an NVIDIA GPU (none here or on CI): its index answers a busy fraction in 0-1,
    and a GPU NVML does not know answers None (CPU use decides for it)."""
    from hpclab_hub.backends.local.gpu_use import gpu_busy, nvml_available

    if not nvml_available():
        pytest.skip("no NVIDIA driver (NVML cannot load): the GPU path is checked where a GPU machine is lent")
    busy = gpu_busy(["0"])
    assert busy is not None and 0.0 <= busy <= 1.0
    assert gpu_busy(["fake0"]) is None
