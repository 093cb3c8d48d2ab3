"""The hub database's schema: what this release knows, upgrading to it, and backups (issue 29, item 5).

JupyterHub keeps its schema version in the ``alembic_version`` table. A hub must not start on a database whose
version it does not know: an older one needs ``hpclab-hub upgrade`` (JupyterHub's ``upgrade-db``: a copy of a
SQLite file first, then the migrations), a newer one (made by a later release) needs that release or the
backup from before it.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from hpclab_hub.config import Deployment


@dataclass(frozen=True)
class SchemaStatus:
    revision: str | None  # None: no database yet (a first start creates it)
    head: str
    known: tuple[str, ...]

    @property
    def current(self) -> bool:
        return self.revision is None or self.revision == self.head

    @property
    def older(self) -> bool:
        return self.revision is not None and self.revision in self.known and self.revision != self.head


def _scripts():
    from alembic.script import ScriptDirectory
    from jupyterhub import dbutil

    with dbutil._temp_alembic_ini("sqlite://") as ini:  # the script folder only; no database is opened
        from alembic.config import Config

        return ScriptDirectory.from_config(Config(ini))


def schema_status(db_url: str) -> SchemaStatus:
    """The database's JupyterHub schema revision against the ones this installation's JupyterHub knows."""
    from sqlalchemy import create_engine, inspect, text

    scripts = _scripts()
    known = tuple(rev.revision for rev in scripts.walk_revisions())
    head = scripts.get_current_head()
    if db_url.startswith("sqlite:///") and not Path(db_url.split(":///", 1)[1]).exists():
        return SchemaStatus(None, head, known)
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                tables = inspect(connection).get_table_names()
                return SchemaStatus(None if not tables else "(none)", head, known)
            row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
    finally:
        engine.dispose()
    return SchemaStatus(row[0] if row else None, head, known)


def start_refusal(deployment: Deployment, config_path: str) -> str | None:
    """Why the hub must not start on its database (None: it may)."""
    import jupyterhub

    url = deployment.hub.database_url
    status = schema_status(url)
    if status.current:
        return None
    where = _shown(url)
    if status.older:
        return (
            f"the database {where} has JupyterHub schema {status.revision}, from an earlier release; this one needs "
            f'{status.head}. Back it up (docs/admin-guide.md, "Backups"), then run: hpclab-hub upgrade --config {config_path}'
        )
    return (
        f"the database {where} has JupyterHub schema {status.revision}, which this release (JupyterHub "
        f"{jupyterhub.__version__}, schema {status.head}) does not know: it was made or upgraded by a later release. "
        "Start that release, or restore the backup taken before the upgrade."
    )


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def upgrade(deployment: Deployment, log: logging.Logger) -> tuple[str | None, str]:
    """JupyterHub's upgrade-db on the hub's database (a SQLite file is copied first); returns (before, after)."""
    from jupyterhub import dbutil

    url = deployment.hub.database_url
    before = schema_status(url)
    if before.revision is not None and not before.older and not before.current:
        raise ValueError(start_refusal(deployment, "<yaml>"))
    if before.current:
        return before.revision, before.head
    # as dbutil.upgrade_if_needed, but through alembic's Python API: JupyterHub's runs an `alembic` program found on
    # PATH, which a service's PATH (or a venv not activated) does not have
    from alembic import command
    from alembic.config import Config

    if url.startswith("sqlite:///"):
        dbutil.backup_db_file(url.split(":///", 1)[1], log=log)
    log.info("Upgrading %s from %s to %s", _shown(url), before.revision, before.head)
    with dbutil._temp_alembic_ini(url) as ini:
        command.upgrade(Config(ini), "head")
    return before.revision, schema_status(url).revision or before.head


def backup(deployment: Deployment, config_path: Path, dest: Path) -> list[str]:
    """Copy what a restore needs into ``dest``; returns the names copied (a PostgreSQL/MySQL database: not copied).

    Besides the hub's state and the YAML: ``hub.env`` and ``tls/`` beside the YAML (/etc/hpclab), where the shipped
    systemd unit and nginx configuration keep the service's variables and nginx's certificate and key."""
    hub = deployment.hub
    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(0o700)
    copied = []
    url = hub.database_url
    if url.startswith("sqlite:///"):
        source = sqlite3.connect(url.split(":///", 1)[1])
        target = sqlite3.connect(dest / "jupyterhub.sqlite")
        with target:
            source.backup(target)  # a consistent copy, even while the hub writes
        source.close()
        target.close()
        copied.append("jupyterhub.sqlite")
    files = {
        "jupyterhub_cookie_secret": hub.cookie_secret_path,
        "login-guard.json": hub.data_dir / "login-guard.json",
        "hub.yaml": config_path,
    }
    for name, path in (("ssl_cert", hub.ssl_cert), ("ssl_key", hub.ssl_key)):
        if path:
            files[f"{name}{Path(path).suffix or '.pem'}"] = Path(path)
    # beside the YAML, where the shipped units put them: the service's variables (deploy/systemd/hpclab-hub.service's
    # EnvironmentFile: the admin password, client secrets) and nginx's certificate and key (deploy/nginx/hpclab.conf)
    etc = config_path.resolve().parent
    files["hub.env"] = etc / "hub.env"
    if (etc / "tls").is_dir():
        (dest / "tls").mkdir(mode=0o700, exist_ok=True)
        files.update({f"tls/{entry.name}": entry for entry in sorted((etc / "tls").iterdir()) if entry.is_file()})
    for name, path in files.items():
        if Path(path).exists():
            shutil.copy2(path, dest / name)
            (dest / name).chmod(0o600)
            copied.append(name)
    return copied
