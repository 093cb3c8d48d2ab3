"""The hub's own id, written into each SLURM job's comment (``hpclab:<id>:<profile>``) to find its orphan jobs.

It is kept in the hub's database (table ``hpclab_hub``), so it survives a changed database URL (a rotated
password, a new host name) and a moved data folder, and the YAML may set it (``hub.id``: several hubs that
share one database would otherwise share an id). Hubs before this kept no id: theirs was a hash of the
database URL. A hub that finds no stored id adopts that hash once where it is present (jobs in the queue
carry it, or servers in the database have jobs), so a running deployment keeps its id and its jobs; a new
hub draws a random one.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.orm import Session

TABLE = "hpclab_hub"


def legacy_hub_id(database_url: str) -> str:
    """The id hubs used before ids were stored: the first 8 hex digits of the database URL's SHA-1."""
    return hashlib.sha1(database_url.encode()).hexdigest()[:8]


def stored_hub_id(db: Session) -> str | None:
    """The id kept in the database, or None (no table yet, or no row)."""
    db.execute(text(f"CREATE TABLE IF NOT EXISTS {TABLE} (name VARCHAR(64) PRIMARY KEY, value VARCHAR(255) NOT NULL)"))
    row = db.execute(text(f"SELECT value FROM {TABLE} WHERE name = 'hub_id'")).first()
    db.commit()
    return str(row[0]) if row else None


def store_hub_id(db: Session, hub_id: str) -> None:
    db.execute(text(f"INSERT INTO {TABLE} (name, value) VALUES ('hub_id', :value)"), {"value": hub_id})
    db.commit()


def ensure_hub_id(
    db: Session, database_url: str, job_comments: Iterable[str], servers_with_jobs: bool, configured: str | None = None
) -> tuple[str, str]:
    """(the hub's id, where it came from: 'yaml', 'database', 'adopted' or 'new'), storing a new or adopted one.

    ``job_comments``: comments of the jobs SLURM lists now; ``servers_with_jobs``: the database has servers
    whose state names a job. Either means the hub ran before under the old id, which is then adopted.
    """
    if configured:
        return configured, "yaml"
    stored = stored_hub_id(db)
    if stored:
        return stored, "database"
    old = legacy_hub_id(database_url)
    present = servers_with_jobs or any(comment.startswith(f"hpclab:{old}:") for comment in job_comments)
    hub_id, origin = (old, "adopted") if present else (secrets.token_hex(4), "new")
    store_hub_id(db, hub_id)
    return hub_id, origin
