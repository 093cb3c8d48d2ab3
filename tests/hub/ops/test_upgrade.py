"""Upgrades and backups (issue 29, item 5): `hpclab-hub upgrade`, the refusal of an unknown schema, backup and restore.

From tests/hub/ops/data/release-db (a database written by the previous release; its README says how), copied into a
fresh data folder for each test. The hubs are real and serve the stored users afterwards.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from support.hubtools import HUB_CLI, Hub, hub_yaml, login
from support.paths import REPO_ROOT as REPO

RELEASE_DB = Path(__file__).resolve().parent / "data" / "release-db" / "jupyterhub.sqlite"
HEAD = "f460b0348206"  # JupyterHub 6.1's schema, what the stored database has
JUPYTERHUB_4 = "4621fec11365"  # the schema JupyterHub 4 wrote (before service timeouts, PKCE, user info, display names)

pytestmark = [pytest.mark.hub, pytest.mark.skipif(os.geteuid() != 0, reason="the hub runs as root (local servers)")]


def _hub_from_release_db(workdir: Path) -> Hub:
    config = hub_yaml(workdir / "state")
    config["profiles"][0]["memory"] = "512M"
    state = workdir / "state"
    state.mkdir(parents=True)
    state.chmod(0o700)
    shutil.copy(RELEASE_DB, state / "jupyterhub.sqlite")
    return Hub(workdir, config)


def _cli(hub: Hub, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(HUB_CLI), *args, "--config", str(hub.config_path)], capture_output=True, text=True,
                          timeout=120, check=False)


def _revision(hub: Hub) -> str:
    with sqlite3.connect(Path(hub.config["hub"]["data_dir"]) / "jupyterhub.sqlite") as db:
        return db.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def _serves_the_stored_users(hub: Hub) -> None:
    hub.start()
    try:
        admin = login(hub, "admin")
        assert {u["name"] for u in admin.api("GET", "/users").json()} == {"admin", "alice", "bob"}
        login(hub, "alice")  # her password, from the stored database
    finally:
        hub.stop()
        hub.kill_servers()


def test_the_release_database_is_current_and_upgrade_says_so(tmp_path):
    hub = _hub_from_release_db(tmp_path)
    done = _cli(hub, "upgrade")
    assert done.returncode == 0 and f"the database is current (JupyterHub schema {HEAD})" in done.stdout, done.stderr
    _serves_the_stored_users(hub)


def test_an_older_schema_is_refused_at_start_then_upgraded_and_serves_its_users(tmp_path):
    hub = _hub_from_release_db(tmp_path)
    from alembic import command
    from alembic.config import Config
    from jupyterhub import dbutil

    database = Path(hub.config["hub"]["data_dir"]) / "jupyterhub.sqlite"
    with dbutil._temp_alembic_ini(f"sqlite:///{database}") as ini:  # JupyterHub's own down-migrations
        command.downgrade(Config(ini), JUPYTERHUB_4)
    assert _revision(hub) == JUPYTERHUB_4

    refused = subprocess.run([str(HUB_CLI), "run", "--config", str(hub.config_path)], capture_output=True, text=True,
                             timeout=60, check=False)
    assert refused.returncode == 1
    assert f"has JupyterHub schema {JUPYTERHUB_4}, from an earlier release" in refused.stderr
    assert f"hpclab-hub upgrade --config {hub.config_path}" in refused.stderr

    done = _cli(hub, "upgrade")
    assert done.returncode == 0, done.stderr
    assert f"upgraded from JupyterHub schema {JUPYTERHUB_4} to {HEAD}" in done.stdout
    assert _revision(hub) == HEAD
    assert [p.name for p in database.parent.glob("jupyterhub.sqlite.*")], "no copy of the SQLite file before the upgrade"
    _serves_the_stored_users(hub)


def test_a_schema_from_a_later_release_is_refused_with_the_reason(tmp_path):
    hub = _hub_from_release_db(tmp_path)
    with sqlite3.connect(Path(hub.config["hub"]["data_dir"]) / "jupyterhub.sqlite") as db:
        db.execute("UPDATE alembic_version SET version_num = 'a0b1c2d3e4f5'")
    refused = subprocess.run([str(HUB_CLI), "run", "--config", str(hub.config_path)], capture_output=True, text=True,
                             timeout=60, check=False)
    assert refused.returncode == 1
    assert "schema a0b1c2d3e4f5, which this release" in refused.stderr and "does not know" in refused.stderr
    not_upgraded = _cli(hub, "upgrade")
    assert not_upgraded.returncode == 1 and "does not know" in not_upgraded.stderr
    assert _revision(hub) == "a0b1c2d3e4f5"  # untouched


def test_a_backup_restored_into_a_new_data_dir_serves_the_same_users(tmp_path):
    old = _hub_from_release_db(tmp_path / "old")
    old.start()
    try:
        login(old, "alice")
        etc = old.config_path.parent  # as /etc/hpclab: the unit's variables and nginx's certificate beside the YAML
        (etc / "hub.env").write_text("HPCLAB_ADMIN_PASSWORD=first-start-only\n")
        (etc / "tls").mkdir()
        (etc / "tls" / "hub-wildcard.crt").write_text("certificate\n")
        (etc / "tls" / "hub-wildcard.key").write_text("key\n")
        backup = tmp_path / "backup"
        done = _cli(old, "backup", str(backup))  # while the hub runs: SQLite's online backup
        assert done.returncode == 0, done.stderr
    finally:
        old.stop()
        old.kill_servers()
    assert {p.name for p in backup.iterdir()} >= {"jupyterhub.sqlite", "jupyterhub_cookie_secret", "hub.yaml", "hub.env", "tls"}
    for name in ("hub.env", "tls/hub-wildcard.crt", "tls/hub-wildcard.key"):
        assert (backup / name).read_bytes() == (etc / name).read_bytes() and (backup / name).stat().st_mode & 0o777 == 0o600
    assert "hub.env" in done.stdout and "tls/hub-wildcard.key" in done.stdout
    assert oct(backup.stat().st_mode & 0o777) == "0o700"

    # the restore, as docs/admin-guide.md says: a new data folder (0700), the three state files into it, the YAML's data_dir
    new_state = tmp_path / "new" / "state"
    new_state.mkdir(parents=True)
    new_state.chmod(0o700)
    for name in ("jupyterhub.sqlite", "jupyterhub_cookie_secret", "login-guard.json"):
        if (backup / name).exists():
            shutil.copy2(backup / name, new_state / name)
    config = hub_yaml(new_state)
    config["profiles"][0]["memory"] = "512M"
    new = Hub(tmp_path / "new", config)
    assert (new_state / "jupyterhub_cookie_secret").read_bytes() == (Path(old.config["hub"]["data_dir"]) / "jupyterhub_cookie_secret").read_bytes()
    _serves_the_stored_users(new)
