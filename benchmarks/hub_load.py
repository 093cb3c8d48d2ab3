"""The hub under load: N users log in through the login page, spawn with concurrency C, open JupyterLab
through the proxy, run one cell in a kernel, and stop; the REST API's latency and the hub's CPU and
memory are sampled all the while, after the same figures for the idle hub (the baseline). With
--compare-bare, a plain JupyterHub holding the same users answers the same users listing in the same
moments, so what our hooks add per request shows as a ratio.

    .venv/bin/python benchmarks/hub_load.py --backend local --users 20 --concurrency 20
    .venv/bin/python benchmarks/hub_load.py --backend slurm --users 30 --concurrency 30   # its own dev SLURM
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import requests
import yaml

from harness import (ADMIN_PASSWORD, USER_PASSWORD, Api, BenchError, add_account, add_out_option, bare_hub, ensure_unix_users,
                     exit_on_signals, hpclab_hub, ignore_signals, machine_info, stop_hubs, summary, write_results)

PROFILES = {"local": "cpu-small", "slurm": "cpu"}
CONFIGS = {"local": "hpclab-local.yaml", "slurm": "hpclab-slurm.yaml"}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), inclusive method; 0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q) - 1))]


async def _run_cell(url: str, token: str, code: str, timeout: float) -> str:
    """Execute ``code`` over the kernel's websocket (as JupyterLab does); its stdout."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"}))
    msg_id = uuid.uuid4().hex
    await ws.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "bench", "session": uuid.uuid4().hex,
                   "date": "", "version": "5.3"}, "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False},
    }))
    out, deadline = [], time.monotonic() + timeout
    while True:
        raw = await asyncio.wait_for(ws.read_message(), max(0.1, deadline - time.monotonic()))
        if raw is None:
            raise BenchError("kernel websocket closed")
        msg = json.loads(raw)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["header"]["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["header"]["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            ws.close()
            return "".join(out)


def user_session(api: Api, profile: str, timeout: float) -> dict[str, Any]:
    """One user's whole visit: spawn (form-equivalent POST) to ready, JupyterLab through the proxy, one cell."""
    record: dict[str, Any] = {"user": api.user}
    spawned = api.spawn({"profile": profile}, poll=0.5, timeout=timeout)
    record["spawn_s"] = spawned["ready_s"]
    token = api.http.headers["Authorization"].split()[1]
    base = f"{api.hub.url}/user/{api.user}"
    t0 = time.perf_counter()
    lab = api.http.get(f"{base}/lab", timeout=60)
    if lab.status_code != 200:
        raise BenchError(f"{api.user}: JupyterLab answered {lab.status_code} through the proxy")
    kernel = api.http.post(f"{base}/api/kernels", json={}, timeout=120).json()
    try:
        ws = f"{base}/api/kernels/{kernel['id']}/channels".replace("http", "ws", 1)
        out = asyncio.run(_run_cell(ws, token, "print(6 * 7)", timeout=120))
        if out.strip() != "42":
            raise BenchError(f"{api.user}: the cell printed {out!r}")
    finally:
        api.http.delete(f"{base}/api/kernels/{kernel['id']}", timeout=60)
    record["lab_and_cell_s"] = round(time.perf_counter() - t0, 3)
    return record


class Sampler(threading.Thread):
    """Every ``interval`` s: the users listing's latency on each hub, and the hub's (and proxy's) CPU and memory."""

    def __init__(self, targets: dict[str, tuple[str, dict[str, str]]], hub_pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.targets, self.interval, self.stop_event = targets, interval, threading.Event()
        self.hub = psutil.Process(hub_pid)
        self.latency: dict[str, list[float]] = {name: [] for name in targets}
        self.errors: dict[str, int] = {name: 0 for name in targets}  # requests that failed or answered non-200
        self.rss_mb: list[float] = []
        self.proxy_rss_mb: list[float] = []
        self.cpu0 = self._cpu()

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
            with contextlib.suppress(psutil.Error):  # a child exiting between listing and reading: next sample
                self.rss_mb.append(self.hub.memory_info().rss / 2**20)
                self.proxy_rss_mb.append(sum(p.memory_info().rss for p in self.hub.children() if p.name() == "node") / 2**20)
            self.stop_event.wait(self.interval)

    def finish(self) -> dict[str, Any]:
        self.stop_event.set()
        self.join(10)
        ours = self.latency.get("hpclab", [])
        result = {"api_p50_ms": round(percentile(ours, 50), 1), "api_p99_ms": round(percentile(ours, 99), 1),
                  "api_samples": len(ours), "api_errors": self.errors.get("hpclab", 0), "hub_cpu_s": round(self._cpu() - self.cpu0, 2),
                  "hub_rss_mb": round(max(self.rss_mb, default=0), 1), "proxy_rss_mb": round(max(self.proxy_rss_mb, default=0), 1)}
        if "bare" in self.latency and self.latency["bare"]:
            bare = self.latency["bare"]
            result.update(bare_api_p50_ms=round(percentile(bare, 50), 1), bare_api_p99_ms=round(percentile(bare, 99), 1),
                          users_listing_ratio=round(percentile(ours, 50) / max(percentile(bare, 50), 1e-9), 3))
        return result


def slurm_setup(users: list[str], cpus: int, tmp: Path) -> tuple[Path, Any]:
    """A private dev SLURM with cores and memory for every user's job (1G each), and the counting wrappers."""
    import slurm_spawn as cluster

    cluster.dev_cluster("wipe", cpus)
    if (done := cluster.dev_cluster("up", cpus, memory_mb=1024 * len(users) + 4096)).returncode != 0:
        raise BenchError(f"dev-cluster up failed:\n{done.stdout}{done.stderr}")
    return cluster.install_wrappers(tmp / "calls"), cluster


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("local", "slurm"), default="local")
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=20, help="users spawning at once")
    p.add_argument("--cpus", type=int, default=None, help="CPUs the dev SLURM advertises (default users + 2)")
    p.add_argument("--baseline", type=float, default=10, help="seconds of sampling the idle hub first (default 10)")
    p.add_argument("--sample", type=float, default=0.25, help="seconds between samples (default 0.25)")
    p.add_argument("--timeout", type=float, default=600, help="seconds one user's spawn may take (default 600)")
    p.add_argument("--compare-bare", action="store_true", help="also time a plain JupyterHub's users listing meanwhile")
    p.add_argument("--keep", action="store_true", help="keep the hubs' folders afterwards")
    add_out_option(p, "hub_load")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("hub_load: run as root (servers run as their users' accounts)", file=sys.stderr)
        return 2
    exit_on_signals()
    users = [f"load{i:03d}" for i in range(1, args.users + 1)]
    tmp = Path(tempfile.mkdtemp(prefix="hub_load-"))
    tmp.chmod(0o711)
    hubs = {"hpclab": hpclab_hub("hpclab", tmp / "hpclab", CONFIGS[args.backend])}
    deploy = hubs["hpclab"].config  # every start may take as long as the benchmark allows (2 cores, N JupyterLabs at once)
    for profile in deploy["profiles"]:
        profile["spawn_timeout"] = int(args.timeout)
    if args.compare_bare:
        hubs["bare"] = bare_hub("bare", tmp / "bare")
    cluster, wrappers, created, failures, records = None, None, [], [], []
    results: dict[str, Any] = {"users": args.users, "concurrency": args.concurrency, "backend": args.backend}
    try:
        if args.backend == "slurm":
            wrappers, cluster = slurm_setup(users, args.cpus or args.users + 2, tmp)
            deploy["backends"]["cluster"]["slurm_conf"] = cluster.SLURM_CONF
            created += ensure_unix_users(users)  # SLURM jobs run as the users' own accounts
        hubs["hpclab"].config_path.write_text(yaml.safe_dump(deploy, sort_keys=False))
        if args.backend == "local":  # the hub makes jupyter-<name> on first start: remove those it made for us
            created += [f"jupyter-{n}" for n in users if subprocess.run(["id", f"jupyter-{n}"], capture_output=True).returncode]
        for name in users:
            add_account(hubs["hpclab"], name)
        for name, hub in hubs.items():
            hub.start(timeout=180, path_first=wrappers)
        if "bare" in hubs:  # the same users, so both listings carry the same rows
            for name in users:
                requests.post(f"{hubs['bare'].url}/hub/api/users/{name}", timeout=30,
                              headers={"Authorization": f"token {hubs['bare'].service_token}"})
        admin = Api.login(hubs["hpclab"], "admin", ADMIN_PASSWORD, "hub_load")
        targets = {"hpclab": (f"{hubs['hpclab'].url}/hub/api/users", dict(admin.http.headers))}
        if "bare" in hubs:
            targets["bare"] = (f"{hubs['bare'].url}/hub/api/users", {"Authorization": f"token {hubs['bare'].service_token}"})
        print(f"hub_load: {args.users} users on the {args.backend} backend, {args.concurrency} at once", flush=True)
        idle = Sampler(targets, hubs["hpclab"].proc.pid, args.sample)
        idle.start()
        time.sleep(args.baseline)
        results["idle"] = idle.finish()
        apis = [Api.login(hubs["hpclab"], name, USER_PASSWORD, "hub_load") for name in users]
        load = Sampler(targets, hubs["hpclab"].proc.pid, args.sample)
        load.start()
        calls_from = time.time()
        t0 = time.perf_counter()

        def visit(api: Api) -> None:
            try:
                records.append(user_session(api, PROFILES[args.backend], args.timeout))
            except (BenchError, requests.RequestException, asyncio.TimeoutError, OSError) as exc:
                failures.append(f"{api.user}: {type(exc).__name__}: {str(exc).splitlines()[0]}")

        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(visit, apis))
        results["all_ready_s"] = round(time.perf_counter() - t0, 2)
        stop_failures: list[str] = []

        def leave(api: Api) -> float | None:
            try:
                return api.stop(poll=0.5, timeout=120)
            except (BenchError, requests.RequestException) as exc:
                stop_failures.append(f"{api.user}: {str(exc).splitlines()[0]}")
                return None

        with ThreadPoolExecutor(args.concurrency) as pool:
            stops = [s for s in pool.map(leave, apis) if s is not None]
        results["stop_failures"] = stop_failures
        calls_to = time.time()
        results["load"] = load.finish()
        spawn = [r["spawn_s"] for r in records]
        results.update(spawn_failures=len(failures), failures=failures[:20], spawn_p50_s=round(percentile(spawn, 50), 2),
                       spawn_p95_s=round(percentile(spawn, 95), 2), lab_and_cell=summary([r["lab_and_cell_s"] for r in records]) if records else {},
                       stop=summary(stops) if stops else {}, **results["load"])
        if cluster is not None:
            calls = cluster.read_calls(tmp / "calls" / "calls.log")
            interval = hubs["hpclab"].config["backends"]["cluster"]["poll_interval"]
            cycles = max(1.0, (calls_to - calls_from) / interval)
            listing = cluster.squeue_kinds(calls, calls_from, calls_to)["list_all"]
            results.update(squeue_calls=listing, poll_cycles=round(cycles, 1), squeue_calls_per_poll=round(listing / cycles, 2),
                           sbatch_calls=cluster.count(calls, "sbatch", calls_from, calls_to))
    except (KeyboardInterrupt, SystemExit, BenchError, requests.RequestException, subprocess.CalledProcessError) as exc:
        print(f"hub_load: stopped: {type(exc).__name__}: {exc}\n{hubs['hpclab'].log_tail()}", file=sys.stderr)
        return 1
    finally:
        ignore_signals()
        problems = stop_hubs(hubs, timeout=120)
        if cluster is not None:
            cluster.cancel_all()
            cluster.dev_cluster("down" if args.keep else "wipe", args.cpus or args.users + 2)
        for name in created:
            subprocess.run(["userdel", "-r", name], capture_output=True)
        for problem in problems:
            print(f"hub_load: clean-up: {problem}", file=sys.stderr)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    results["machine"] = machine_info("jupyterhub", "jupyterlab")
    path = write_results("hub_load", results, args.out)
    rows = [("", "idle", "load")] + [(k, results["idle"].get(k, "-"), results["load"].get(k, "-"))
                                     for k in ("api_p50_ms", "api_p99_ms", "bare_api_p50_ms", "users_listing_ratio",
                                               "hub_cpu_s", "hub_rss_mb", "proxy_rss_mb")]
    for key, idle_value, load_value in rows:
        print(f"{key:<22} {idle_value!s:>10} {load_value!s:>10}")
    for key in ("spawn_failures", "spawn_p50_s", "spawn_p95_s", "all_ready_s", "squeue_calls_per_poll"):
        if key in results:
            print(f"{key:<22} {results[key]!s:>21}")
    print(f"results: {path}")
    for problem in failures + results.get("stop_failures", []):
        print(f"failed: {problem}")
    return 1 if failures or results.get("stop_failures") else 0


if __name__ == "__main__":
    sys.exit(main())
