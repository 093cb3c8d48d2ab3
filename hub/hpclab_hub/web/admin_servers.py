"""The admins' page of running servers and waiting starts (``/hub/hpclab/admin``), linked from JupyterHub's admin page.

JupyterHub's admin page is a compiled React app that shows what JupyterHub knows (users, server names, the raw
spawner state with ``job_end`` in epoch seconds); extending it means rebuilding its JavaScript. This page is the
hub's own instead (a plain template, escaped by Jinja), for the admin-ui scope like JupyterHub's: per server its
backend, profile, job id (SLURM's job, or the local server's process), node, time left in words, the GPUs it holds
and its measured use; then every start that waits, in the order it will be served, with what its progress page says.

Measured use is what reclaim measures on the CPU path (backends/local/reclaim.py): the CPU time of the processes of
the server's cgroup, as cores used on average since the page last looked (at least a second before) and since the
server started, and the memory the cgroup holds. SLURM servers are measured by SLURM: one ``sstat`` for all running
jobs per look (backends/slurm/job_use.py), the same figures from the job's steps; sacct in the history after.
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from typing import Any

from jupyterhub import orm
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from hpclab_hub.backends.local import reclaim
from hpclab_hub.backends.local.resources import Allocation
from hpclab_hub.backends.local.waiting_line import line_of
from hpclab_hub.backends.slurm.job_use import uses_for
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


def server_row(spawner: Any) -> dict[str, Any]:
    """One running (or starting) server as the page shows it."""
    deployment = spawner.deployment
    profile = deployment.profile(spawner.profile_slug) if spawner.profile_slug else None
    backend = spawner.server_backend
    kind = backend.kind
    row: dict[str, Any] = {
        "user": spawner.user.name,
        "server": spawner.name,
        "state": "ready" if spawner.ready else (spawner.pending or "starting"),
        "backend": f"{profile.backend} ({kind})" if profile else kind,
        "profile": f"{profile.display_name} ({profile.slug})" if profile else spawner.profile_slug or "",
        "job": "",
        "node": "",
        "time_left": time_left_text(spawner.job_end_epoch) or ("no limit" if spawner.ready else ""),
        "gpus": "",
        "use": {},
        "use_note": "",
        "note": "",
    }
    server = getattr(spawner.orm_spawner, "server", None)
    if kind == "slurm":
        row["job"] = getattr(backend, "job_id", "")
        row["node"] = server.ip if server is not None else ""  # the node's address: its name comes from the queue
        row["note"] = "" if spawner.ready else getattr(backend, "progress_line", "")
        return row
    pid = backend.process.pid
    row["job"] = f"pid {pid}" if pid else ""
    row["node"] = socket.gethostname() if pid else ""
    if backend.allocation_state:
        row["gpus"] = ", ".join(Allocation.from_state(backend.allocation_state).gpu_ids)
    if pid and spawner.ready and profile is not None:
        group = backend.cgroup
        pids = group.pids() if group is not None else {pid}
        life = time.time() - _started(spawner.orm_spawner) if _started(spawner.orm_spawner) else 0.0
        row["use"] = measured_use((spawner.user.name, spawner.name, pid), reclaim.cpu_seconds(pids), life, profile.cpus)
        if group is not None and (held := group.memory_in_use()):
            row["use"].update(memory_use(held, 0, profile.memory))
    watch = reclaim._WATCHES.get(backend.owner_key) if pid else None
    if watch is not None and watch.warned_at:
        row["note"] = "warned: its GPU is being reclaimed for a waiting start"
    return row


async def slurm_node(spawner: Any, row: dict[str, Any]) -> str:
    """A SLURM server's node by name from the hub's shared queue snapshot (no extra squeue), with its address."""
    backend = spawner.server_backend
    if backend.kind != "slurm" or not row["job"]:
        return row["node"]
    status = await backend.queue.status(row["job"])
    name = status.info.node if status.info is not None else ""
    return f"{name} ({row['node']})" if name and row["node"] and name != row["node"] else name or row["node"]


async def add_slurm_use(pairs: list[tuple[Any, dict[str, Any]]]) -> None:
    """The measured use of the running SLURM servers among ``pairs`` (spawner, row): one sstat per SLURM configuration
    for all of them (job_use.py), shown as the local servers' use is; SLURM's refusal or silence in words otherwise."""
    views: dict[int, tuple[Any, list[tuple[Any, dict[str, Any]]]]] = {}
    for spawner, row in pairs:
        backend = spawner.server_backend
        if backend.kind == "slurm" and row["job"] and spawner.ready:
            view = uses_for(backend.client, backend.backend.poll_interval)
            views.setdefault(id(view), (view, []))[1].append((spawner, row))
    for view, members in views.values():
        found = await view.uses({row["job"] for _, row in members})
        for spawner, row in members:
            use = found.get(row["job"])
            if use is None or not (use.memory or use.cpu_seconds):
                error = view.error(row["job"])
                row["use_note"] = (
                    f"sstat: {error}"
                    if error
                    else "SLURM reports no use for this job (is JobAcctGatherType jobacct_gather/none?)"
                )
                continue
            try:
                profile = spawner.profile  # with the user's choices: the cores and memory the job asked for
            except web.HTTPError:
                continue
            life = time.time() - _started(spawner.orm_spawner) if _started(spawner.orm_spawner) else 0.0
            key = (spawner.user.name, spawner.name, row["job"])
            row["use"] = measured_use(key, use.cpu_seconds, life, profile.cpus, use.measured_at)
            row["use"].update(memory_use(use.memory, use.peak_memory, profile.memory))


def waiting_rows(spawners: list[Any]) -> list[dict[str, Any]]:
    """Every start that waits, in the order each line serves them: local starts by their place in their pool's line
    (priority, then first come), then the others (a SLURM job pending in SLURM's queue, a start the hub holds back)."""
    rows = []
    for spawner in spawners:
        if not spawner.pending:
            continue
        backend = spawner.server_backend
        waiter = getattr(backend, "waiter", None)
        place, message, priority = 0, getattr(backend, "progress_line", "") or "starting", ""
        if waiter is not None:
            line = sorted(line_of(backend.pool).waiting, key=lambda w: w.rank)
            place = next((i + 1 for i, w in enumerate(line) if w is waiter), 0)
            message, priority = waiter.message or "waiting for its turn", str(waiter.priority)
        profile = spawner.deployment.profile(spawner.profile_slug) if spawner.profile_slug else None
        rows.append(
            {
                "user": spawner.user.name,
                "server": spawner.name,
                "profile": profile.display_name if profile else spawner.profile_slug,
                "backend": profile.backend if profile else backend.kind,
                "place": place,
                "job": getattr(backend, "job_id", "") if backend.kind == "slurm" else "",
                "priority": priority,
                "message": message,
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
        pairs = []
        for spawner in spawners:
            if spawner.pending != "spawn":
                pairs.append((spawner, server_row(spawner)))
                pairs[-1][1]["node"] = await slurm_node(spawner, pairs[-1][1])
        await add_slurm_use(pairs)
        servers = [row for _, row in pairs]
        alive = {(s.user.name, s.name) for s in spawners}
        for gone in [key for key in _SAMPLES if key[:2] not in alive]:  # servers that ended since the last look
            del _SAMPLES[gone]
        html = await self.render_template("hpclab-admin.html", servers=servers, waiting=waiting_rows(spawners))
        self.finish(html)
