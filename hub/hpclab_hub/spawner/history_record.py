"""A server's life into the hub's history (ops/history.py): its row when it has started, closed when it ends, then
settled by its backend (``ServerBackend.settle``: SLURM's figures from sacct; nothing for a local server)."""

from __future__ import annotations

import asyncio
from typing import Any

from hpclab_hub.ops import history

_SETTLING: set[asyncio.Future] = set()


def record_start(spawner: Any, ids: dict[str, Any]) -> None:
    """Called by HPCLabSpawner.start once the server answers; a failure here is logged, never fails the start."""
    if not spawner.deployment.hub.history:
        return
    try:
        profile = spawner.profile
        history.record_start(
            spawner.db,
            user=spawner.user.name,
            groups=spawner.user_groups(),
            server=spawner.name,
            profile=profile.slug,
            options=dict(spawner.user_options or {}),
            backend=profile.backend,
            job_id=str(next(iter(ids.values()), "")),  # the backend's id of the server (ServerBackend.id_key)
            cpus=profile.cpus,
            memory=profile.memory or 0,
            gpus=profile.gpus,
        )
    except Exception:
        spawner.db.rollback()  # the hub's session goes on: a failed statement must not fail its next ones
        spawner.log.exception("History: could not record the start of %s", spawner._log_name)


def record_end(spawner: Any) -> None:
    """JupyterHub's post-stop hook: however the server ended, its row is closed with why, then settled by the server's
    backend in the background (SLURM: sacct's figures, backends/slurm/accounting.py)."""
    if not spawner.deployment.hub.history:
        return
    try:
        row = history.open_row(spawner.db, spawner.user.name, spawner.name)
        history.record_end(spawner.db, spawner.user.name, spawner.name, spawner.end_reason or "stopped")
    except Exception:
        spawner.db.rollback()
        spawner.log.exception("History: could not record the end of %s", spawner._log_name)
        return
    if row is not None and row[2] and row[1] in spawner.deployment.backends:
        engine = history.engine_for(spawner.deployment.hub.database_url)
        task = asyncio.ensure_future(spawner.server_backend.settle(engine, row[0], row[2]))
        _SETTLING.add(task)  # kept until done: a task nobody holds may be collected before it ends
        task.add_done_callback(_SETTLING.discard)
