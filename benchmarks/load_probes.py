"""What the load benchmarks measure on a hub while users come and go: the users listing's latency, the
hub's and proxy's CPU and memory, its event loop's own time, and (with py-spy) where that loop was busy."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import requests

from harness import BenchError, hub_proxy


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), inclusive method; 0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q) - 1))]


def loop_schedstat(pid: int) -> tuple[float, float]:
    """Seconds the process's main thread (the hub's event loop) has run on a CPU, and waited for one."""
    with open(f"/proc/{pid}/schedstat") as handle:
        ran, waited, _ = handle.read().split()
    return int(ran) / 1e9, int(waited) / 1e9


class Sampler(threading.Thread):
    """Every ``interval`` s: the users listing's latency on each hub, and the hub's (and proxy's) CPU and memory."""

    def __init__(self, targets: dict[str, tuple[str, dict[str, str]]], pids: dict[str, int], interval: float) -> None:
        """``targets`` and ``pids`` by hub name; "hpclab" is ours."""
        super().__init__(daemon=True)
        self.targets, self.interval, self.stop_event = targets, interval, threading.Event()
        self.hub = psutil.Process(pids["hpclab"])
        self.latency: dict[str, list[float]] = {name: [] for name in targets}
        self.errors: dict[str, int] = {name: 0 for name in targets}  # requests that failed or answered non-200
        self.rss_mb: list[float] = []
        self.proxy_rss_mb: list[float] = []
        self.cpu0 = self._cpu()
        self.pids = dict(pids)
        self.sched0 = {name: loop_schedstat(pid) for name, pid in self.pids.items()}

    def _cpu(self) -> float:
        times = self.hub.cpu_times()
        return times.user + times.system

    def run(self) -> None:
        session = requests.Session()
        while not self.stop_event.is_set():
            for name, (url, headers) in self.targets.items():  # the hubs in the same moment, alternating first
                t0 = time.perf_counter()
                try:
                    ok = session.get(url, headers=headers, timeout=30).status_code == 200
                except requests.RequestException:
                    ok = False
                if ok:
                    self.latency[name].append((time.perf_counter() - t0) * 1000)
                else:
                    self.errors[name] += 1
            self.targets = dict(reversed(list(self.targets.items())))
            with contextlib.suppress(psutil.Error, StopIteration):  # a child exiting between listing and reading: next sample
                self.rss_mb.append(self.hub.memory_info().rss / 2**20)
                self.proxy_rss_mb.append(hub_proxy(self.hub).memory_info().rss / 2**20)
            self.stop_event.wait(self.interval)

    def finish(self) -> dict[str, Any]:
        self.stop_event.set()
        self.join(10)
        ours = self.latency.get("hpclab", [])
        result = {"api_p50_ms": round(percentile(ours, 50), 1), "api_p99_ms": round(percentile(ours, 99), 1),
                  "api_samples": len(ours), "api_errors": self.errors.get("hpclab", 0), "hub_cpu_s": round(self._cpu() - self.cpu0, 2),
                  "hub_rss_mb": round(max(self.rss_mb, default=0), 1), "proxy_rss_mb": round(max(self.proxy_rss_mb, default=0), 1)}
        for name, pid in self.pids.items():  # the event loops' own time: working, and waiting for a core
            ran, waited = (b - a for a, b in zip(self.sched0[name], loop_schedstat(pid)))
            prefix = "" if name == "hpclab" else f"{name}_"
            result.update({f"{prefix}loop_cpu_s": round(ran, 2), f"{prefix}loop_wait_s": round(waited, 2)})
        if "bare" in self.latency and self.latency["bare"]:
            bare = self.latency["bare"]
            result.update(bare_api_p50_ms=round(percentile(bare, 50), 1), bare_api_p99_ms=round(percentile(bare, 99), 1),
                          users_listing_ratio=round(percentile(ours, 50) / max(percentile(bare, 50), 1e-9), 3))
        return result


class Profiler:
    """py-spy recording the hub's threads (collapsed stacks) from start() until finish()."""

    RATE = 100  # samples a second

    def __init__(self, pid: int, out: Path) -> None:
        exe = shutil.which("py-spy")
        if exe is None:
            raise BenchError("--profile needs py-spy on PATH (pip install py-spy)")
        self.out, self.t0 = out, time.monotonic()
        self.proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--format", "raw", "--output", str(out), "--rate",
                                      str(self.RATE), "--threads", "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def finish(self) -> dict[str, Any]:
        seconds = time.monotonic() - self.t0
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if not self.out.exists():
            raise BenchError(f"py-spy wrote nothing: {self.proc.stderr.read().decode(errors='replace')[-500:]}")
        return loop_profile(self.out.read_text(), seconds, self.RATE)


FRAME = re.compile(r"^(?P<func>.+) \((?P<file>[^():]+):\d+\)$")


def loop_profile(raw: str, seconds: float, rate: int, top: int = 25) -> dict[str, Any]:
    """Where the hub's event loop (its main thread) was busy: the share of the run it was busy, the share of
    that spent with HPCLab's code on the stack, and the functions most often on the stack (inclusive)."""
    busy, ours, inclusive = 0, 0, {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack.startswith("thread (") or ": MainThread;" not in stack or not count.isdigit():
            continue
        n = int(count)
        busy += n
        frames = {f"{m['func']} ({m['file']})" for part in stack.split(";")[1:] if (m := FRAME.match(part))}
        if any("hpclab" in frame for frame in frames):
            ours += n
        for frame in frames:
            inclusive[frame] = inclusive.get(frame, 0) + n

    def scaffolding(frame: str) -> bool:  # the loop itself and the hub's start-up: on every busy stack
        return "(asyncio/" in frame or "(tornado/platform/" in frame or "launch_instance" in frame or frame.startswith(("<module>", "main ("))

    ranked = sorted(((k, v) for k, v in inclusive.items() if not scaffolding(k)), key=lambda kv: -kv[1])[:top]
    return {"seconds": round(seconds, 1), "loop_busy_share": round(busy / max(1.0, seconds * rate), 3),
            "hpclab_share_of_busy": round(ours / max(1, busy), 3),
            "top_inclusive": [{"frame": k, "share_of_busy": round(v / max(1, busy), 3)} for k, v in ranked]}
