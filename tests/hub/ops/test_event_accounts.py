"""Issue 31, item 4: event accounts. ``hpclab-hub event create`` makes temporary native accounts in one group until a
date and prints their passwords once as CSV; at the end they cannot log in, their sessions end and their servers stop."""

from __future__ import annotations

import csv
import datetime as dt
import io
import sqlite3
import subprocess
import time

import pytest
import yaml

from support.hubtools import HUB_CLI, HubClient, hub_yaml, login, started_hub


def _event(config_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(HUB_CLI), "event", "create", *args, "--config", str(config_path)], capture_output=True, text=True)


def _in(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat(timespec="seconds")


@pytest.mark.slow  # seven runs of the hpclab-hub CLI: about 35 s on a busy machine
def test_bad_requests_are_refused_with_the_reason(tmp_path):
    config = hub_yaml(tmp_path / "state")
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(config))
    cases = [
        (("school", "--accounts", "3", "--until", "2020-01-01", "--group", "school"), "--until 2020-01-01 is in the past"),
        (("school", "--accounts", "0", "--until", _in(3600), "--group", "school"), "--accounts must be between 1 and 1000"),
        (("school", "--accounts", "3", "--until", "tomorrow", "--group", "school"), "--until: 'tomorrow' is not a date"),
        (("Sch ool", "--accounts", "3", "--until", _in(3600), "--group", "school"), "Sch ool-1"),
    ]
    for args, message in cases:
        refused = _event(path, *args)
        assert refused.returncode == 2 and message in refused.stderr, (args, refused.stderr)
    made = _event(path, "school", "--accounts", "2", "--until", _in(3600), "--group", "school")
    assert made.returncode == 0, made.stderr
    again = _event(path, "school", "--accounts", "3", "--until", _in(3600), "--group", "school")
    assert again.returncode == 2 and "accounts already exist: school-1, school-2" in again.stderr
    config["auth"]["type"] = "oidc"
    config["auth"]["oidc"] = {"issuer": "https://id.example.org", "client_id": "hub", "client_secret_env": "X"}
    path.write_text(yaml.safe_dump(config))
    oidc = _event(path, "school", "--accounts", "3", "--until", _in(3600), "--group", "school")
    assert (
        oidc.returncode == 2 and "event accounts are native accounts; with auth.type oidc make the event a group" in oidc.stderr
    )


@pytest.mark.hub
@pytest.mark.timeout(400)
def test_an_event_of_three_accounts_ends_they_are_locked_out_and_their_servers_stop(tmp_path):
    config = hub_yaml(tmp_path / "state")
    config["profiles"].append(
        {"slug": "school", "display_name": "School", "backend": "local", "cpus": 1, "memory": "1G", "groups": ["school"]}
    )
    with started_hub(tmp_path, config, accounts=("alice",)) as hub:
        ends = time.time() + 60
        made = _event(hub.config_path, "school", "--accounts", "3", "--until", _in(60), "--group", "school")
        assert made.returncode == 0, made.stderr
        rows = list(csv.DictReader(io.StringIO(made.stdout)))
        assert [r["username"] for r in rows] == ["school-1", "school-2", "school-3"] and all(r["group"] == "school" for r in rows)
        assert len({r["password"] for r in rows}) == 3
        clients = {}
        for row in rows:
            client = HubClient(hub)
            response = client.login(row["username"], row["password"])
            assert response.ok and "/hub/login" not in response.url, row["username"]
            clients[row["username"]] = client
        assert "School" in clients["school-3"].spawn_form()  # the event's group opens its profile
        assert login(hub, "alice").post_spawn("alice", "school").status_code == 403  # and only to its members
        for name in ("school-1", "school-2"):
            assert clients[name].post_spawn(name, "school").status_code == 302
        for name in ("school-1", "school-2"):
            clients[name].wait_ready(name)

        admin = login(hub, "admin")
        deadline = ends + 15 + 30  # the end, one check interval, and the stops
        while time.time() < deadline:
            servers = {n: admin.api("GET", f"/users/{n}").json()["servers"] for n in ("school-1", "school-2")}
            if time.time() > ends and not any(servers.values()):
                break
            time.sleep(1)
        assert time.time() >= ends and not any(servers.values()), (servers, hub.log_tail())
        # their sessions ended, and no new login
        home = clients["school-3"].http.get(f"{hub.url}/hub/home", allow_redirects=False)
        assert home.status_code == 302 and "/hub/login" in home.headers["Location"]
        again = HubClient(hub).login("school-1", rows[0]["password"])
        assert again.status_code == 403 and "was for the event school, which ended at" in again.text
        # the history says why their servers ended
        database = sqlite3.connect(f"{hub.config['hub']['data_dir']}/jupyterhub.sqlite")
        reasons = {r[0]: r[1] for r in database.execute("SELECT user, end_reason FROM hpclab_sessions")}
        assert reasons["school-1"].startswith("the event school ended at"), reasons
