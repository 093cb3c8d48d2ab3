"""Reclaim under pressure, by measured use: while a start waits for a GPU of a local backend, servers holding one
that used it (or, without NVML, their cores) less than the YAML says over ``window`` are warned and, after ``grace``,
stopped, lowest priority first, never one of higher priority than the waiting start's and never one that is busy (its
use is measured again until the end of the grace: a server that works again keeps its GPU).

Use is, where NVML measures the held GPUs (an NVIDIA driver is present, gpu_use.py), their busy fraction
(``priorities.reclaim.gpu_below``); otherwise the CPU time of every process in the server's cgroup
(``/proc/<pid>/stat``: user and system time, theirs and their reaped children's) against ``below`` per core. Both are
sampled at each look while the pressure lasts. The warning is the wall-time path: the server's end
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
from hpclab_hub.backends.local.gpu_use import gpu_busy
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
    gpu_samples: deque = field(default_factory=deque)  # (monotonic time, busy fraction of the held GPUs) from NVML
    warned_at: float = 0.0  # monotonic time of the warning (0: not warned)
    end_before: float = 0.0  # its wall-time end before the warning (restored if it works again)

    def add(self, now: float, used: float, keep: float, gpu_busy: float | None = None) -> None:
        self.samples.append((now, used))
        while len(self.samples) > 2 and now - self.samples[1][0] >= keep:
            self.samples.popleft()
        if gpu_busy is None:
            self.gpu_samples.clear()  # one look without NVML's answer: the GPU measure restarts
            return
        self.gpu_samples.append((now, gpu_busy))
        while len(self.gpu_samples) > 2 and now - self.gpu_samples[1][0] >= keep:
            self.gpu_samples.popleft()

    def gpu_used(self, since: float) -> float | None:
        """Mean busy fraction of the held GPUs over the samples at or after ``since``; None without two of them."""
        busy = [b for t, b in self.gpu_samples if t >= since]
        return sum(busy) / len(busy) if len(busy) >= 2 else None

    def measured(self, since: float, cpus: int, reclaim: Any) -> tuple[float, float, str] | None:
        """(use, threshold, unit) since ``since``: the GPUs' busy fraction where NVML measured them throughout, else
        cores used; None when too short to tell."""
        if self.gpu_samples and self.gpu_samples[0][0] <= since:
            gpu = self.gpu_used(since)
            return None if gpu is None else (gpu, reclaim.gpu_below, "gpu")
        cores = self.cores_used(since)
        return None if cores is None else (cores, reclaim.below * cpus, "cpu")

    def cores_used(self, since: float) -> float | None:
        """Average cores used from the first sample at or after ``since`` until the last; None if too short."""
        first = next(((t, u) for t, u in self.samples if t >= since), None)
        last = self.samples[-1] if self.samples else None
        if first is None or last is None or last[0] - first[0] <= 0:
            return None
        return max(0.0, last[1] - first[1]) / (last[0] - first[0])


_WATCHES: dict[str, Watch] = {}


def is_warned(owner_key: str) -> bool:
    """Whether the GPU holder ``owner_key`` has been warned that its GPU is being reclaimed (the admins' page)."""
    watch = _WATCHES.get(owner_key)
    return watch is not None and bool(watch.warned_at)


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
        busy = gpu_busy(pool.holders[server.owner_key].gpu_ids)
        watch.add(now, cpu_seconds(pids), reclaim.window + reclaim.grace, busy)
    for gone in set(_WATCHES) - {s.owner_key for s in holders}:
        del _WATCHES[gone]
    warned = [s for s in holders if _WATCHES[s.owner_key].warned_at]
    for server in warned:  # working again: it keeps its GPU
        watch = _WATCHES[server.owner_key]
        again = watch.measured(watch.warned_at, server.ctx.profile.cpus, reclaim)
        if again is not None and now - watch.warned_at >= 2 and again[0] >= again[1]:
            _spare(server, watch, again)
    candidates = []
    for server in holders:
        watch = _WATCHES[server.owner_key]
        priority = settings.priority_of(server.ctx.user_groups())
        since = now - reclaim.window
        measured = (
            watch.measured(since, server.ctx.profile.cpus, reclaim) if now - watch.samples[0][0] >= reclaim.window else None
        )
        if watch.warned_at or measured is None or priority > waiter.priority or measured[0] >= measured[1]:
            continue
        candidates.append((priority, measured, server))
    short = (
        waiter.gpus
        - len(pool.free_gpus())
        - sum(
            len(pool.holders[s.owner_key].gpu_ids)
            for s in warned
            if _WATCHES.get(s.owner_key) and _WATCHES[s.owner_key].warned_at
        )
    )
    for _priority, measured, server in sorted(candidates, key=lambda c: (c[0], c[1][0] / c[1][1]))[: max(0, short)]:
        _warn(server, _WATCHES[server.owner_key], measured, reclaim, now)


def _use_text(measured: tuple[float, float, str], cpus: int, reclaim: Any) -> str:
    used, _, unit = measured
    if unit == "gpu":
        return f"its GPUs were busy {used:.0%} of the time on average over {reclaim.window} s, below {reclaim.gpu_below:.0%}"
    return f"it used {used:.2f} of its {cpus} core(s) on average over {reclaim.window} s, below {reclaim.below:g} per core"


def _warn(server: Any, watch: Watch, measured: tuple[float, float, str], reclaim: Any, now: float) -> None:
    ctx = server.ctx
    watch.warned_at, watch.end_before = now, ctx.job_end_epoch
    end = time.time() + reclaim.grace
    ctx.job_end_epoch = min(ctx.job_end_epoch, end) if ctx.job_end_epoch else end
    server.reclaim_reason = (
        f"its GPU was reclaimed for a waiting start: {_use_text(measured, ctx.profile.cpus, reclaim)}; it was warned "
        f"{reclaim.grace} s before (open notebooks were saved)."
    )
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if server.process.pid:
            os.kill(server.process.pid, EARLY_SIGNAL)  # JupyterLab saves every open document now
            server._early_signal_sent = True
    used, _, unit = measured
    log_event(
        ctx.log,
        "reclaim",
        ctx.user_name,
        ctx.profile_slug,
        ctx.name,
        stage="warned",
        **{unit: f"{used:.3f}"},
        grace=reclaim.grace,
    )


def _spare(server: Any, watch: Watch, measured: tuple[float, float, str]) -> None:
    ctx = server.ctx
    ctx.job_end_epoch, server.reclaim_reason, watch.warned_at = watch.end_before, "", 0.0
    watch.samples.clear()
    watch.gpu_samples.clear()
    used, _, unit = measured
    log_event(ctx.log, "reclaim", ctx.user_name, ctx.profile_slug, ctx.name, stage="spared", **{unit: f"{used:.3f}"})
