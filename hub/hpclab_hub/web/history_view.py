"""The home page's past sessions (ops/history.py): when, which profile and resources, how it ended, and a link that
fills the form with the same choices again (editable before Start). Also the hub's configuration for the history:
the post-stop hook that closes each server's row, the page's template variable and the metrics' source."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from hpclab_hub.config.model import Deployment
from hpclab_hub.config.units import format_memory
from hpclab_hub.ops import history, metrics
from hpclab_hub.spawner.history_record import record_end
from hpclab_hub.spawner.home import relaunch_url
from hpclab_hub.web.admin_servers import AdminServersHandler
from hpclab_hub.web.knowledge_base import KnowledgeBaseHandler

SHOWN = 20  # sessions listed on the home page, newest first


def duration_text(seconds: float) -> str:
    """'45 s', '12 min', '3 h 05 min'."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    hours, minutes = divmod(seconds // 60, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def session_row(deployment: Deployment, session: history.Session, base_url: str) -> dict[str, str]:
    """One row of the home page's table of past sessions."""
    profile = deployment.profile(session.profile)
    parts = [f"{session.cpus} core{'s' if session.cpus != 1 else ''}"]
    if session.memory:
        parts.append(format_memory(session.memory))
    if session.gpus:
        parts.append(f"{session.gpus} GPU{'s' if session.gpus != 1 else ''}")
    return {
        "id": str(session.id),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(session.started)),
        "duration": duration_text((session.ended or time.time()) - session.started),
        "server": session.server or "default",
        "profile": profile.display_name if profile else f"{session.profile} (no longer offered)",
        "resources": ", ".join(parts),
        "backend": session.backend + (f", job {session.job_id}" if session.job_id and session.backend != "local" else ""),
        "ended": session.end_reason,
        "core_hours": f"{session.hours() * session.cpus:.2f}",
        "gpu_hours": f"{session.hours() * session.gpus:.2f}" if session.gpus else "",
        "relaunch": relaunch_url(deployment, session.options, base_url, session.user, session.server),
    }


class PastSessions:
    """The user's past sessions, read from the database only if a page shows them (the home page)."""

    def __init__(self, user: Any, deployment: Deployment, base_url: str) -> None:
        self.user, self.deployment, self.base_url = user, deployment, base_url
        self._rows: list[dict[str, str]] | None = None

    def rows(self) -> list[dict[str, str]]:
        if self._rows is None:
            found = history.past_sessions(self.user.db, self.user.name, SHOWN)
            self._rows = [session_row(self.deployment, s, self.base_url) for s in found]
        return self._rows

    def __iter__(self):
        return iter(self.rows())

    def __bool__(self) -> bool:
        return bool(self.rows())


def past_sessions_of(deployment: Deployment, base_url: str, user: Any) -> PastSessions | list:
    """``template_vars`` entry: called by JupyterHub with the page's user (None when nobody is logged in)."""
    return [] if user is None else PastSessions(user, deployment, base_url)


def configure_history(c: Any, deployment: Deployment, base_url: str) -> None:
    """Every server's end closes its row; the home page lists past sessions; /hub/metrics counts usage per group."""
    c.Spawner.post_stop_hook = record_end
    c.JupyterHub.template_vars = {
        **dict(c.JupyterHub.template_vars),
        "hpclab_history": partial(past_sessions_of, deployment, base_url),
    }
    metrics.set_history_source(partial(history.usage_by_group, deployment.hub.database_url))


def configure_knowledge_base(c: Any, deployment: Deployment) -> None:
    """The examples page (web/knowledge_base.py) and its link in the menu, where examples are delivered; the admins' page."""
    kb = deployment.knowledge_base
    shown = kb.enabled and (deployment.examples.delivered or kb.pulls_git)
    c.JupyterHub.template_vars = {**dict(c.JupyterHub.template_vars), "hpclab_examples": shown}
    c.JupyterHub.extra_handlers = [*c.JupyterHub.extra_handlers, (r"/hpclab/examples", KnowledgeBaseHandler)]
    # and the admins' page of servers and waiting starts (web/admin_servers.py), linked from JupyterHub's admin page
    c.JupyterHub.extra_handlers = [*c.JupyterHub.extra_handlers, (r"/hpclab/admin", AdminServersHandler)]
