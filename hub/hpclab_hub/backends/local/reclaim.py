"""Reclaim under pressure, by measured use (the CPU path): while a start waits for a GPU of a local backend, servers
holding one that used less than ``priorities.reclaim.below`` of their cores over ``window`` are warned and, after
``grace``, stopped, lowest priority first, never one of higher priority than the waiting start's and never one
that is busy (its use is measured again until the end of the grace: a server that works again keeps its GPU).

Use is the CPU time of every process in the server's cgroup (``/proc/<pid>/stat``: user and system time, theirs and
their reaped children's), sampled while the pressure lasts. The warning is the wall-time path: the server's end
moves to now + grace (JupyterLab's top bar shows it), and the early save signal goes at once, so open notebooks are
saved; the end reason on the home page and in the history says why; one ``hpclab-event reclaim`` line each.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from hpclab.walltime_signal import EARLY_SIGNAL
from hpclab_hub.ops.events import log_event

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: set[int]) -> float:
    """User and system CPU seconds of these processes and their reaped children (vanished ones count 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total / _TICKS


@dataclass
class Watch:
    """The samples of one GPU holder under pressure, and its warning."""

    samples: deque = field(default_factory=deque)  # (monotonic time, CPU seconds)
    warned_at: float = 0.0  # monotonic time of the warning (0: not warned)
    end_before: float = 0.0  # its wall-time end before the warning (restored if it works again)

    def add(self, now: float, used: float, keep: float) -> None:
        self.samples.append((now, used))
        while len(self.samples) > 2 and now - self.samples[1][0] >= keep:
            self.samples.popleft()

    def cores_used(self, since: float) -> float | None:
        """Average cores used from the first sample at or after ``since`` until the last; None if too short."""
        first = next(((t, u) for t, u in self.samples if t >= since), None)
        last = self.samples[-1] if self.samples else None
        if first is None or last is None or last[0] - first[0] <= 0:
            return None
        return max(0.0, last[1] - first[1]) / (last[0] - first[0])


_WATCHES: dict[str, Watch] = {}


def _holders(pool: Any, registry: dict[str, Any]) -> list[Any]:
    return [registry[o] for o, a in pool.holders.items() if a.gpu_ids and o in registry]


def consider(pool: Any, waiter: Any, registry: dict[str, Any], settings: Any) -> None:
    """One look, made by the first start in line while it waits for a GPU: sample, warn, stop or spare."""
    reclaim, now = settings.reclaim, time.monotonic()
    holders = _holders(pool, registry)
    for server in holders:
        group = server.cgroup
        pids = group.pids() if group is not None else ({server.process.pid} if server.process.pid else set())
        watch = _WATCHES.setdefault(server.owner_key, Watch())
        watch.add(now, cpu_seconds(pids), reclaim.window + reclaim.grace)
    for gone in set(_WATCHES) - {s.owner_key for s in holders}:
        del _WATCHES[gone]
    warned = [s for s in holders if _WATCHES[s.owner_key].warned_at]
    for server in warned:  # working again: it keeps its GPU
        watch = _WATCHES[server.owner_key]
        used = watch.cores_used(watch.warned_at)
        if used is not None and now - watch.warned_at >= 2 and used >= reclaim.below * server.ctx.profile.cpus:
            _spare(server, watch, used)
    candidates = []
    for server in holders:
        watch = _WATCHES[server.owner_key]
        priority = settings.priority_of(server.ctx.user_groups())
        used = watch.cores_used(now - reclaim.window) if now - watch.samples[0][0] >= reclaim.window else None
        if watch.warned_at or used is None or priority > waiter.priority or used >= reclaim.below * server.ctx.profile.cpus:
            continue
        candidates.append((priority, used, server))
    short = (
        waiter.gpus
        - len(pool.free_gpus())
        - sum(
            len(pool.holders[s.owner_key].gpu_ids)
            for s in warned
            if _WATCHES.get(s.owner_key) and _WATCHES[s.owner_key].warned_at
        )
    )
    for _priority, used, server in sorted(candidates, key=lambda c: (c[0], c[1]))[: max(0, short)]:
        _warn(server, _WATCHES[server.owner_key], used, reclaim, now)


def _warn(server: Any, watch: Watch, used: float, reclaim: Any, now: float) -> None:
    ctx = server.ctx
    watch.warned_at, watch.end_before = now, ctx.job_end_epoch
    end = time.time() + reclaim.grace
    ctx.job_end_epoch = min(ctx.job_end_epoch, end) if ctx.job_end_epoch else end
    server.reclaim_reason = (
        f"its GPU was reclaimed for a waiting start: it used {used:.2f} of its {ctx.profile.cpus} core(s) on average over "
        f"{reclaim.window} s, below {reclaim.below:g} per core; it was warned {reclaim.grace} s before "
        "(open notebooks were saved)."
    )
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if server.process.pid:
            os.kill(server.process.pid, EARLY_SIGNAL)  # JupyterLab saves every open document now
            server._early_signal_sent = True
    log_event(
        ctx.log, "reclaim", ctx.user_name, ctx.profile_slug, ctx.name, stage="warned", cpu=f"{used:.3f}", grace=reclaim.grace
    )


def _spare(server: Any, watch: Watch, used: float) -> None:
    ctx = server.ctx
    ctx.job_end_epoch, server.reclaim_reason, watch.warned_at = watch.end_before, "", 0.0
    watch.samples.clear()
    log_event(ctx.log, "reclaim", ctx.user_name, ctx.profile_slug, ctx.name, stage="spared", cpu=f"{used:.3f}")
