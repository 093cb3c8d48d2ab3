"""What a local server shows beyond its start and stop: where it runs and what it uses (the admins' page), what its
pool has free (the form), where internal_ssl's certificates go."""

from __future__ import annotations

import pwd
import socket
import time
from typing import Any

from hpclab_hub.backends import Availability, ServerUse, Whereabouts
from hpclab_hub.backends.local import reclaim
from hpclab_hub.backends.local.availability import local_availability
from hpclab_hub.backends.local.resources import Allocation, pool_of
from hpclab_hub.backends.local.waiting_line import line_of
from hpclab_hub.config.model import Profile


def local_whereabouts(server: Any) -> Whereabouts:
    """Its process and host, the GPUs it holds, its place in its pool's line while it waits, a reclaim warning."""
    pid = server.process.pid
    gpus = ", ".join(Allocation.from_state(server.allocation_state).gpu_ids) if server.allocation_state else ""
    waiter = server.waiter
    if waiter is not None:
        line = sorted(line_of(server.pool).waiting, key=lambda w: w.rank)
        place = next((i + 1 for i, w in enumerate(line) if w is waiter), 0)
        return Whereabouts("", "", gpus, waiter.message or "waiting for its turn", place, str(waiter.priority))
    warned = pid and reclaim.is_warned(server.owner_key)
    note = "warned: its GPU is being reclaimed for a waiting start" if warned else ""
    return Whereabouts(f"pid {pid}" if pid else "", socket.gethostname() if pid else "", gpus, note)


def local_use(server: Any) -> ServerUse:
    """The CPU time of the processes in the server's cgroup (or of its process) and the memory the cgroup holds."""
    pid = server.process.pid
    if not pid:
        return ServerUse()
    group = server.cgroup
    pids = group.pids() if group is not None else {pid}
    memory = group.memory_in_use() if group is not None else 0
    return ServerUse(reclaim.cpu_seconds(pids), memory or 0, 0, time.monotonic())


def local_form_availability(deployment: Any, profiles: list[Profile]) -> dict[str, Availability]:
    """What each profile's pool has free now, or why it can never start here."""
    return {p.slug: local_availability(p, pool_of(deployment, p)) for p in profiles}


def home_of(user_name: str) -> str:
    """The home of the account named as the person (JupyterHub's LocalProcessSpawner's rule for its certificates)."""
    return pwd.getpwnam(user_name).pw_dir
