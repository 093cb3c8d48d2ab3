"""Issue 31, item 3: the admins' page of servers (/hub/hpclab/admin), linked from JupyterHub's admin page. For a running
local server it shows the backend, the profile, the job (the server's process), the node, the time left in words (not
``job_end``'s epoch seconds) and the use measured from the server's processes under real load; below, the line of
waiting starts with each one's place and what its progress page says. Admins only; what it shows is HTML-escaped."""

from __future__ import annotations

import re
import socket
import threading
import time

import psutil
import pytest
from bs4 import BeautifulSoup

from support.hubtools import hub_yaml, login, server_process, started_hub, stop_server
from support.kerneltools import run_in_kernel

BURN = 40  # seconds a process in alice's server keeps a core busy

BURNER = f"""
import subprocess, sys
burner = subprocess.Popen([sys.executable, "-c", "import time\\nend = time.time() + {BURN}\\nwhile time.time() < end: pass"],
                          start_new_session=True)
print("started", burner.pid)
"""


def _cpu_seconds(server: psutil.Process, burner: int) -> float:
    """User and system CPU seconds of the server, everything under it and the burner (which left the server's process
    tree when its kernel ended), reaped children included."""
    total = 0.0
    for proc in [server, *server.children(recursive=True), psutil.Process(burner)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def _page(client, hub) -> BeautifulSoup:
    response = client.http.get(f"{hub.url}/hub/hpclab/admin")
    assert response.status_code == 200, response.text[:500]
    return BeautifulSoup(response.text, "html.parser")


def _cell(row, name: str) -> str:
    return " ".join(row.select_one(f".{name}").get_text(" ").split())


@pytest.mark.hub
@pytest.mark.timeout(300)
def test_the_admin_page_shows_each_servers_job_node_time_left_use_and_the_waiting_line(tmp_path):
    config = hub_yaml(tmp_path / "state")
    # a display name that would be markup if the page did not escape it
    config["profiles"][1].update({"display_name": "GPU <b>one</b>", "time_limit": "02:00:00", "spawn_timeout": 200})
    config["auth"]["groups"]["gpu-users"] = ["admin", "alice", "bob"]
    config["priorities"] = {"wait": "03:00"}
    with started_hub(tmp_path, config) as hub:
        admin, alice, bob = login(hub, "admin"), login(hub, "alice"), login(hub, "bob")
        assert bob.http.get(f"{hub.url}/hub/hpclab/admin").status_code == 403  # not an admin
        admin_page = admin.http.get(f"{hub.url}/hub/admin").text  # JupyterHub's admin page links to it
        assert BeautifulSoup(admin_page, "html.parser").select_one("#hpclab-admin-link")["href"] == "/hub/hpclab/admin"
        assert admin.http.get(f"{hub.url}/hub/hpclab/admin").text.count("No server is running") == 1

        assert alice.api("POST", "/users/alice/server", json={"profile": "gpu-1"}).status_code in (201, 202)
        alice.wait_ready("alice", timeout=180)
        waiting = threading.Thread(target=lambda: bob.api("POST", "/users/bob/server", json={"profile": "gpu-1"}))
        try:
            out, errors = run_in_kernel(alice, "alice", BURNER)
            assert "started" in out, errors
            burner = int(out.split()[-1])
            waiting.start()
            server = server_process(hub.config["hub"]["data_dir"], "alice")
            first = (time.monotonic(), _cpu_seconds(server, burner))
            _page(admin, hub)  # the first look: the use is measured from here
            time.sleep(6)
            before = _cpu_seconds(server, burner)
            text = admin.http.get(f"{hub.url}/hub/hpclab/admin").text
            after = (time.monotonic(), _cpu_seconds(server, burner))
            assert "GPU &lt;b&gt;one&lt;/b&gt;" in text and "GPU <b>one</b>" not in text
            page = BeautifulSoup(text, "html.parser")
            (row,) = page.select(".hpclab-admin-server")
            assert row["data-user"] == "alice" and _cell(row, "a-server") == "default" and _cell(row, "a-state") == "ready"
            assert _cell(row, "a-backend") == "local (local)" and _cell(row, "a-profile") == "GPU <b>one</b> (gpu-1)"
            assert _cell(row, "a-job") == f"pid {server.pid}"
            assert _cell(row, "a-node") == socket.gethostname() and _cell(row, "a-gpus") == "fake0"
            left = _cell(row, "a-time-left")
            assert re.fullmatch(r"1 h 5\d min left \(ends \d\d:\d\d UTC\)", left), left
            # the CPU time of her server's processes, as the kernel counts it, read just before and after the page
            assert before - 0.1 <= float(_cell(row, "a-cpu-seconds")) <= after[1] + 0.1, (
                before,
                after[1],
                _cell(row, "a-cpu-seconds"),
            )
            recent = re.fullmatch(r"(\d+\.\d\d) of 1 core over the last (\d+) s", _cell(row, "a-use-recent"))
            assert recent and int(recent[2]) >= 5, _cell(row, "a-use-recent")
            # the burner's share of a shared machine (a few hundredths of a core under a heavy load, nearly 1 when idle)
            measured = (after[1] - first[1]) / (after[0] - first[0])
            assert measured > 0 and abs(float(recent[1]) - measured) <= 0.3 * measured + 0.01, (recent[1], measured)
            assert re.fullmatch(r"\d+\.\d\d of 1 core since start", _cell(row, "a-use-life"))
            # the memory its cgroup holds (ServerCgroup.memory_in_use): a JupyterLab server and a kernel, tens of MiB
            memory = row.select_one(".a-memory")
            assert memory is not None and re.fullmatch(r"\d+ MiB|\d+\.\d\d GiB", memory.get_text(strip=True))
            assert 20 * 2**20 < int(memory["data-bytes"]) < 3 * 2**30, memory

            (waiter,) = page.select(".hpclab-admin-waiter")
            assert waiter["data-user"] == "bob" and _cell(waiter, "w-place") == "1" and _cell(waiter, "w-priority") == "0"
            assert _cell(waiter, "w-profile") == "GPU <b>one</b>" and _cell(waiter, "w-backend") == "local"
            assert _cell(waiter, "w-message").startswith("1st in line for a GPU on this server; its one GPU is in use")
        finally:
            stop_server(alice, "alice")
            waiting.join(timeout=120)
            if "" in bob.api("GET", "/users/bob").json()["servers"]:
                stop_server(bob, "bob")
        # a stopped server leaves the page (bob's start may have got the GPU in between)
        page = _page(admin, hub)
        assert [r["data-user"] for r in page.select(".hpclab-admin-server")] in ([], ["bob"])
