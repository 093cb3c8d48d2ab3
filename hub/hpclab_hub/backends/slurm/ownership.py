"""Which SLURM jobs are this hub's: its id in each job's comment, and jobs no server owns after a restart.

The id is looked up once per hub process (``hub_id.py`` keeps it in the database); the orphan check
runs once per hub id, at the first poll after a start.
"""

from __future__ import annotations

from typing import Any

from jupyterhub import orm

from hpclab_hub.backends.slurm.client import SlurmClient, operator_hint
from hpclab_hub.backends.slurm.errors import SlurmError
from hpclab_hub.backends.slurm.hub_id import ensure_hub_id
from hpclab_hub.backends.slurm.queue import JobQueue
from hpclab_hub.config.model import Deployment, SlurmBackend

LIVE_JOBS: set[str] = set()  # job ids submitted by this hub process and not yet cleared
_ORPHAN_CHECK_DONE: set[str] = set()
_HUB_IDS: dict[str, str] = {}  # database URL -> this hub's id (looked up once per process)


def any_slurm_backend(deployment: Deployment) -> SlurmBackend:
    """A SLURM backend of the YAML (for what is the cluster's, not a profile's: the queue, orphan jobs)."""
    return next(b for b in deployment.backends.values() if isinstance(b, SlurmBackend))


async def hub_id(deployment: Deployment, database: Any, queue: JobQueue, log: Any) -> str:
    """This hub's id, written into each job's comment: from the YAML or the database (see ``hub_id.py``)."""
    hub = deployment.hub
    given: str | None = getattr(hub, "id", None)
    if given:
        return given
    if hub.database_url not in _HUB_IDS:
        owned = any(row.state and row.state.get("job_id") for row in database.query(orm.Spawner).all())
        await queue.refresh(max_age=0)
        comments = [job.comment for job in queue.snapshot().values()]
        found, origin = ensure_hub_id(database, hub.database_url, comments, owned)
        if origin == "adopted":
            log.info(
                "SLURM hub id %s adopted from the hub's jobs (the old id, from the database URL) and kept in the database", found
            )
        elif origin == "new":
            log.info("SLURM hub id %s made and kept in the database", found)
        _HUB_IDS[hub.database_url] = found
    return _HUB_IDS[hub.database_url]


async def check_orphans_once(deployment: Deployment, database: Any, client: SlurmClient, queue: JobQueue, log: Any) -> None:
    """After a hub start: jobs carrying this hub's tag that no server owns are reported or cancelled."""
    this_hub = await hub_id(deployment, database, queue, log)
    if this_hub in _ORPHAN_CHECK_DONE:
        return
    _ORPHAN_CHECK_DONE.add(this_hub)
    await queue.refresh(max_age=0)
    owned = set(LIVE_JOBS)
    for row in database.query(orm.Spawner).all():
        if row.state and row.state.get("job_id"):
            owned.add(str(row.state["job_id"]))
    tag = f"hpclab:{this_hub}:"
    for job in queue.snapshot().values():
        if job.active and job.comment.startswith(tag) and job.job_id not in owned:
            if any_slurm_backend(deployment).orphan_jobs == "cancel":
                log.warning("Cancelling orphan SLURM job %s (%s) that no server owns", job.job_id, job.name)
                try:
                    await client.run(["scancel", job.job_id])
                except SlurmError as error:
                    log.error(
                        "Orphan SLURM job %s was not cancelled: %s%s", job.job_id, error.message, operator_hint(error.message)
                    )
            else:
                log.warning("Orphan SLURM job %s (%s, user %s) is not owned by any server", job.job_id, job.name, job.user)
