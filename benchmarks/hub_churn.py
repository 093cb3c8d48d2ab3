"""The hub and its proxy over a long run of churn: K users each start a server, open JupyterLab through
the proxy, run one cell over the kernel's websocket, stop, and start again, for --duration seconds. Every
--sample seconds it records the hub's and the proxy's memory (RSS), open files and threads, and the
proxy's route count. After --warmup seconds the memory must not grow by more than --bound-mb (hub and
proxy each), and when the churn ends the proxy must hold no route of a stopped server.

    .venv/bin/python benchmarks/hub_churn.py --duration 3600 --users 8      # the hour-long check
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil
import requests
import yaml
from tornado.httpclient import HTTPClientError

from harness import (ADMIN_PASSWORD, USER_PASSWORD, Api, BenchError, add_account, add_out_option, exit_on_signals, hpclab_hub,
                     hub_proxy, ignore_signals, machine_info, root_workdir, stop_hubs, summary, write_results)
from load_clients import user_session
from load_probes import percentile

PROFILE = "cpu-small"


def slope_mb_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) points, in MB per hour; 0 for fewer than two points."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return 0.0 if var == 0 else sum((t - mean_t) * (m - mean_m) for t, m in points) / var * 3600


class Watch(threading.Thread):
    """Every ``interval`` s: the hub's and the proxy's RSS, open files and threads, and the proxy's routes."""

    def __init__(self, hub_pid: int, api_port: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.api_port = api_port
        self.hub, self.interval, self.stop_event, self.t0 = psutil.Process(hub_pid), interval, threading.Event(), time.monotonic()
        self.samples: list[dict[str, float]] = []

    def routes(self, proxy: psutil.Process | None = None) -> int:
        """How many routes configurable-http-proxy holds, asked on its REST API with its own token."""
        token = (proxy or hub_proxy(self.hub)).environ()["CONFIGPROXY_AUTH_TOKEN"]  # root reads it; a benchmark's privilege
        got = requests.get(f"http://127.0.0.1:{self.api_port}/api/routes", timeout=10, headers={"Authorization": f"token {token}"})
        got.raise_for_status()
        return len(got.json())

    def sample(self) -> dict[str, float]:
        proxy = hub_proxy(self.hub)
        return {"t": round(time.monotonic() - self.t0, 1),
                "hub_rss_mb": round(self.hub.memory_info().rss / 2**20, 2), "proxy_rss_mb": round(proxy.memory_info().rss / 2**20, 2),
                "hub_fds": self.hub.num_fds(), "proxy_fds": proxy.num_fds(), "hub_threads": self.hub.num_threads(),
                "routes": self.routes(proxy)}

    def run(self) -> None:
        while not self.stop_event.is_set():
            with contextlib.suppress(psutil.Error, requests.RequestException, StopIteration):  # next sample
                self.samples.append(self.sample())
            self.stop_event.wait(self.interval)

    def finish(self) -> None:
        self.stop_event.set()
        self.join(30)


def growth(samples: list[dict[str, float]], key: str, warmup: float) -> dict[str, float]:
    """Memory of one process over the run: at the end of warm-up, at the end, the growth between, and the slope."""
    after = [(s["t"], s[key]) for s in samples if s["t"] >= warmup]
    if not after:
        raise BenchError(f"no sample after the {warmup:.0f} s warm-up: make --duration longer")
    head = [m for t, m in after if t < after[0][0] + 120]  # the first two minutes after warm-up, and the last two
    tail = [m for t, m in after if t > after[-1][0] - 120]
    return {"start_mb": samples[0][key], "after_warmup_mb": round(statistics.median(head), 1),
            "end_mb": round(statistics.median(tail), 1), "max_mb": max(s[key] for s in samples),
            "growth_mb": round(statistics.median(tail) - statistics.median(head), 1),
            "slope_mb_per_h": round(slope_mb_per_hour(after), 2)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=8, help="users starting and stopping, each in a loop (default 8)")
    p.add_argument("--duration", type=float, default=3600, help="seconds of churn (default 3600)")
    p.add_argument("--warmup", type=float, default=600, help="seconds before memory growth is counted (default 600)")
    p.add_argument("--sample", type=float, default=10, help="seconds between samples (default 10)")
    p.add_argument("--bound-mb", type=float, default=32, help="allowed memory growth after warm-up, hub and proxy each (default 32)")
    p.add_argument("--timeout", type=float, default=300, help="seconds one start may take (default 300)")
    p.add_argument("--keep", action="store_true", help="keep the hub's folder afterwards")
    add_out_option(p, "hub_churn")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (tmp := root_workdir("hub_churn")) is None:
        return 2
    exit_on_signals()
    users = [f"churn{i:03d}" for i in range(1, args.users + 1)]
    hubs = {"hpclab": hpclab_hub("hpclab", tmp / "hpclab", "hpclab-local.yaml")}
    hub = hubs["hpclab"]
    for profile in hub.config["profiles"]:
        profile["spawn_timeout"] = int(args.timeout)
    hub.config_path.write_text(yaml.safe_dump(hub.config, sort_keys=False))
    created = [f"jupyter-{n}" for n in users if subprocess.run(["id", f"jupyter-{n}"], capture_output=True).returncode]
    results: dict[str, Any] = {"users": args.users, "duration_s": args.duration, "warmup_s": args.warmup, "bound_mb": args.bound_mb}
    cycles: list[dict[str, Any]] = []
    failures: list[str] = []
    try:
        for name in users:
            add_account(hub, name)
        hub.start(timeout=180)
        apis = [Api.login(hub, name, USER_PASSWORD, "hub_churn") for name in users]
        Api.login(hub, "admin", ADMIN_PASSWORD, "hub_churn")
        watch = Watch(hub.proc.pid, hub.config["hub"]["proxy_api_port"], args.sample)
        idle_routes = watch.routes()
        watch.start()
        deadline = time.monotonic() + args.duration
        print(f"hub_churn: {args.users} users starting and stopping for {args.duration:.0f} s", flush=True)

        def churn(api: Api) -> None:
            while time.monotonic() < deadline:
                try:
                    record = user_session(api, PROFILE, args.timeout)
                    record["stop_s"] = api.stop(poll=0.5, timeout=120)
                    cycles.append(record)
                except (BenchError, requests.RequestException, asyncio.TimeoutError, OSError, HTTPClientError) as exc:
                    failures.append(f"{api.user}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
                    with contextlib.suppress(BenchError, requests.RequestException):
                        api.stop(poll=0.5, timeout=120)

        with ThreadPoolExecutor(args.users) as pool:
            list(pool.map(churn, apis))
        time.sleep(min(args.sample, 5))  # the last stop's route removal, then one more sample
        watch.finish()
        samples = watch.samples + [watch.sample()]
        results.update(cycles=len(cycles), failures=len(failures), failure_examples=failures[:20],
                       spawn=summary([c["spawn_s"] for c in cycles]) if cycles else {},
                       spawn_p95_s=round(percentile([c["spawn_s"] for c in cycles], 95), 2),
                       stop=summary([c["stop_s"] for c in cycles]) if cycles else {},
                       hub=growth(samples, "hub_rss_mb", args.warmup), proxy=growth(samples, "proxy_rss_mb", args.warmup),
                       fds={"hub": [samples[0]["hub_fds"], samples[-1]["hub_fds"]], "proxy": [samples[0]["proxy_fds"], samples[-1]["proxy_fds"]]},
                       hub_threads=[samples[0]["hub_threads"], samples[-1]["hub_threads"]],
                       routes={"idle": idle_routes, "end": samples[-1]["routes"], "max": max(s["routes"] for s in samples)},
                       samples=samples)
    except (KeyboardInterrupt, SystemExit, BenchError, requests.RequestException, subprocess.CalledProcessError) as exc:
        print(f"hub_churn: stopped: {type(exc).__name__}: {exc}\n{hub.log_tail()}", file=sys.stderr)
        return 1
    finally:
        ignore_signals()
        problems = stop_hubs(hubs, timeout=120)
        for name in created:
            subprocess.run(["userdel", "-r", name], capture_output=True)
        for problem in problems:
            print(f"hub_churn: clean-up: {problem}", file=sys.stderr)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    within = {name: results[name]["growth_mb"] <= args.bound_mb for name in ("hub", "proxy")}
    leaked_routes = results["routes"]["end"] - results["routes"]["idle"]
    results.update(within_bound=all(within.values()), leaked_routes=leaked_routes, machine=machine_info("jupyterhub", "configurable-http-proxy"))
    path = write_results("hub_churn", results, args.out)
    print(f"{'':<8} {'start':>8} {'warm':>8} {'end':>8} {'max':>8} {'growth':>8} {'MB/h':>8}   (RSS, MB)")
    for name in ("hub", "proxy"):
        g = results[name]
        print(f"{name:<8} {g['start_mb']:>8} {g['after_warmup_mb']:>8} {g['end_mb']:>8} {g['max_mb']:>8} {g['growth_mb']:>8} {g['slope_mb_per_h']:>8}")
    print(f"cycles {len(cycles)}, failures {len(failures)}, spawn p50 {results['spawn'].get('median', 0)} s, "
          f"routes idle/end {results['routes']['idle']}/{results['routes']['end']}, "
          f"growth within {args.bound_mb:.0f} MB: {results['within_bound']}")
    print(f"results: {path}")
    for problem in failures[:20]:
        print(f"failed: {problem}")
    return 0 if results["within_bound"] and not failures and leaked_routes == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
