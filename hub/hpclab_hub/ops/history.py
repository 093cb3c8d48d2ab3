"""Every server's life in the hub's database (table ``hpclab_sessions``): who, which profile and resources, where, when,
why it ended, and the core-hours and GPU-hours it used; the usage report and the metrics add these up.

A row is written when a server has started (HPCLabSpawner.start) and completed when it ends, however it ends
(JupyterHub's post-stop hook: stopped by its user, an admin or the culler, its wall time, or gone on its own). A
row still open counts up to now. Hours are the resources the server held (its cores and GPUs, as its profile and
the user's choices gave them) times its wall-clock life: what it kept from others, not what it used.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine

METADATA = MetaData()
SESSIONS = Table(
    "hpclab_sessions",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user", String(255), nullable=False, index=True),
    Column("groups", Text, nullable=False, default=""),  # the user's groups at start, comma-separated
    Column("server", String(255), nullable=False, default=""),
    Column("profile", String(255), nullable=False),
    Column("options", Text, nullable=False, default="{}"),  # the user_options it started with (JSON): relaunch fills them in
    Column("backend", String(255), nullable=False),
    Column("job_id", String(64), nullable=False, default=""),  # SLURM's job id, or the local server's pid
    Column("cpus", Integer, nullable=False),
    Column("memory", BigInteger, nullable=False, default=0),  # bytes of its memory limit (0: none; past 2 GiB on PostgreSQL)
    Column("gpus", Integer, nullable=False, default=0),
    Column("started", Float, nullable=False, index=True),  # epoch seconds
    Column("ended", Float, nullable=True),
    Column("end_reason", Text, nullable=False, default=""),
    # 'sacct': started, ended, cpus and gpus are SLURM's accounting of the job (backends/slurm/accounting.py)
    Column("accounted", String(16), nullable=False, default="", server_default=""),
)

_READY: set[int] = set()


def ensure_table(bind: Any) -> None:
    """Create the table once per database (it is the hub's own, beside JupyterHub's)."""
    engine = bind if isinstance(bind, Engine) else getattr(bind, "engine", None) or bind.get_bind()
    if id(engine) not in _READY:
        METADATA.create_all(engine, checkfirst=True)
        if "accounted" not in {c["name"] for c in inspect(engine).get_columns(SESSIONS.name)}:  # a table of before it
            with engine.begin() as connection:
                connection.execute(text("ALTER TABLE hpclab_sessions ADD COLUMN accounted VARCHAR(16) NOT NULL DEFAULT ''"))
        _READY.add(id(engine))


@dataclass(frozen=True)
class Session:
    """One server's life, as the home page and the report read it."""

    id: int
    user: str
    groups: tuple[str, ...]
    server: str
    profile: str
    options: dict[str, Any]
    backend: str
    job_id: str
    cpus: int
    memory: int
    gpus: int
    started: float
    ended: float | None
    end_reason: str
    accounted: str = ""  # 'sacct': SLURM's numbers

    def hours(self, since: float = 0.0, until: float | None = None) -> float:
        """Wall-clock hours of its life within [since, until] (until: now for a running one)."""
        end = self.ended if self.ended is not None else time.time()
        if until is not None:
            end = min(end, until)
        return max(0.0, end - max(self.started, since)) / 3600

    @classmethod
    def from_row(cls, row: Any) -> Session:
        m = row._mapping
        return cls(
            m["id"],
            m["user"],
            tuple(g for g in m["groups"].split(",") if g),
            m["server"],
            m["profile"],
            json.loads(m["options"] or "{}"),
            m["backend"],
            m["job_id"],
            int(m["cpus"]),
            int(m["memory"]),
            int(m["gpus"]),
            float(m["started"]),
            m["ended"],
            m["end_reason"],
            m["accounted"],
        )


def record_start(
    db: Any,
    *,
    user: str,
    groups: Iterable[str],
    server: str,
    profile: str,
    options: dict[str, Any],
    backend: str,
    job_id: str,
    cpus: int,
    memory: int,
    gpus: int,
    started: float | None = None,
) -> None:
    """A server has started: its row, open until it ends (an open row of the same server left by a crash is closed)."""
    ensure_table(db)
    now = time.time() if started is None else started
    record_end(db, user, server, "the hub lost track of it (a restart while it ended?)", now)
    db.execute(
        SESSIONS.insert().values(
            user=user,
            groups=",".join(sorted(groups)),
            server=server,
            profile=profile,
            options=json.dumps(options, sort_keys=True),
            backend=backend,
            job_id=job_id,
            cpus=cpus,
            memory=memory,
            gpus=gpus,
            started=now,
            ended=None,
            end_reason="",
        )
    )
    db.commit()


def record_end(db: Any, user: str, server: str, reason: str, ended: float | None = None) -> int:
    """The server has ended: close its open row with why; the number of rows closed (0 if it never started)."""
    ensure_table(db)
    done = db.execute(
        update(SESSIONS)
        .where(and_(SESSIONS.c.user == user, SESSIONS.c.server == server, SESSIONS.c.ended.is_(None)))
        .values(ended=time.time() if ended is None else ended, end_reason=reason)
    )
    db.commit()
    return int(done.rowcount or 0)


def open_row(db: Any, user: str, server: str) -> tuple[int, str, str] | None:
    """(id, backend, job id) of the server's open row, if it has one."""
    ensure_table(db)
    query = select(SESSIONS.c.id, SESSIONS.c.backend, SESSIONS.c.job_id).where(
        and_(SESSIONS.c.user == user, SESSIONS.c.server == server, SESSIONS.c.ended.is_(None))
    )
    row = db.execute(query.order_by(SESSIONS.c.id.desc())).first()
    return (int(row[0]), str(row[1]), str(row[2])) if row is not None else None


def record_accounted(db: Any, row_id: int, started: float, ended: float, cpus: int, gpus: int) -> None:
    """A SLURM job's life as SLURM's accounting has it (sacct): its row takes those numbers."""
    ensure_table(db)
    db.execute(
        update(SESSIONS)
        .where(SESSIONS.c.id == row_id)
        .values(started=started, ended=ended, cpus=cpus, gpus=gpus, accounted="sacct")
    )


def unsettled(db: Any, backends: Iterable[str]) -> list[tuple[int, str, str]]:
    """(id, backend, job id) of ended rows of these backends with a job id that no accounting settled yet."""
    ensure_table(db)
    query = select(SESSIONS.c.id, SESSIONS.c.backend, SESSIONS.c.job_id).where(
        and_(
            SESSIONS.c.backend.in_(list(backends)),
            SESSIONS.c.ended.is_not(None),
            SESSIONS.c.job_id != "",
            SESSIONS.c.accounted == "",
        )
    )
    return [(int(r[0]), str(r[1]), str(r[2])) for r in db.execute(query)]


def past_sessions(db: Any, user: str, limit: int = 20) -> list[Session]:
    """The user's most recent ended sessions, newest first."""
    ensure_table(db)
    query = (
        select(SESSIONS)
        .where(and_(SESSIONS.c.user == user, SESSIONS.c.ended.is_not(None)))
        .order_by(SESSIONS.c.started.desc(), SESSIONS.c.id.desc())
        .limit(limit)
    )
    return [Session.from_row(row) for row in db.execute(query)]


def sessions_between(db: Any, since: float = 0.0, until: float | None = None) -> list[Session]:
    """Every session alive at some time in [since, until] (until: now)."""
    ensure_table(db)
    query = select(SESSIONS).where(or_(SESSIONS.c.ended.is_(None), SESSIONS.c.ended > since))
    if until is not None:
        query = query.where(SESSIONS.c.started < until)
    return [Session.from_row(row) for row in db.execute(query.order_by(SESSIONS.c.started))]


@dataclass
class Usage:
    """What one group (or user) used in a period."""

    key: str
    sessions: int = 0
    hours: float = 0.0
    core_hours: float = 0.0
    gpu_hours: float = 0.0

    def as_dict(self, by: str) -> dict[str, Any]:
        return {
            by: self.key,
            "sessions": self.sessions,
            "hours": round(self.hours, 4),
            "core_hours": round(self.core_hours, 4),
            "gpu_hours": round(self.gpu_hours, 4),
        }


def usage(sessions: Iterable[Session], by: str, since: float = 0.0, until: float | None = None) -> list[Usage]:
    """Sessions, hours, core-hours and GPU-hours per group or user, counting only the part of each life inside the period.

    By group, a session counts for each group its user was in when it started ('(none)' without a group), so the
    groups' rows can add up to more than the whole.
    """
    if by not in ("group", "user"):
        raise ValueError(f"--by must be group or user, not {by!r}")
    table: dict[str, Usage] = {}
    for session in sessions:
        hours = session.hours(since, until)
        for key in (session.groups or ("(none)",)) if by == "group" else (session.user,):
            row = table.setdefault(key, Usage(key))
            row.sessions += 1
            row.hours += hours
            row.core_hours += hours * session.cpus
            row.gpu_hours += hours * session.gpus
    return [table[key] for key in sorted(table)]


_ENGINES: dict[str, Engine] = {}


def engine_for(url: str) -> Engine:
    """One engine per database URL for readers outside a request (the metrics collector)."""
    if url not in _ENGINES:
        _ENGINES[url] = create_engine(url)
    return _ENGINES[url]


def usage_by_group(url: str) -> list[Usage]:
    """All-time usage per group, for the metrics (the same numbers as ``hpclab-hub usage --by group``)."""
    with engine_for(url).connect() as connection:
        return usage(sessions_between(connection), "group")
