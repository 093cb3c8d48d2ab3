"""Issue 31, item 2: usage and history. Every server's life is a row in the hub's database; users see their past
sessions on the home page and start any again with its choices filled in and editable; admins get
``hpclab-hub usage`` per group or user, and /hub/metrics the same totals."""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import subprocess
import time
from types import SimpleNamespace
from urllib.parse import parse_qs, urljoin, urlparse

import pytest
from bs4 import BeautifulSoup
from sqlalchemy.orm import Session as DBSession

from hpclab_hub.cli.usage import parse_date, report
from hpclab_hub.ops import history
from hpclab_hub.spawner import history_record
from support.hubtools import HUB_CLI, hub_yaml, login, server_process, started_hub, stop_server


# --- the sums, on real rows in a real SQLite database ----------------------------------------------------


def _session(**fields) -> history.Session:
    base = dict(
        id=1,
        user="ana",
        groups=("cms",),
        server="",
        profile="p",
        options={},
        backend="local",
        job_id="",
        cpus=1,
        memory=0,
        gpus=0,
        started=0.0,
        ended=3600.0,
        end_reason="stopped",
    )
    return history.Session(**{**base, **fields})


def test_usage_adds_up_core_and_gpu_hours_inside_the_period():
    sessions = [
        _session(cpus=4, gpus=1, started=0, ended=7200),  # 2 h, half of it before the period
        _session(user="ben", groups=("cms", "students"), cpus=2, started=3600, ended=5400),  # 0.5 h
        _session(user="cy", groups=(), cpus=1, started=3600, ended=7200),
    ]
    by_group = {row.key: row for row in history.usage(sessions, "group", since=3600, until=7200)}
    assert set(by_group) == {"cms", "students", "(none)"}
    assert by_group["cms"].sessions == 2 and by_group["cms"].hours == pytest.approx(1.5)
    assert by_group["cms"].core_hours == pytest.approx(4 * 1 + 2 * 0.5) and by_group["cms"].gpu_hours == pytest.approx(1)
    assert by_group["students"].core_hours == pytest.approx(1) and by_group["(none)"].core_hours == pytest.approx(1)
    by_user = {row.key: row.core_hours for row in history.usage(sessions, "user", since=3600, until=7200)}
    assert by_user == pytest.approx({"ana": 4, "ben": 1, "cy": 1})
    text = report(history.usage(sessions, "user", 3600, 7200), "user", "csv", 3600, 7200)
    assert text.splitlines() == [
        "user,sessions,hours,core_hours,gpu_hours",
        "ana,1,1.0,4.0,1.0",
        "ben,1,0.5,1.0,0.0",
        "cy,1,1.0,1.0,0.0",
    ]
    with pytest.raises(ValueError, match="--by must be group or user"):
        history.usage(sessions, "profile")


def test_dates_are_read_as_utc_and_bad_ones_say_how_to_write_them():
    assert parse_date("1970-01-02", "--since") == 86400
    assert parse_date("1970-01-01T01:00+01:00", "--since") == 0
    with pytest.raises(ValueError, match=r"--since: 'last week' is not a date; write it as 2026-12-01"):
        parse_date("last week", "--since")


def test_rows_open_at_start_and_close_at_the_end(tmp_path):
    engine = history.engine_for(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    with DBSession(engine) as db:
        history.record_start(
            db,
            user="ana",
            groups={"cms"},
            server="",
            profile="p",
            options={"profile": "p", "cpus": 2},
            backend="local",
            job_id="123",
            cpus=2,
            memory=2**30,
            gpus=1,
            started=1000.0,
        )
        assert history.past_sessions(db, "ana") == []  # still running: not past
        assert history.record_end(db, "ana", "", "stopped", 4600.0) == 1
        assert history.record_end(db, "ana", "", "stopped again", 5000.0) == 0  # nothing open any more
        (past,) = history.past_sessions(db, "ana")
        assert (past.options, past.cpus, past.gpus, past.ended, past.end_reason) == (
            {"profile": "p", "cpus": 2},
            2,
            1,
            4600.0,
            "stopped",
        )
        assert past.hours() == 1.0


def test_hub_history_false_records_no_server_life(tmp_path):
    """hub.history: false (the YAML) leaves the table alone at a server's start and end; true records it."""
    engine = history.engine_for(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    with DBSession(engine) as db:
        for recording in (False, True):
            spawner = SimpleNamespace(  # what the two hooks read of HPCLabSpawner, on a real database session
                deployment=SimpleNamespace(hub=SimpleNamespace(history=recording), backends={}),
                db=db, user=SimpleNamespace(name="ana"), name="", user_options={"profile": "p"}, end_reason="stopped",
                profile=SimpleNamespace(slug="p", backend="local", cpus=1, memory=0, gpus=0), user_groups=set,
                log=logging.getLogger("test"), _log_name="ana",
            )
            history_record.record_start(spawner, {"pid": 4242})
            history_record.record_end(spawner)
            assert len(history.past_sessions(db, "ana")) == int(recording)


# --- a real hub: history on the home page, relaunch with an edited choice, the report and the metrics --------


@pytest.mark.hub
@pytest.mark.timeout(400)
def test_a_finished_server_is_in_history_and_starts_again_with_an_edited_choice(tmp_path):
    config = hub_yaml(tmp_path / "state")
    config["profiles"][0]["choices"] = {"cpus": [1, 2]}
    with started_hub(tmp_path, config) as hub:
        alice, bob, admin = login(hub, "alice"), login(hub, "bob"), login(hub, "admin")
        assert alice.api("POST", "/users/alice/server", json={"profile": "cpu-small", "cpus": 1}).status_code in (201, 202)
        alice.wait_ready("alice")
        assert bob.post_spawn("bob", "cpu-small").status_code == 302
        bob.wait_ready("bob")
        time.sleep(2)
        stop_server(alice, "alice")
        stop_server(bob, "bob")

        home = BeautifulSoup(alice.http.get(f"{hub.url}/hub/home").text, "html.parser")
        rows = home.select("#hpclab-history tr.hpclab-history-row")
        assert len(rows) == 1, home.select_one("#hpclab-history")  # alice's own, not bob's
        cells = [td.get_text(strip=True) for td in rows[0].find_all("td")]
        assert cells[2:7] == ["default", "CPU small", "1 core, 3G", "local", "stopped"], cells
        link = rows[0].select_one("a.hpclab-history-relaunch")["href"]
        assert parse_qs(urlparse(link).query) == {"opt-profile": ["cpu-small"], "opt-cpus": ["1"]}

        # the link only fills the form: alice changes the cores to 2 and presses Start
        page = alice.http.get(urljoin(hub.url, link), allow_redirects=False)
        assert page.status_code == 200 and 'id="hpclab-link-note"' in page.text
        form = BeautifulSoup(page.text, "html.parser").find("form", id="spawn_form")
        cores = form.find("select", attrs={"name": "cpu-small--cpus"})
        assert cores.find("option", selected=True)["value"] == "1"  # filled in from the history
        fields = {"_xsrf": alice._xsrf(page.text), "profile": "cpu-small", "cpu-small--cpus": "2"}
        assert alice.http.post(urljoin(page.url, form.get("action")), data=fields, allow_redirects=False).status_code == 302
        try:
            server = alice.wait_ready("alice")
            assert server["user_options"] == {"profile": "cpu-small", "cpus": 2}
            cores = server_process(hub.config["hub"]["data_dir"], "alice").cpu_affinity()
            assert len(cores) == min(2, len(os.sched_getaffinity(0)))
        finally:
            stop_server(alice, "alice")
        rows = BeautifulSoup(alice.http.get(f"{hub.url}/hub/home").text, "html.parser").select(
            "#hpclab-history tr.hpclab-history-row"
        )
        assert [row.find_all("td")[4].get_text(strip=True) for row in rows] == ["2 cores, 3G", "1 core, 3G"]  # newest first

        # the report sums what the database holds, and the metrics say the same
        database = sqlite3.connect(f"{hub.config['hub']['data_dir']}/jupyterhub.sqlite")
        stored = database.execute("SELECT user, groups, cpus, gpus, started, ended FROM hpclab_sessions").fetchall()
        assert sorted(r[0] for r in stored) == ["alice", "alice", "bob"] and all(r[5] for r in stored)
        expected_by_user = {u: sum((e - s) / 3600 * c for (uu, _, c, _, s, e) in stored if uu == u) for u in ("alice", "bob")}
        out = subprocess.run(
            [
                str(HUB_CLI),
                "usage",
                "--config",
                str(hub.config_path),
                "--by",
                "user",
                "--format",
                "json",
                "--since",
                "2000-01-01",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        by_user = {row["user"]: row for row in json.loads(out)["rows"]}
        assert by_user["alice"]["sessions"] == 2 and by_user["bob"]["sessions"] == 1
        for user, core_hours in expected_by_user.items():
            assert by_user[user]["core_hours"] == pytest.approx(core_hours, abs=1e-4)
        out = subprocess.run(
            [str(HUB_CLI), "usage", "--config", str(hub.config_path), "--by", "group", "--format", "csv"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        groups = {line.split(",")[0]: line.split(",") for line in out.splitlines()[1:]}
        assert set(groups) == {"gpu-users", "(none)"}  # alice is in gpu-users, bob in no group
        assert float(groups["gpu-users"][3]) == pytest.approx(expected_by_user["alice"], abs=1e-4)
        metrics = admin.http.get(f"{hub.url}/hub/metrics").text
        found = re.search(r'^hpclab_core_hours_total\{group="gpu-users"\} (\S+)$', metrics, re.M)
        assert found and float(found.group(1)) == pytest.approx(expected_by_user["alice"], abs=1e-4), metrics[-2000:]
        assert re.search(r'^hpclab_sessions_total\{group="\(none\)"\} 1\.0$', metrics, re.M)
        refused = subprocess.run(
            [str(HUB_CLI), "usage", "--config", str(hub.config_path), "--since", "2026-13-01"], capture_output=True, text=True
        )
        assert refused.returncode == 2 and "--since: '2026-13-01' is not a date" in refused.stderr
