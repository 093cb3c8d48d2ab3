"""The line of starts waiting for a local backend's GPUs or memory: highest priority first, then first come.

A start takes what its profile needs from the pool at once when it fits and nobody ahead of it in line
waits for what it also needs. Otherwise, with ``priorities.wait`` set, it waits in line (never past the
profile's spawn timeout) and its progress page says where it stands and why ("2nd in line for a GPU;
a higher-priority group is ahead"); without it, it is refused at once with what is in use. Cores are
never short (servers share the least-used ones), so only GPUs and memory make a start wait.

A start waits only behind those ahead of it that are short of something it needs too: a CPU profile
does not wait behind a line for GPUs. Every change to the pool and the line is synchronous (no await).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from tornado import web

from hpclab_hub.backends.local import reclaim
from hpclab_hub.backends.local.resources import Allocation, NoFreeGPU, PoolFull, ResourcePool


@dataclass(eq=False)
class Waiter:
    """One start in line: whose, how urgent, what it needs, and what its progress page says."""

    owner: str
    priority: int
    arrival: int
    gpus: int
    memory: int
    message: str = ""
    leave: bool = False  # the start was stopped while it waited

    @property
    def rank(self) -> tuple[int, int]:
        return (-self.priority, self.arrival)


def _short(pool: ResourcePool, waiter: Waiter) -> tuple[bool, bool]:
    """(short of GPUs, short of memory) for ``waiter`` with the pool as it is now."""
    gpus = waiter.gpus > len(pool.free_gpus())
    memory = pool.memory is not None and bool(waiter.memory) and pool.memory_in_use() + waiter.memory > pool.memory
    return gpus, memory


def _blocks(pool: ResourcePool, ahead: Waiter, me: Waiter) -> bool:
    """Whether ``ahead`` (ranked before ``me``) must be served before ``me`` may take from the pool."""
    gpus, memory = _short(pool, ahead)
    if not gpus and not memory:  # it can take now and will on its next look: nothing it needs goes to me first
        return bool(ahead.gpus and me.gpus) or (pool.memory is not None and bool(ahead.memory and me.memory))
    return (gpus and me.gpus > 0) or (memory and me.memory > 0)


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class WaitingLine:
    """The starts waiting for one pool."""

    def __init__(self) -> None:
        self.waiting: list[Waiter] = []
        self._arrivals = itertools.count()

    def ahead_of(self, pool: ResourcePool, me: Waiter) -> list[Waiter]:
        """Those ranked before ``me`` that it must let go first."""
        return [w for w in self.waiting if w is not me and w.rank < me.rank and _blocks(pool, w, me)]

    def where(self, pool: ResourcePool, me: Waiter, ahead: list[Waiter]) -> str:
        """What the progress page says: the place in line, for what, and why."""
        gpus, _ = _short(pool, me)
        what = "a GPU" if gpus or (me.gpus and any(w.gpus for w in ahead)) else "memory"
        gpus_held = "its one GPU is in use" if len(pool.gpu_ids) == 1 else f"all {len(pool.gpu_ids)} of its GPUs are in use"
        held = gpus_held if what == "a GPU" else "its running servers hold the memory it shares out"
        if any(w.priority > me.priority for w in ahead):
            why = "a higher-priority group is ahead"
        elif ahead:
            why = "earlier starts are ahead" if len(ahead) > 1 else "an earlier start is ahead"
        else:
            why = held
        return f"{ordinal(len(ahead) + 1)} in line for {what} on this server; {why}. Yours starts when it is your turn."

    def take_now(self, pool: ResourcePool, me: Waiter, cpus: int) -> Allocation | None:
        """The allocation if it is ``me``'s turn and the pool has what it needs, else None (its message updated)."""
        ahead = self.ahead_of(pool, me)
        if not ahead and not any(_short(pool, me)):
            return pool.allocate(me.owner, cpus, me.gpus, me.memory)
        me.message = self.where(pool, me, ahead)
        return None

    def find(self, owner: str) -> Waiter | None:
        return next((w for w in self.waiting if w.owner == owner), None)


_LINES: dict[int, WaitingLine] = {}
HOLDING: dict[str, Any] = {}  # owner -> the LocalServer that took its share through the line (for reclaim.py)


def line_of(pool: ResourcePool) -> WaitingLine:
    """The one line of a pool (pools live as long as the hub)."""
    return _LINES.setdefault(id(pool), WaitingLine())


async def take_from_pool(server: Any, pool: ResourcePool, interval: float = 0.25) -> Allocation:
    """The cores, GPUs and memory of ``server``'s profile, after its turn in line; HTTP 409 with what is in use if the
    wait (``priorities.wait``) runs out or is off, or if the start was stopped while it waited."""
    ctx, profile = server.ctx, server.ctx.profile
    settings = ctx.deployment.priorities
    line = line_of(pool)
    me = Waiter(
        server.owner_key, settings.priority_of(ctx.user_groups()), next(line._arrivals), profile.gpus, profile.memory or 0
    )
    server.waiter = me
    limit = min(settings.wait or 0, max(0, profile.spawn_timeout - 15))
    deadline = time.monotonic() + limit
    line.waiting.append(me)
    said, next_look = "", 0.0
    try:
        while True:
            try:
                allocation = line.take_now(pool, me, profile.cpus)
            except PoolFull:  # cannot happen after the checks above; kept as the pool's own word
                allocation = None
            if allocation is not None:
                HOLDING[server.owner_key] = server
                return allocation
            if settings.reclaim.enabled and time.monotonic() >= next_look and _short(pool, me)[0]:
                next_look = time.monotonic() + 1
                if not line.ahead_of(pool, me):  # the first in line for a GPU looks for one to reclaim
                    reclaim.consider(pool, me, HOLDING, settings)
            if me.leave or time.monotonic() >= deadline:
                break
            if me.message != said:
                said = me.message
                ctx.log.info("%s waits: %s", ctx.log_name, said)
            await asyncio.sleep(interval)
    finally:
        line.waiting.remove(me)
        server.waiter = None
    try:  # the pool's own words for what is in use
        pool.allocate(me.owner, profile.cpus, me.gpus, me.memory)
        pool.release(me.owner)
        reason = "Your turn in line did not come"
    except PoolFull as full:
        ctx.record_failure("no_free_gpu" if isinstance(full, NoFreeGPU) else "no_free_memory")
        reason = str(full)
    if me.leave:
        raise web.HTTPError(409, "The start was stopped while it waited in line.")
    if limit:
        reason += f" (waited {limit} s in line: {me.message})"
    raise web.HTTPError(409, reason)


async def waiting_progress(server: Any) -> AsyncIterator[dict[str, Any]]:
    """Progress events until ``server``'s start holds its share of the pool: each new message of its wait in line once.

    Asked for as soon as the start is pending, maybe before it reaches the line; JupyterHub stops asking when the start
    ends, so a start that fails before it holds anything leaves this loop that way.
    """
    shown = ""
    while not server.allocation_state:
        me = server.waiter
        if me is not None and me.message and me.message != shown:
            shown = me.message
            yield {"progress": 5, "message": shown}
        await asyncio.sleep(0.25)
