"""One log line per server event, for an admin's grep and for journald: start, stop, refused, failed, reclaim.

    hpclab-event start user=alice profile=cpu-small server="" backend=local
    hpclab-event refused user=bob profile=gpu-1 server="" backend=local reason="Quota: ..."
    hpclab-event reclaim user=alice profile=cpu-small server="" idle=3600

The lines go to the hub's log (stdout: journald under deploy/systemd/hpclab-hub.service, which rotates them;
``journalctl -u hpclab-hub -g hpclab-event``); the reclaim line comes from the idle culler, a service of
the hub whose output joins the hub's.
"""

from __future__ import annotations

import json
import logging
import re

PREFIX = "hpclab-event"
KINDS = ("start", "stop", "refused", "failed", "reclaim")
_BARE = re.compile(r"[A-Za-z0-9_.@:/+-]+")


def _value(value: object) -> str:
    text = str(value)
    return text if _BARE.fullmatch(text) else json.dumps(text, ensure_ascii=False)


def event_line(kind: str, user: str, profile: str, server: str = "", **fields: object) -> str:
    """``hpclab-event <kind> user=.. profile=.. server=.. key=value...``; values with spaces or quotes in JSON quotes."""
    if kind not in KINDS:
        raise ValueError(f"unknown event {kind!r}")
    parts = [PREFIX, kind, f"user={_value(user)}", f"profile={_value(profile or '(default)')}", f"server={_value(server)}"]
    parts += [f"{key}={_value(value)}" for key, value in fields.items() if value is not None]
    return " ".join(parts)


def parse_event(line: str) -> dict[str, str] | None:
    """The fields of an event line (``kind`` included), or None for any other line; for tests and log tools."""
    at = line.find(PREFIX + " ")
    if at < 0:
        return None
    rest = line[at + len(PREFIX) + 1 :]
    kind, _, rest = rest.partition(" ")
    found = {"kind": kind}
    for match in re.finditer(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', rest):
        key, value = match[1], match[2]
        found[key] = json.loads(value) if value.startswith('"') else value
    return found


def log_event(
    log: logging.Logger | logging.LoggerAdapter, kind: str, user: str, profile: str, server: str = "", **fields: object
) -> None:
    log.info("%s", event_line(kind, user, profile, server, **fields))
