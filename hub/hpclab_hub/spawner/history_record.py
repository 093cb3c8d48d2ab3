"""A server's life into the hub's history (ops/history.py): its row when it has started, closed when it ends (and, on
SLURM, settled from sacct)."""

from __future__ import annotations

import asyncio
from typing import Any

from hpclab_hub.backends.slurm import accounting
from hpclab_hub.backends.slurm.client import SlurmClient
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
            job_id=str(ids.get("job_id") or ids.get("pid") or ""),
            cpus=profile.cpus,
            memory=profile.memory or 0,
            gpus=profile.gpus,
        )
    except Exception:
        spawner.db.rollback()  # the hub's session goes on: a failed statement must not fail its next ones
        spawner.log.exception("History: could not record the start of %s", spawner._log_name)


def record_end(spawner: Any) -> None:
    """JupyterHub's post-stop hook: however the server ended, its row is closed with why; a SLURM job's row is then
    settled from sacct in the background (backends/slurm/accounting.py)."""
    if not spawner.deployment.hub.history:
        return
    try:
        row = history.open_row(spawner.db, spawner.user.name, spawner.name)
        history.record_end(spawner.db, spawner.user.name, spawner.name, spawner.end_reason or "stopped")
    except Exception:
        spawner.db.rollback()
        spawner.log.exception("History: could not record the end of %s", spawner._log_name)
        return
    settings = spawner.deployment.backends.get(row[1]) if row is not None else None
    if row is not None and row[2] and settings is not None and settings.type == "slurm":
        engine = history.engine_for(spawner.deployment.hub.database_url)
        task = asyncio.ensure_future(accounting.settle(SlurmClient.for_backend(settings), engine, row[0], row[2], spawner.log))
        _SETTLING.add(task)  # kept until done: a task nobody holds may be collected before it ends
        task.add_done_callback(_SETTLING.discard)
