#!/usr/bin/env python
"""SLURM backend: spawn-to-ready against the local backend, and a burst of users, on a private dev cluster.

Run as root from the repository root (it starts slurmctld/slurmd/munged and creates Unix users):

    .venv/bin/python benchmarks/slurm_spawn.py --repeat 10 --users 10

What it does:

1. Brings up its own one-node SLURM with deploy/slurm/dev-cluster under /tmp/hpclab-slurm-bench
   (controller port 6947, slurmd 6948, 16 CPUs so ten one-core jobs run at once), wiped first.
2. Puts a folder first on the hub's PATH with wrappers for squeue, sinfo, sbatch and scancel: each
   appends one line (time, command, uid, SLURM_JOB_ID, arguments) to a log and execs the real
   /usr/bin command. The hub runs SLURM commands through PATH (sbatch/scancel through sudo as the
   user, with the hub's PATH), so every call it makes is counted from outside the hub. Calls made
   inside jobs (SLURM_JOB_ID set) are counted apart.
3. Creates Unix users bench01..benchNN (useradd -m if missing) and hub accounts for them.
4. Phase A (serial): round by round, in alternating order, one spawn of profile ``cpu`` on the SLURM
   hub (tests/support/slurmtools.py's slurm_hub_yaml) and one of ``cpu-small`` on a local-backend hub
   (tests/support/hubtools.py's hub_yaml), both as bench01 with its own API token: POST
   /hub/api/users/bench01/server, poll GET /hub/api/users/bench01 until servers[""].ready, then
   DELETE and poll until gone. SLURM overhead = median(slurm) - median(local), goal <= 2 s.
5. Phase B (burst): all users POST at the same moment (threads behind a barrier) on the SLURM hub;
   each one's spawn-to-ready, the failures, and the hub's squeue calls in the window from the first
   POST to the last ready, against what polling squeue once per user would have cost. Then all stop.
6. Prints a table, writes benchmarks/results/slurm_spawn-<timestamp>.json, and cleans up (hubs,
   jobs, cluster) also on errors, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

from support import hubtools  # noqa: E402  (tests/support/hubtools.py: Hub, HubClient, hub_yaml)
from support.hubtools import USER_PASSWORD, add_account, make_reachable  # noqa: E402
from support.slurmtools import slurm_hub_yaml  # noqa: E402
from spawn_ready import machine_busy_s, machine_info, summary  # noqa: E402

DEV_CLUSTER = REPO / "deploy" / "slurm" / "dev-cluster"
RESULTS_DIR = REPO / "benchmarks" / "results"
WRAPPED = ("squeue", "sinfo", "sbatch", "scancel")
SLURM_PROFILE = "cpu"
LOCAL_PROFILE = "cpu-small"
OVERHEAD_GOAL_S = 2.0


class BenchError(RuntimeError):
    """A spawn or stop that did not go as it should (the message carries the hub log's tail)."""


# --- the private dev cluster -------------------------------------------------------------------


@dataclass
class DevCluster:
    """deploy/slurm/dev-cluster under its own prefix and ports, so it never meets the tests' cluster."""

    prefix: Path
    ctld_port: int
    slurmd_port: int
    cpus: int

    @property
    def conf(self) -> str:
        return str(self.prefix / "etc" / "slurm.conf")

    def env(self) -> dict[str, str]:
        return dict(
            os.environ,
            HPCLAB_SLURM_PREFIX=str(self.prefix),
            HPCLAB_SLURM_CTLD_PORT=str(self.ctld_port),
            HPCLAB_SLURM_SLURMD_PORT=str(self.slurmd_port),
            HPCLAB_SLURM_CPUS=str(self.cpus),
        )

    def _script(self, action: str, check: bool = True) -> None:
        subprocess.run([str(DEV_CLUSTER), action], env=self.env(), check=check, capture_output=True, text=True)

    def up(self) -> None:
        """Wipe whatever an earlier run left under the prefix, then start and wait until the node is idle."""
        self._script("wipe", check=False)
        done = subprocess.run([str(DEV_CLUSTER), "up"], env=self.env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"dev-cluster up failed:\n{done.stdout}{done.stderr}")

    def slurm(self, *argv: str) -> str:
        """Run a real SLURM command (not through the counting wrappers) against this cluster."""
        env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "SLURM_CONF": self.conf, "LANG": "C.UTF-8"}
        return subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=30).stdout

    def job_ids(self) -> list[str]:
        return self.slurm("squeue", "-h", "-o", "%i").split()

    def cancel_all(self, wait: float = 30) -> list[str]:
        """scancel every job on this (private) cluster and wait until none is listed; the ids cancelled."""
        ids = self.job_ids()
        if ids:
            self.slurm("scancel", *ids)
        deadline = time.monotonic() + wait
        while self.job_ids() and time.monotonic() < deadline:
            time.sleep(0.5)
        return ids

    def down(self, wipe: bool) -> None:
        self._script("wipe" if wipe else "down", check=False)


# --- counting SLURM calls from outside the hub ---------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One SLURM command the wrappers saw."""

    t: float  # epoch seconds
    command: str
    uid: int
    job_id: str  # SLURM_JOB_ID of the caller: set when a job (not the hub) ran the command
    args: str

    @property
    def from_hub(self) -> bool:
        return not self.job_id


@dataclass
class CallLog:
    """A folder of wrapper scripts (first on the hub's PATH) and the log they append to."""

    folder: Path

    @property
    def bin(self) -> Path:
        return self.folder / "bin"

    @property
    def log(self) -> Path:
        return self.folder / "calls.log"

    def install(self) -> None:
        """Write one wrapper per command; the jobs' users must be able to run them and append to the log."""
        self.bin.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)
        self.bin.chmod(0o755)
        self.log.touch()
        self.log.chmod(0o666)
        for command in WRAPPED:
            real = shutil.which(command, path="/usr/bin:/bin:/usr/sbin:/sbin")
            if real is None:
                raise BenchError(f"{command} not found in /usr/bin or /bin")
            wrapper = self.bin / command
            wrapper.write_text(
                "#!/bin/bash\n"
                f"# benchmarks/slurm_spawn.py: log the call, then run the real {command}\n"
                f"printf '%s\\t%s\\t%s\\t%s\\t%s\\n' \"$EPOCHREALTIME\" {command} \"$UID\" \"${{SLURM_JOB_ID:-}}\" \"$*\" >>{self.log}\n"
                f'exec {real} "$@"\n'
            )
            wrapper.chmod(0o755)

    def calls(self) -> list[Call]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            parts = line.split("\t", 4)
            if len(parts) == 5:
                out.append(Call(float(parts[0]), parts[1], int(parts[2]), parts[3], parts[4]))
        return out


def count_calls(calls: list[Call], command: str, start: float = 0.0, end: float = math.inf, from_hub: bool = True) -> int:
    """How many ``command`` calls the hub (or, with from_hub=False, the jobs) made in [start, end]."""
    return sum(1 for c in calls if c.command == command and c.from_hub == from_hub and start <= c.t <= end)


def call_totals(calls: list[Call]) -> dict[str, dict[str, int]]:
    """Per command: calls by the hub and calls from inside jobs, over the whole run."""
    return {cmd: {"hub": count_calls(calls, cmd), "jobs": count_calls(calls, cmd, from_hub=False)} for cmd in WRAPPED}


def squeue_kinds(calls: list[Call], start: float, end: float) -> dict[str, int]:
    """The hub's squeue calls in a window, by kind: the batched listing, --start, anything else."""
    kinds = {"list_all": 0, "start_times": 0, "other": 0}
    for c in calls:
        if c.command == "squeue" and c.from_hub and start <= c.t <= end:
            key = "start_times" if "--start" in c.args else "list_all" if "-t all" in c.args else "other"
            kinds[key] += 1
    return kinds


@contextlib.contextmanager
def path_first(folder: Path) -> Iterator[None]:
    """Put ``folder`` at the front of this process's PATH while a hub is started (the hub inherits it)."""
    old = os.environ.get("PATH", "/usr/bin:/bin")
    os.environ["PATH"] = f"{folder}:{old}"
    try:
        yield
    finally:
        os.environ["PATH"] = old


# --- users and hubs ------------------------------------------------------------------------------


def ensure_unix_users(names: list[str]) -> list[str]:
    """useradd -m each missing user; the names created."""
    created = []
    for name in names:
        if subprocess.run(["id", name], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-m", name], check=True, capture_output=True)
            created.append(name)
    return created


@dataclass
class BenchHub:
    """A hpclab-hub under measurement, with the pids it started so clean-up reaches them after it exits."""

    label: str
    hub: hubtools.Hub
    known_pids: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return self.hub.url

    def start(self, path_prefix: Path | None) -> None:
        with path_first(path_prefix) if path_prefix else contextlib.nullcontext():
            self.hub.start(timeout=180)
        self.remember_processes()

    def remember_processes(self) -> None:
        if self.hub.proc is None:
            return
        try:
            self.known_pids.update(p.pid for p in psutil.Process(self.hub.proc.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass

    def stop(self) -> None:
        """SIGTERM the hub, then end what it left behind (proxy, local servers) by pid."""
        self.remember_processes()
        self.hub.stop(timeout=60)
        leftovers = []
        for pid in self.known_pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                leftovers.append(psutil.Process(pid))
        leftovers += hubtools.singleuser_processes(self.hub.config["hub"]["data_dir"])
        for proc in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        _, alive = psutil.wait_procs(leftovers, timeout=5)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()

    def log_tail(self, n: int = 40) -> str:
        return self.hub.log_tail(n)


@dataclass
class UserApi:
    """One user's REST access to one hub through a token the user created after logging in."""

    hub: BenchHub
    user: str
    token: str
    http: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.http.headers["Authorization"] = f"token {self.token}"

    @classmethod
    def login(cls, hub: BenchHub, user: str) -> "UserApi":
        client = hubtools.HubClient(hub.hub)
        answer = client.login(user, USER_PASSWORD)
        if answer.status_code >= 400 or "/hub/login" in answer.url:
            raise BenchError(f"{hub.label}: login as {user} failed ({answer.status_code})")
        made = client.api("POST", f"/users/{user}/tokens", json={"note": "slurm_spawn benchmark", "expires_in": 7200})
        if made.status_code != 201:
            raise BenchError(f"{hub.label}: {user} could not create a token: {made.status_code} {made.text}")
        return cls(hub, user, made.json()["token"])

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        return self.http.request(method, f"{self.hub.url}/hub/api{path}", **kwargs)

    def server(self) -> dict[str, Any] | None:
        got = self.api("GET", f"/users/{self.user}")
        if got.status_code != 200:
            raise BenchError(f"{self.hub.label}: GET /users/{self.user} answered {got.status_code}: {got.text}")
        return got.json().get("servers", {}).get("")


# --- one spawn and one stop ----------------------------------------------------------------------


def spawn_to_ready(api: UserApi, profile: str, poll: float, timeout: float) -> dict[str, Any]:
    """POST the start, poll until ready; the seconds from the POST to ready (and epoch times for the call log)."""
    if api.server() is not None:
        raise BenchError(f"{api.hub.label}: {api.user} still has a server before the start")
    t_epoch, t0 = time.time(), time.perf_counter()
    started = api.api("POST", f"/users/{api.user}/server", json={"profile": profile}, timeout=timeout)
    post_s = time.perf_counter() - t0
    if started.status_code not in (201, 202):
        raise BenchError(f"{api.hub.label}: POST for {api.user} answered {started.status_code}: {started.text}")
    while True:
        server = api.server()
        elapsed = time.perf_counter() - t0
        if server and server.get("ready"):
            break
        if server is None and elapsed > 2:
            raise BenchError(f"{api.hub.label}: {api.user}'s server vanished before it was ready (start failed)")
        if elapsed > timeout:
            raise BenchError(f"{api.hub.label}: {api.user}'s server not ready after {timeout:.0f} s")
        time.sleep(poll)
    return {
        "user": api.user,
        "post_status": started.status_code,
        "post_returned_s": round(post_s, 4),
        "ready_s": round(elapsed, 4),
        "post_epoch": round(t_epoch, 4),
        "ready_epoch": round(t_epoch + elapsed, 4),
    }


def stop_and_wait(api: UserApi, poll: float, timeout: float) -> float:
    """DELETE the user's server and poll until the hub no longer lists it; the seconds that took."""
    t0 = time.perf_counter()
    stopped = api.api("DELETE", f"/users/{api.user}/server", timeout=timeout)
    if stopped.status_code not in (202, 204, 400):  # 400: not running (a failed start already cleared it)
        raise BenchError(f"{api.hub.label}: DELETE for {api.user} answered {stopped.status_code}: {stopped.text}")
    while api.server() is not None:
        if time.perf_counter() - t0 > timeout:
            raise BenchError(f"{api.hub.label}: {api.user}'s server not gone {timeout:.0f} s after DELETE")
        time.sleep(poll)
    return round(time.perf_counter() - t0, 4)


def measured_spawn(api: UserApi, profile: str, poll: float, timeout: float) -> dict[str, Any]:
    """spawn_to_ready then stop_and_wait; a failure is recorded (with the hub log's tail), not raised."""
    try:
        run = spawn_to_ready(api, profile, poll, timeout)
    except (BenchError, requests.RequestException) as exc:
        run = {"user": api.user, "error": f"{type(exc).__name__}: {exc}", "log_tail": api.hub.log_tail()}
    try:
        run["stop_s"] = stop_and_wait(api, poll, timeout)
    except (BenchError, requests.RequestException) as exc:
        run["stop_error"] = f"{type(exc).__name__}: {exc}"
    api.hub.remember_processes()
    return run


def wait_quiet(threshold: float, max_wait: float) -> tuple[float, float]:
    """Wait until the whole machine uses fewer than ``threshold`` cores over one second (at most ``max_wait``).

    Between spawns our hubs are idle, so what is busy then is someone else (this machine is shared).
    Returns (seconds waited, cores busy in the last second).
    """
    t0 = time.perf_counter()
    while True:
        before = machine_busy_s()
        time.sleep(1.0)
        busy = machine_busy_s() - before
        waited = time.perf_counter() - t0
        if busy < threshold or waited >= max_wait:
            return waited, busy


# --- the two phases ------------------------------------------------------------------------------


def phase_serial(apis: dict[str, UserApi], args: argparse.Namespace, log: CallLog) -> dict[str, list[dict[str, Any]]]:
    """Phase A: --repeat rounds, one spawn per hub each, the order alternating; warm-ups first (not kept)."""
    profiles = {"slurm": SLURM_PROFILE, "local": LOCAL_PROFILE}
    runs: dict[str, list[dict[str, Any]]] = {"slurm": [], "local": [], "warmup": []}
    for i in range(args.warmup + args.repeat):
        measured = i >= args.warmup
        order = ("slurm", "local") if i % 2 == 0 else ("local", "slurm")
        for name in order:
            waited, busy = wait_quiet(args.quiet, args.settle) if args.settle > 0 else (0.0, math.nan)
            run = measured_spawn(apis[name], profiles[name], args.poll, args.timeout)
            run.update(hub=name, round=i - args.warmup, settle_waited_s=round(waited, 1), busy_cores_before=round(busy, 2))
            if "ready_epoch" in run:
                calls = log.calls()
                run["hub_squeue_calls"] = count_calls(calls, "squeue", run["post_epoch"], run["ready_epoch"])
                run["hub_sbatch_calls"] = count_calls(calls, "sbatch", run["post_epoch"], run["ready_epoch"])
            (runs[name] if measured else runs["warmup"]).append(run)
            label = f"round {i - args.warmup + 1}/{args.repeat}" if measured else "warm-up"
            outcome = f"ready in {run['ready_s']:.2f} s" if "ready_s" in run else f"FAILED: {run['error']}"
            print(f"{label} {name:<5}: {outcome} (stop {run.get('stop_s', math.nan):.2f} s"
                  + (f", hub squeue calls {run['hub_squeue_calls']}" if name == "slurm" and "hub_squeue_calls" in run else "")
                  + ")", flush=True)
            time.sleep(args.pause)
    return runs


def phase_burst(apis: list[UserApi], args: argparse.Namespace, log: CallLog, poll_interval: float) -> dict[str, Any]:
    """Phase B: every user POSTs at the same moment; each one's spawn-to-ready, then all stop."""
    barrier = threading.Barrier(len(apis))
    results: dict[str, dict[str, Any]] = {}

    def one(api: UserApi) -> None:
        barrier.wait()
        try:
            results[api.user] = spawn_to_ready(api, SLURM_PROFILE, args.burst_poll, args.timeout)
        except (BenchError, requests.RequestException) as exc:
            results[api.user] = {"user": api.user, "error": f"{type(exc).__name__}: {exc}"}

    run_threads([threading.Thread(target=one, args=(api,), daemon=True) for api in apis])
    ok = [r for r in results.values() if "ready_s" in r]
    failed = [r for r in results.values() if "error" in r]
    start = min((r["post_epoch"] for r in ok), default=time.time())
    end = max((r["ready_epoch"] for r in ok), default=time.time())
    window = max(end - start, 1e-9)
    calls = log.calls()
    squeue = count_calls(calls, "squeue", start, end)
    stops: dict[str, Any] = {}

    def stop(api: UserApi) -> None:
        try:
            stops[api.user] = stop_and_wait(api, args.burst_poll, args.timeout)
        except (BenchError, requests.RequestException) as exc:
            stops[api.user] = f"{type(exc).__name__}: {exc}"

    t_stop = time.time()
    run_threads([threading.Thread(target=stop, args=(api,), daemon=True) for api in apis])
    calls = log.calls()
    ready = sorted(r["ready_s"] for r in ok)
    return {
        "users": len(apis),
        "runs": sorted(results.values(), key=lambda r: r["user"]),
        "failures": len(failed),
        "summary": summary(ready) if ready else None,
        "window_s": round(window, 3),
        "hub_squeue_calls": squeue,
        "hub_squeue_per_s": round(squeue / window, 3),
        "hub_squeue_kinds": squeue_kinds(calls, start, end),
        "hub_sbatch_calls": count_calls(calls, "sbatch", start, end),
        "hub_sinfo_calls": count_calls(calls, "sinfo", start, end),
        "job_squeue_calls": count_calls(calls, "squeue", start, end, from_hub=False),
        # What one squeue per pending user would have cost: at the hub's poll interval, and at the
        # spawner's 1 s wait tick (the rate the start loop asks the shared queue for news).
        "per_user_polling_at_interval": sum(math.ceil(t / poll_interval) for t in ready),
        "per_user_polling_every_1s": sum(math.ceil(t) for t in ready),
        "stop_s": stops,
        "stop_hub_squeue_calls": count_calls(calls, "squeue", t_stop),
        "stop_hub_scancel_calls": count_calls(calls, "scancel", t_stop),
    }


def run_threads(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# --- reporting -----------------------------------------------------------------------------------


def serial_results(runs: dict[str, list[dict[str, Any]]], calls: list[Call]) -> dict[str, Any]:
    """Medians, overhead and per-spawn call counts of phase A."""
    ok = {name: [r["ready_s"] for r in runs[name] if "ready_s" in r] for name in ("slurm", "local")}
    out: dict[str, Any] = {
        "raw": ok,
        "failures": {name: sum(1 for r in runs[name] if "error" in r) for name in ("slurm", "local")},
        "summary": {name: summary(t) if t else None for name, t in ok.items()},
        "runs": runs,
    }
    if ok["slurm"] and ok["local"]:
        overhead = statistics.median(ok["slurm"]) - statistics.median(ok["local"])
        out["overhead_s"] = round(overhead, 4)
        out["overhead_goal_s"] = OVERHEAD_GOAL_S
        out["within_goal"] = overhead <= OVERHEAD_GOAL_S
        paired = [s["ready_s"] - l["ready_s"] for s, l in zip(runs["slurm"], runs["local"]) if "ready_s" in s and "ready_s" in l]
        out["paired_overhead_median_s"] = round(statistics.median(paired), 4) if paired else None
    per_spawn = [r["hub_squeue_calls"] for r in runs["slurm"] if "hub_squeue_calls" in r]
    out["slurm_squeue_per_spawn_median"] = statistics.median(per_spawn) if per_spawn else None
    return out


def print_table(results: dict[str, Any]) -> None:
    m, a, b = results["machine"], results["serial"], results["burst"]
    nan = math.nan
    print()
    print(f"SLURM spawn benchmark: {m['nproc']} cores, dev cluster {results['cluster']['cpus']} CPUs, "
          f"poll_interval {results['slurm_poll_interval_s']} s, JupyterHub {m['jupyterhub']}, Python {m['python']}")
    print(f"Phase A, serial, {results['repeat']} spawns per hub (+{results['warmup']} warm-up), as {results['serial_user']}:")
    print(f"  {'hub':<30} {'median':>7} {'min':>7} {'max':>7} {'fails':>6}")
    for name, text in (("slurm", f"SLURM (profile {SLURM_PROFILE})"), ("local", f"local (profile {LOCAL_PROFILE})")):
        s = a["summary"][name] or {}
        print(f"  {text:<30} {s.get('median', nan):>7.2f} {s.get('min', nan):>7.2f} {s.get('max', nan):>7.2f} {a['failures'][name]:>6}")
    if "overhead_s" in a:
        print(f"  SLURM overhead (median - median): {a['overhead_s']:+.2f} s (goal <= {OVERHEAD_GOAL_S:.0f} s: "
              f"{'met' if a['within_goal'] else 'NOT met'}); paired per round, median {a['paired_overhead_median_s']:+.2f} s")
    print(f"  hub squeue calls per SLURM spawn (POST to ready), median: {a['slurm_squeue_per_spawn_median']}")
    s = b["summary"] or {}
    print(f"Phase B, burst of {b['users']} users at once on the SLURM hub:")
    print(f"  spawn-to-ready median {s.get('median', nan):.2f} s, min {s.get('min', nan):.2f} s, max {s.get('max', nan):.2f} s; "
          f"failures {b['failures']} (goal 0)")
    k = b["hub_squeue_kinds"]
    print(f"  hub squeue calls in the {b['window_s']:.1f} s window (first POST to last ready): {b['hub_squeue_calls']} "
          f"({b['hub_squeue_per_s']:.2f}/s; {k['list_all']} listings, {k['start_times']} --start, {k['other']} other); "
          f"sbatch {b['hub_sbatch_calls']}, sinfo {b['hub_sinfo_calls']}")
    print(f"  one squeue per pending user would have been {b['per_user_polling_at_interval']} calls at the "
          f"{results['slurm_poll_interval_s']} s interval, {b['per_user_polling_every_1s']} at one a second")
    print(f"  stopping all: hub squeue {b['stop_hub_squeue_calls']}, scancel {b['stop_hub_scancel_calls']}")
    t = results["calls_total"]
    print("Whole run, calls by the hubs (by jobs): " + ", ".join(f"{c} {t[c]['hub']} ({t[c]['jobs']})" for c in WRAPPED))
    print(f"results: {results['path']}")


# --- main ----------------------------------------------------------------------------------------


def _raise_exit(signum: int, frame: Any) -> None:  # noqa: ARG001
    raise SystemExit(128 + signum)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10, help="phase A spawns per hub (default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured phase A rounds first (default 1)")
    parser.add_argument("--users", type=int, default=10, help="phase B users spawning at once (default 10)")
    parser.add_argument("--poll", type=float, default=0.1, help="phase A readiness poll, seconds (default 0.1)")
    parser.add_argument("--burst-poll", type=float, default=0.5, help="phase B readiness poll per user (default 0.5)")
    parser.add_argument("--poll-interval", type=int, default=None,
                        help="the SLURM backend's poll_interval (default: slurm_hub_yaml's, 2 s)")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between phase A spawns (default 1)")
    parser.add_argument("--quiet", type=float, default=0.5, metavar="CORES",
                        help="before each phase A spawn, wait until the machine uses fewer cores (default 0.5)")
    parser.add_argument("--settle", type=float, default=30, metavar="S", help="...at most this long (default 30; 0: off)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds before a start or stop is a failure")
    parser.add_argument("--cpus", type=int, default=16, help="CPUs the dev cluster's node advertises (default 16)")
    parser.add_argument("--keep", action="store_true", help="keep the hub folders and the cluster's state afterwards")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/slurm_spawn-<ts>.json)")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.users < 1:
        parser.error("--repeat and --users must be at least 1")
    return args


def make_hubs(tmp: Path, cluster: DevCluster, poll_interval: int | None) -> dict[str, BenchHub]:
    """The SLURM hub (slurm_hub_yaml) and the local hub (hub_yaml), each in its own folder under ``tmp``."""
    slurm_config = slurm_hub_yaml(tmp / "slurm" / "state", cluster.conf)
    if poll_interval is not None:
        slurm_config["backends"]["cluster"]["poll_interval"] = poll_interval
    return {
        "slurm": BenchHub("slurm", hubtools.Hub(tmp / "slurm", slurm_config)),
        "local": BenchHub("local", hubtools.Hub(tmp / "local", hubtools.hub_yaml(tmp / "local" / "state"))),
    }


def clean_up(hubs: dict[str, BenchHub], cluster: DevCluster, wipe: bool) -> list[str]:
    """Stop the hubs, scancel what is left, take the cluster down; what went wrong on the way (never raises)."""
    problems = []
    for hub in hubs.values():
        try:
            hub.stop()
        except Exception as exc:  # clean-up must reach everything
            problems.append(f"stopping the {hub.label} hub: {exc}")
    try:
        left = cluster.cancel_all()
        if left:
            problems.append(f"jobs still listed after the hubs stopped, cancelled: {left}")
    except Exception as exc:
        problems.append(f"scancel: {exc}")
    cluster.down(wipe=wipe)
    return problems


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("slurm_spawn: run as root (it starts the dev cluster and creates Unix users)", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_exit)

    users = [f"bench{i:02d}" for i in range(1, args.users + 1)]
    cluster = DevCluster(Path("/tmp/hpclab-slurm-bench"), 6947, 6948, args.cpus)
    tmp = Path(tempfile.mkdtemp(prefix="slurm_spawn-"))
    tmp.chmod(0o711)  # the users' sbatch/scancel (via sudo) and their jobs reach the wrappers under it
    log = CallLog(tmp / "calls")
    hubs = make_hubs(tmp, cluster, args.poll_interval)
    poll_interval = hubs["slurm"].hub.config["backends"]["cluster"]["poll_interval"]
    info = machine_info()
    serial: dict[str, list[dict[str, Any]]] = {"slurm": [], "local": [], "warmup": []}
    burst: dict[str, Any] = {}
    failed, problems, created = False, [], []
    try:
        print(f"dev cluster under {cluster.prefix} ({args.cpus} CPUs, ports {cluster.ctld_port}/{cluster.slurmd_port}) ...", flush=True)
        cluster.up()
        log.install()
        created = ensure_unix_users(users)
        make_reachable(Path(sys.executable))  # jobs run as the bench user and use this venv
        for name in users:
            add_account(hubs["slurm"].hub, name)
        add_account(hubs["local"].hub, users[0])
        for name, hub in hubs.items():
            hub.start(log.bin if name == "slurm" else None)
            print(f"{name} hub answers at {hub.url}", flush=True)
        serial_apis = {name: UserApi.login(hub, users[0]) for name, hub in hubs.items()}
        burst_apis = [UserApi.login(hubs["slurm"], name) for name in users]
        serial = phase_serial(serial_apis, args, log)
        waited, busy = wait_quiet(args.quiet, args.settle) if args.settle > 0 else (0.0, math.nan)
        print(f"burst: {len(users)} users at once (machine busy {busy:.2f} cores before) ...", flush=True)
        burst = phase_burst(burst_apis, args, log, poll_interval)
        burst.update(settle_waited_s=round(waited, 1), busy_cores_before=round(busy, 2))
        if burst["failures"]:
            burst["log_tail"] = hubs["slurm"].log_tail(80)
    except (KeyboardInterrupt, SystemExit, BenchError, requests.RequestException, subprocess.CalledProcessError) as exc:
        failed = True
        print(f"slurm_spawn: stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        for hub in hubs.values():
            print(f"--- {hub.label} hub log tail ---\n{hub.log_tail()}", file=sys.stderr)
    finally:
        problems = clean_up(hubs, cluster, wipe=not (args.keep or failed))
        for problem in problems:
            print(f"slurm_spawn: clean-up: {problem}", file=sys.stderr)
        calls = log.calls() if log.log.exists() else []
        if args.keep or failed:
            print(f"hub folders and call log kept in {tmp}; cluster state in {cluster.prefix}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if failed or not burst:
        return 1

    info["loadavg_end"] = list(os.getloadavg())
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS_DIR / f"slurm_spawn-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {
        "benchmark": "slurm_spawn",
        "description": "seconds from POST /hub/api/users/<u>/server to servers[''].ready: SLURM backend (profile cpu, "
        "dev cluster) vs local backend (cpu-small), serial and as a burst; SLURM calls counted by PATH wrappers",
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": info,
        "cluster": {"prefix": str(cluster.prefix), "cpus": cluster.cpus, "ctld_port": cluster.ctld_port,
                    "slurmd_port": cluster.slurmd_port},
        "slurm_poll_interval_s": poll_interval,
        "repeat": args.repeat,
        "warmup": args.warmup,
        "poll_s": args.poll,
        "burst_poll_s": args.burst_poll,
        "serial_user": users[0],
        "unix_users_created": created,
        "serial": serial_results(serial, calls),
        "burst": burst,
        "calls_total": call_totals(calls),
        "cleanup_problems": problems,
        "path": str(out.relative_to(REPO) if out.is_relative_to(REPO) else out),
    }
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
