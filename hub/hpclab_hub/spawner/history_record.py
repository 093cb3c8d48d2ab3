"""A server's life into the hub's history (ops/history.py): its row when it has started, closed when it ends."""

from __future__ import annotations

from typing import Any

from hpclab_hub.ops import history


def record_start(spawner: Any, ids: dict[str, Any]) -> None:
    """Called by HPCLabSpawner.start once the server answers; a failure here is logged, never fails the start."""
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
    """JupyterHub's post-stop hook: however the server ended, its row is closed with why."""
    try:
        history.record_end(spawner.db, spawner.user.name, spawner.name, spawner.end_reason or "stopped")
    except Exception:
        spawner.db.rollback()
        spawner.log.exception("History: could not record the end of %s", spawner._log_name)
