"""Event accounts (hackathons, tutorials): which native accounts belong to an event and until when (table
``hpclab_event_accounts`` in the hub's database). ``hpclab-hub event create`` writes the rows; the hub refuses
their logins after the end and stops their servers (auth/event_expiry.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Float, MetaData, String, Table, select

METADATA = MetaData()
EVENT_ACCOUNTS = Table(
    "hpclab_event_accounts",
    METADATA,
    Column("username", String(255), primary_key=True),
    Column("event", String(255), nullable=False, index=True),
    Column("group_name", String(255), nullable=False),
    Column("until", Float, nullable=False),  # epoch seconds: the end of the event
    Column("created", Float, nullable=False),
)


@dataclass(frozen=True)
class EventAccount:
    username: str
    event: str
    group: str
    until: float

    def ended(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.until

    def end_text(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.until))


def ensure_table(db: Any) -> None:
    bind = db.get_bind() if hasattr(db, "get_bind") else db
    METADATA.create_all(bind, checkfirst=True)


def add_accounts(db: Any, event: str, group: str, until: float, usernames: list[str]) -> None:
    """Record ``usernames`` as the event's accounts (committed)."""
    ensure_table(db)
    now = time.time()
    db.execute(
        EVENT_ACCOUNTS.insert(), [dict(username=u, event=event, group_name=group, until=until, created=now) for u in usernames]
    )
    db.commit()


def _from(row: Any) -> EventAccount:
    m = row._mapping
    return EventAccount(m["username"], m["event"], m["group_name"], float(m["until"]))


def account(db: Any, username: str) -> EventAccount | None:
    """The event ``username`` belongs to, or None for an ordinary account."""
    ensure_table(db)
    row = db.execute(select(EVENT_ACCOUNTS).where(EVENT_ACCOUNTS.c.username == username)).first()
    return _from(row) if row else None


def ended_accounts(db: Any, now: float | None = None) -> list[EventAccount]:
    """Every event account whose event has ended."""
    ensure_table(db)
    now = time.time() if now is None else now
    return [_from(row) for row in db.execute(select(EVENT_ACCOUNTS).where(EVENT_ACCOUNTS.c.until <= now))]


def taken(db: Any, usernames: list[str]) -> list[str]:
    """Which of ``usernames`` are already event accounts."""
    ensure_table(db)
    return [r[0] for r in db.execute(select(EVENT_ACCOUNTS.c.username).where(EVENT_ACCOUNTS.c.username.in_(usernames)))]
