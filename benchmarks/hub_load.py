"""The hub under load: N users log in through the login page, spawn with concurrency C, open JupyterLab
through the proxy, run one cell in a kernel, and stop; the REST API's latency and the hub's CPU and
memory are sampled all the while, after the same figures for the idle hub (the baseline). With
--compare-bare, a plain JupyterHub holding the same users answers the same users listing in the same
moments, so what our hooks add per request shows as a ratio; with --bare-spawns the plain hub also gets
the same visits (its own servers started, polled, opened and stopped, in the same moments), so both hubs
answer the listing under the same kind of load. --profile FILE records the hub with py-spy meanwhile and
says where its event loop spent the time.

    .venv/bin/python benchmarks/hub_load.py --backend local --users 20 --concurrency 20
    .venv/bin/python benchmarks/hub_load.py --backend slurm --users 30 --concurrency 30   # its own dev SLURM
    .venv/bin/python benchmarks/hub_load.py --users 20 --compare-bare --bare-spawns --profile hub.txt
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import requests
import yaml
from tornado.httpclient import HTTPClientError

from harness import (ADMIN_PASSWORD, USER_PASSWORD, Api, BenchError, add_account, add_out_option, bare_hub, ensure_unix_users,
                     exit_on_signals, hpclab_hub, hub_proxy, ignore_signals, machine_info, root_workdir, stop_hubs, summary,
                     write_results)

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

    ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"}, connect_timeout=timeout,
                                             request_timeout=timeout))  # tornado's 20 s is short on a machine this busy
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


def bare_user(hub: Any, name: str) -> Api:
    """A user's own token on the plain hub (made with the service's token), as our users have on ours."""
    made = requests.post(f"{hub.url}/hub/api/users/{name}/tokens", json={"note": "hub_load", "expires_in": 7200}, timeout=30,
                         headers={"Authorization": f"token {hub.service_token}"})
    if made.status_code != 201:
        raise BenchError(f"bare: no token for {name}: {made.status_code} {made.text}")
    return Api(hub, name, made.json()["token"])


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
    p.add_argument("--bare-spawns", action="store_true", help="with --compare-bare: the plain hub gets the same visits (its own servers)")
    p.add_argument("--server-nice", type=int, default=None, help="local backend: backends.local.server_nice for this run")
    p.add_argument("--profile", type=Path, default=None, help="record the hub with py-spy during the load into FILE (collapsed stacks)")
    p.add_argument("--keep", action="store_true", help="keep the hubs' folders afterwards")
    add_out_option(p, "hub_load")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bare_spawns and not args.compare_bare:
        print("hub_load: --bare-spawns needs --compare-bare", file=sys.stderr)
        return 2
    if (tmp := root_workdir("hub_load")) is None:
        return 2
    exit_on_signals()
    users = [f"load{i:03d}" for i in range(1, args.users + 1)]
    hubs = {"hpclab": hpclab_hub("hpclab", tmp / "hpclab", CONFIGS[args.backend])}
    deploy = hubs["hpclab"].config  # every start may take as long as the benchmark allows (2 cores, N JupyterLabs at once)
    for profile in deploy["profiles"]:
        profile["spawn_timeout"] = int(args.timeout)
    if args.server_nice is not None and args.backend == "local":
        deploy["backends"]["local"]["server_nice"] = args.server_nice
    if args.compare_bare:
        hubs["bare"] = bare_hub("bare", tmp / "bare")
        hubs["bare"].env["BENCH_SPAWN_TIMEOUT"] = str(int(args.timeout))  # the same patience as our profiles get
    cluster, wrappers, created, failures, records, profiler = None, None, [], [], [], None
    bare_records: list[dict[str, Any]] = []
    bare_failures: list[str] = []
    results: dict[str, Any] = {"users": args.users, "concurrency": args.concurrency, "backend": args.backend,
                               "server_nice": deploy["backends"].get("local", {}).get("server_nice")}
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
        pids = {name: hub.proc.pid for name, hub in hubs.items()}
        idle = Sampler(targets, pids, args.sample)
        idle.start()
        time.sleep(args.baseline)
        results["idle"] = idle.finish()
        apis = [Api.login(hubs["hpclab"], name, USER_PASSWORD, "hub_load") for name in users]
        bare_apis = [bare_user(hubs["bare"], name) for name in users] if args.bare_spawns else []
        if args.profile is not None:
            profiler = Profiler(hubs["hpclab"].proc.pid, args.profile)
        load = Sampler(targets, pids, args.sample)
        load.start()
        calls_from = time.time()
        t0 = time.perf_counter()

        def visit(api: Api) -> None:
            done, failed = (records, failures) if api.hub is hubs["hpclab"] else (bare_records, bare_failures)
            try:
                done.append(user_session(api, PROFILES[args.backend], args.timeout))
            except (BenchError, requests.RequestException, asyncio.TimeoutError, OSError, HTTPClientError) as exc:
                failed.append(f"{api.user}: {type(exc).__name__}: {str(exc).splitlines()[0]}")

        visitors = [a for pair in zip(apis, bare_apis) for a in pair] if bare_apis else apis  # same moments on both hubs
        with ThreadPoolExecutor(args.concurrency * (2 if bare_apis else 1)) as pool:
            list(pool.map(visit, visitors))
        results["all_ready_s"] = round(time.perf_counter() - t0, 2)
        stop_failures: list[str] = []

        def leave(api: Api) -> float | None:
            try:
                return api.stop(poll=0.5, timeout=120)
            except (BenchError, requests.RequestException) as exc:
                stop_failures.append(f"{api.user}: {str(exc).splitlines()[0]}")
                return None

        with ThreadPoolExecutor(args.concurrency * (2 if bare_apis else 1)) as pool:
            stops = [s for s, api in zip(pool.map(leave, visitors), visitors) if s is not None and api.hub is hubs["hpclab"]]
        results["stop_failures"] = stop_failures
        calls_to = time.time()
        results["load"] = load.finish()
        if profiler is not None:
            results["profile"] = profiler.finish()
        if bare_apis:
            bare_spawn = [r["spawn_s"] for r in bare_records]
            results["bare"] = {"spawn_failures": len(bare_failures), "failures": bare_failures[:20],
                               "spawn_p50_s": round(percentile(bare_spawn, 50), 2), "spawn_p95_s": round(percentile(bare_spawn, 95), 2)}
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
        if profiler is not None and profiler.proc.poll() is None:
            profiler.proc.kill()
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
                                               "hub_cpu_s", "loop_cpu_s", "loop_wait_s", "bare_loop_wait_s", "hub_rss_mb", "proxy_rss_mb")]
    for key, idle_value, load_value in rows:
        print(f"{key:<22} {idle_value!s:>10} {load_value!s:>10}")
    for key in ("spawn_failures", "spawn_p50_s", "spawn_p95_s", "all_ready_s", "squeue_calls_per_poll"):
        if key in results:
            print(f"{key:<22} {results[key]!s:>21}")
    if "bare" in results:
        print(f"{'bare hub spawn p50/p95':<22} {results['bare']['spawn_p50_s']!s:>10} {results['bare']['spawn_p95_s']!s:>10}"
              f"  ({results['bare']['spawn_failures']} failures)")
    if "profile" in results:
        prof = results["profile"]
        print(f"hub event loop busy {prof['loop_busy_share']:.0%} of the load; HPCLab code on the stack in {prof['hpclab_share_of_busy']:.0%} of that")
        for row in prof["top_inclusive"][:12]:
            print(f"  {row['share_of_busy']:>6.1%}  {row['frame']}")
    print(f"results: {path}")
    for problem in failures + results.get("stop_failures", []):
        print(f"failed: {problem}")
    return 1 if failures or results.get("stop_failures") else 0


if __name__ == "__main__":
    sys.exit(main())
