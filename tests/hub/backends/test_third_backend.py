"""A third backend costs what docs/design.md says ("A third backend"): a test double (support/plain_backend.py,
``PlainServer``: the server as a plain subprocess of the hub, no account or cgroup) registered in a real hub runs a
server that the spawner starts and stops, the form offers with the backend's own availability, the home page and the
admins' page show with what the backend says of it, and the history records and hands back to the backend to settle."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import psutil
import pytest
from bs4 import BeautifulSoup
from sqlalchemy import create_engine

from support.hubtools import hub_yaml, login, started_hub, stop_server
from support.plain_backend import LABEL, PLAIN_PYTHONPATH


def _cell(row, name: str) -> str:
    return " ".join(row.select_one(f".{name}").get_text(" ").split())


@pytest.mark.hub
@pytest.mark.timeout(300)
def test_a_server_of_a_third_backend_runs_and_shows_on_every_page(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", PLAIN_PYTHONPATH)  # the hub (and its CLI) register the double at startup
    config = hub_yaml(tmp_path / "state")
    config["backends"]["elsewhere"] = {"type": "plain"}
    config["profiles"].append({"slug": "plain", "display_name": "Plain process", "backend": "elsewhere", "cpus": 1})
    with started_hub(tmp_path, config, accounts=("alice",)) as hub:
        admin, alice = login(hub, "admin"), login(hub, "alice")
        form = BeautifulSoup(alice.spawn_form(), "html.parser")  # the backend's availability on the form
        assert "runs as a plain process (test double)" in form.get_text(" "), form.get_text(" ")[:2000]

        assert alice.api("POST", "/users/alice/server", json={"profile": "plain"}).status_code in (201, 202)
        alice.wait_ready("alice", timeout=120)
        assert alice.open_lab(hub.user_url("alice")).status_code == 200  # through the proxy, into the server

        page = BeautifulSoup(admin.http.get(f"{hub.url}/hub/hpclab/admin").text, "html.parser")
        (row,) = page.select(".hpclab-admin-server")
        assert _cell(row, "a-backend") == "elsewhere (plain)" and _cell(row, "a-profile") == "Plain process (plain)"
        job = _cell(row, "a-job")
        assert job.startswith("pid ") and _cell(row, "a-node") == socket.gethostname()
        server = psutil.Process(int(job.split()[1]))
        assert "jupyterhub-singleuser" in " ".join(server.cmdline())
        assert server.ppid() == hub.proc.pid  # a plain child of the hub (hpclab-hub run execs JupyterHub)
        assert float(_cell(row, "a-cpu-seconds")) > 0  # PlainServer.measure: the server's own CPU time

        home = BeautifulSoup(alice.http.get(f"{hub.url}/hub/home").text, "html.parser")
        (line,) = home.select("#hpclab-servers .hpclab-server-row")
        cells = [" ".join(td.get_text(" ").split()) for td in line.select("td")]
        assert cells[1] == "Plain process" and cells[3] == f"elsewhere ({LABEL})", cells
        assert cells[4] == f"running ({job})", cells

        stop_server(alice, "alice")
        assert not psutil.pid_exists(server.pid) or server.status() == psutil.STATUS_ZOMBIE
        engine = create_engine(f"sqlite:///{Path(config['hub']['data_dir']) / 'jupyterhub.sqlite'}")
        with engine.connect() as db:
            (history,) = db.exec_driver_sql("SELECT id, backend, job_id, ended FROM hpclab_sessions").fetchall()
        assert history[1:3] == ("elsewhere", str(server.pid)) and history[3] is not None
        settled = Path(config["hub"]["data_dir"]) / f"settled-{history[0]}"  # PlainServer.settle, called by the hub
        deadline = time.monotonic() + 10
        while not settled.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert settled.read_text() == str(server.pid)
