"""The admins' page of running servers and waiting starts (``/hub/hpclab/admin``), linked from JupyterHub's admin page.

JupyterHub's admin page is a compiled React app that shows what JupyterHub knows (users, server names, the raw
spawner state with ``job_end`` in epoch seconds); extending it means rebuilding its JavaScript. This page is the
hub's own instead (a plain template, escaped by Jinja), for the admin-ui scope like JupyterHub's: per server its
backend, profile, job id (SLURM's job, or the local server's process), node, time left in words, the GPUs it holds
and its measured use; then every start that waits, in the order it will be served, with what its progress page says.

Everything a row says of where a server runs and what it uses comes from its backend through the ``ServerBackend``
protocol (``whereabouts``, ``measure``), so the page knows no backend's insides. Local servers measure what reclaim
measures on the CPU path (backends/local/views.py): the CPU time of the processes of the server's cgroup and the
memory the cgroup holds; SLURM servers are measured by SLURM, one ``sstat`` for all running jobs per look
(backends/slurm/job_use.py), the same figures from the job's steps; sacct in the history after. The page shows them
as cores used on average since it last looked (at least a second before) and since the server started.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from jupyterhub import orm
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from hpclab_hub.backends import ServerBackend, ServerUse, Whereabouts
from hpclab_hub.spawner.walltime import time_left_text

_SAMPLES: dict[tuple[str, str, int | str], tuple[float, float]] = {}  # (user, server, pid or job) -> (monotonic, CPU s)


def cores_text(cores: float, of: int) -> str:
    """'0.93 of 2 cores'."""
    return f"{cores:.2f} of {of} core{'s' if of != 1 else ''}"


def bytes_text(size: float) -> str:
    """'1.25 GiB', '310 MiB'."""
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def memory_use(now: int, peak: int, limit: int | None) -> dict[str, str]:
    """The memory a server holds now (and its peak where known), against its profile's limit."""
    text = bytes_text(now) + (f" (peak {bytes_text(peak)})" if peak else "") + (f" of {bytes_text(limit)}" if limit else "")
    return {"memory": text, "memory_bytes": str(now)}


def measured_use(
    key: tuple[str, str, int | str], used: float, life_seconds: float, cpus: int, now: float | None = None
) -> dict[str, str]:
    """Cores used recently (since this page's previous look, kept at least 1 s old) and over the server's life, from
    ``used`` CPU seconds measured at ``now`` (time.monotonic(), default: this moment)."""
    now = time.monotonic() if now is None else now
    previous = _SAMPLES.get(key)
    recent = ""
    if previous is not None and now - previous[0] >= 1:
        recent = f"{cores_text(max(0.0, used - previous[1]) / (now - previous[0]), cpus)} over the last {now - previous[0]:.0f} s"
    if previous is None or now - previous[0] >= 1:
        _SAMPLES[key] = (now, used)
    life = f"{cores_text(used / life_seconds, cpus)} since start" if life_seconds > 0 else ""
    return {"recent": recent, "life": life, "cpu_seconds": f"{used:.1f}"}


def _started(orm_spawner: Any) -> float:
    started = getattr(orm_spawner, "started", None)
    if started is None:
        return 0.0
    return (started if started.tzinfo else started.replace(tzinfo=dt.UTC)).timestamp()


def _node(where: Whereabouts, spawner: Any) -> str:
    """The node as the backend names it, with the address the proxy reaches the server at where that says more."""
    server = getattr(spawner.orm_spawner, "server", None)
    address = server.ip if server is not None and server.ip not in ("", "127.0.0.1", "localhost", "::1") else ""
    if where.node and address and address != where.node:
        return f"{where.node} ({address})"
    return where.node or address


async def server_row(spawner: Any) -> dict[str, Any]:
    """One running (or starting) server as the page shows it: what its backend says of it (ServerBackend.whereabouts)."""
    profile = spawner.deployment.profile(spawner.profile_slug) if spawner.profile_slug else None
    backend = spawner.server_backend
    where = await backend.whereabouts()
    return {
        "user": spawner.user.name,
        "server": spawner.name,
        "state": "ready" if spawner.ready else (spawner.pending or "starting"),
        "backend": f"{profile.backend} ({backend.kind})" if profile else backend.kind,
        "profile": f"{profile.display_name} ({profile.slug})" if profile else spawner.profile_slug or "",
        "job": where.job,
        "node": _node(where, spawner),
        "time_left": time_left_text(spawner.job_end_epoch) or ("no limit" if spawner.ready else ""),
        "gpus": where.gpus,
        "use": {},
        "use_note": "",
        "note": where.note,
    }


async def add_use(pairs: list[tuple[Any, dict[str, Any]]]) -> None:
    """The measured use of the running servers among ``pairs`` (spawner, row), asked of each backend class once for
    all its servers (ServerBackend.measure: SLURM's is one sstat per configuration), as cores and memory."""
    by_class: dict[type[ServerBackend], list[tuple[Any, dict[str, Any]]]] = {}
    for spawner, row in pairs:
        if spawner.ready and row["job"]:
            by_class.setdefault(type(spawner.server_backend), []).append((spawner, row))
    for cls, members in by_class.items():
        uses: list[ServerUse] = await cls.measure([spawner.server_backend for spawner, _ in members])
        for (spawner, row), use in zip(members, uses, strict=True):
            row["use_note"] = use.note
            if not use.measured_at:
                continue
            try:
                profile = spawner.profile  # with the user's choices: the cores and memory the server asked for
            except web.HTTPError:
                continue
            life = time.time() - _started(spawner.orm_spawner) if _started(spawner.orm_spawner) else 0.0
            key = (spawner.user.name, spawner.name, row["job"])
            row["use"] = measured_use(key, use.cpu_seconds, life, profile.cpus, use.measured_at)
            if use.memory:
                row["use"].update(memory_use(use.memory, use.peak_memory, profile.memory))


async def waiting_rows(spawners: list[Any]) -> list[dict[str, Any]]:
    """Every start that waits, in the order each line serves them: starts in their backend's own line by their place
    (a local pool's: priority, then first come), then the others (a SLURM job pending in SLURM's queue, a start the
    hub holds back)."""
    rows = []
    for spawner in spawners:
        if not spawner.pending:
            continue
        backend = spawner.server_backend
        where = await backend.whereabouts()
        profile = spawner.deployment.profile(spawner.profile_slug) if spawner.profile_slug else None
        rows.append(
            {
                "user": spawner.user.name,
                "server": spawner.name,
                "profile": profile.display_name if profile else spawner.profile_slug,
                "backend": profile.backend if profile else backend.kind,
                "place": where.place,
                "job": where.job,
                "priority": where.priority,
                "message": where.note or "starting",
                "since": _started(spawner.orm_spawner),
            }
        )
    rows.sort(key=lambda r: (r["backend"], r["place"] == 0, r["place"], r["since"]))
    for row in rows:
        row["waited"] = f"{int(time.time() - row['since'])} s" if row["since"] else ""
    return rows


class AdminServersHandler(BaseHandler):
    """GET /hub/hpclab/admin: for admins (JupyterHub's admin-ui scope), 403 for everyone else."""

    @web.authenticated
    @needs_scope("admin-ui")
    async def get(self) -> None:
        spawners = []
        for orm_user in self.db.query(orm.User).order_by(orm.User.name):
            user = self.users[orm_user]
            spawners += [s for _, s in sorted(user.spawners.items()) if s.active]
        pairs = [(spawner, await server_row(spawner)) for spawner in spawners if spawner.pending != "spawn"]
        await add_use(pairs)
        servers = [row for _, row in pairs]
        alive = {(s.user.name, s.name) for s in spawners}
        for gone in [key for key in _SAMPLES if key[:2] not in alive]:  # servers that ended since the last look
            del _SAMPLES[gone]
        html = await self.render_template("hpclab-admin.html", servers=servers, waiting=await waiting_rows(spawners))
        self.finish(html)
