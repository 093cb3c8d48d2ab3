"""A stop and start of the hub that refuses no one (issue 32, item 3): systemd's socket activation.

deploy/systemd/hpclab-hub.socket lets systemd hold the hub's internal API socket; the hub takes it over
(``LISTEN_FDS``/``LISTEN_PID``, hpclab_hub.reload.systemd_sockets) instead of binding its own. Here the test holds the
socket as systemd would and hands it to each hub it starts. Throughout a SIGTERM of the hub and a new start, a probe
asks the hub's API through the proxy every 0.05 s: no request is refused or fails (they wait in the socket's
backlog), and the running server's lab answers throughout (the proxy outlives the stop).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from support.hubtools import Hub, add_account, hub_yaml, login
from support.kerneltools import user_token

pytestmark = pytest.mark.hub


class Probe(threading.Thread):
    """GET ``url`` every 0.05 s until stopped; what each answer was and how long the longest wait between answers."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(daemon=True)
        self.url, self.headers = url, headers or {}
        self.failures: list[str] = []
        self.answers = 0
        self.longest_gap = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        last = time.monotonic()
        while not self.done.is_set():
            try:
                response = requests.get(self.url, headers=self.headers, timeout=30)
                if response.status_code == 200:
                    self.answers += 1
                else:
                    self.failures.append(f"{response.status_code} {response.text[:120]}")
            except requests.RequestException as error:
                self.failures.append(repr(error))
            now = time.monotonic()
            self.longest_gap, last = max(self.longest_gap, now - last), now
            time.sleep(0.05)


def test_a_stop_and_start_with_the_socket_held_refuses_no_request(tmp_path):
    workdir = tmp_path / "hub"
    config = hub_yaml(workdir / "state")
    config["hub"]["keep_servers_on_restart"] = True
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind(("127.0.0.1", config["hub"]["hub_port"]))
    listening.listen(1024)
    hub = Hub(workdir, config)
    add_account(hub, "alice")
    try:
        hub.start(listening=listening)
        assert "took over the listening socket on port" in hub.log_path.read_text(), hub.log_tail()
        alice = login(hub, "alice")
        assert alice.post_spawn("alice", "cpu-small").status_code == 302
        alice.wait_ready("alice")
        token = user_token(alice, "alice")
        api = Probe(f"{hub.url}/hub/api/")
        lab = Probe(hub.user_url("alice") + "api/status", {"Authorization": f"token {token}"})
        api.start(), lab.start()
        time.sleep(1)
        hub.stop(keep_proxy=True)  # SIGTERM, as `systemctl stop` with KillMode=process
        time.sleep(1)  # the service is down for a moment: requests queue in the socket's backlog
        hub.start(listening=listening)
        time.sleep(1)
        api.done.set(), lab.done.set()
        api.join(40), lab.join(40)
        assert api.failures == [], f"the hub's API refused or failed {len(api.failures)} requests: {api.failures[:3]}"
        assert lab.failures == [], f"the lab failed {len(lab.failures)} requests: {lab.failures[:3]}"
        assert api.answers > 20 and lab.answers > 20
        assert api.longest_gap > 1.0, "no request waited across the restart: the probe did not cover it"
        print(f"hub API: longest wait {api.longest_gap:.2f} s, lab: {lab.longest_gap:.2f} s")
        assert hub.log_path.read_text().count("took over the listening socket on port") == 2
    finally:
        hub.stop()
        hub.kill_servers()
        listening.close()
