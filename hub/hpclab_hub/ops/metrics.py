"""Prometheus metrics beside JupyterHub's own on /hub/metrics: spawn times, queue waits, failures, usage."""

from __future__ import annotations

import asyncio
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

_BUCKETS = (1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 300, 600, 1800, 3600, float("inf"))

SPAWN_DURATION = Histogram(
    "hpclab_spawn_duration_seconds",
    "Seconds from an accepted spawn request to a server answering, by profile and backend",
    ["profile", "backend"],
    buckets=_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "hpclab_queue_wait_seconds",
    "Seconds a SLURM job waited in the queue before it ran, by profile",
    ["profile", "backend"],
    buckets=_BUCKETS,
)
SPAWN_FAILURES = Counter(
    "hpclab_spawn_failures_total",
    "Spawn requests that did not give a server, by profile and reason",
    ["profile", "reason"],
)

# (user, groups, profile, gpus) of every running or starting server; set by the spawner module at import
ActiveLister = Callable[[], Iterable[tuple[str, frozenset[str], str, int]]]
_active_lister: list[ActiveLister] = []


def set_active_lister(lister: ActiveLister) -> None:
    """Where the usage gauges read running servers from (the hub's users, via a spawner)."""
    _active_lister[:] = [lister]


class UsageCollector:
    """Servers and GPUs in use per group and profile, computed at scrape time (never stale)."""

    def collect(self):
        servers = GaugeMetricFamily(
            "hpclab_servers_in_use", "Running or starting servers, by group and profile", labels=["group", "profile"]
        )
        gpus = GaugeMetricFamily(
            "hpclab_gpus_in_use", "GPUs held by running or starting servers, by group and profile", labels=["group", "profile"]
        )
        server_count: Tally = Tally()
        gpu_count: Tally = Tally()
        for lister in _active_lister:
            for _user, groups, profile, n_gpus in lister():
                for group in sorted(groups) or ["(none)"]:
                    server_count[(group, profile)] += 1
                    gpu_count[(group, profile)] += n_gpus
        for key, value in sorted(server_count.items()):
            servers.add_metric(list(key), value)
            gpus.add_metric(list(key), gpu_count[key])
        yield servers
        yield gpus


REGISTRY.register(UsageCollector())

# all-time usage per group from the hub's history (ops/history.py); set by the hub's configuration
_history_source: list[Callable[[], Iterable[Any]]] = []


def set_history_source(source: Callable[[], Iterable[Any]]) -> None:
    """Where the history counters read their totals from (``history.usage_by_group`` of the hub's database)."""
    _history_source[:] = [source]


class HistoryCollector:
    """Sessions, core-hours and GPU-hours per group since the history began: ``hpclab-hub usage --by group``'s numbers."""

    def collect(self):
        names = {
            "sessions": "Servers started",
            "core_hours": "Core-hours held by servers (running ones up to now)",
            "gpu_hours": "GPU-hours held by servers (running ones up to now)",
        }
        families = {
            key: CounterMetricFamily(f"hpclab_{key}", f"{text}, by group (the hub's history)", labels=["group"])
            for key, text in names.items()
        }
        for source in _history_source:
            for row in source():
                for key, family in families.items():
                    family.add_metric([row.key], getattr(row, key))
        yield from families.values()


REGISTRY.register(HistoryCollector())


def observe_spawn(spawner: Any, profile: str, backend: str) -> None:
    """Time a spawn from now until it is no longer pending; recorded only if the server came up."""
    started = time.monotonic()

    async def observe() -> None:
        while spawner._spawn_pending or getattr(spawner, "_start_pending", False):
            await asyncio.sleep(0.1)
        if spawner.ready:
            SPAWN_DURATION.labels(profile, backend).observe(time.monotonic() - started)

    spawner._metrics_task = asyncio.ensure_future(observe())
