#!/usr/bin/env python
"""SLURM backend: spawn-to-ready against the local backend, and a burst of users, on a private dev cluster.

Phase A (serial): rounds in alternating order, one spawn of profile ``cpu`` on a SLURM hub
(configs/hpclab-slurm.yaml) and one of ``cpu-small`` on a local hub (the reference,
configs/hpclab-local.yaml); SLURM overhead = median(slurm) - median(local), goal <= 2 s. Phase B
(burst): --users users POST at once on the SLURM hub; spawn-to-ready, failures, and the hub's SLURM
calls, counted by wrappers first on its PATH. Needs root: it runs its own dev cluster (wiped before
and after) and creates Unix users bench01..benchNN (kept). Details: benchmarks/README.md. Run:

    .venv/bin/python benchmarks/slurm_spawn.py --repeat 10 --users 10
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from dev_slurm import (CTLD_PORT, PREFIX, SLURM_CONF, SLURMD_PORT, WRAPPED, cancel_all, cluster_up, count, dev_cluster, install_wrappers,
                       read_calls, slurm, squeue_kinds)
from harness import (USER_PASSWORD, Api, BenchError, add_account, add_spawn_options, ensure_unix_users, exit_on_signals, hpclab_hub,
                     ignore_signals, machine_info, print_table, stop_hubs, summary, wait_quiet, write_results)

PROFILES = {"slurm": "cpu", "local": "cpu-small"}
NAMES = {"local": "local (cpu-small), reference", "slurm": "SLURM (cpu)"}
OVERHEAD_GOAL_S = 2.0


def attempt(fn: Any, *args: Any) -> tuple[Any, str | None]:
    """(fn's result, None), or (None, the error) when a request failed or a hub misbehaved."""
    try:
        return fn(*args), None
    except (BenchError, requests.RequestException) as exc:
        return None, f"{type(exc).__name__}: {exc}"


class RunningWatch(threading.Thread):
    """Asks squeue every ``interval`` s until a job of this (private) cluster is RUNNING: when it first saw it (epoch),
    and when it last saw none running (the state changed in between)."""

    def __init__(self, interval: float = 0.05, timeout: float = 300) -> None:
        super().__init__(name="running-watch", daemon=True)
        self.interval, self.timeout = interval, timeout
        self.seen_at: float | None = None
        self.last_not_running: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self.done.is_set() and time.monotonic() < deadline:
            asked = time.time()
            try:
                states = slurm("squeue", "-h", "-o", "%T").split()
            except (BenchError, subprocess.SubprocessError, OSError):
                states = []
            if "RUNNING" in states:
                self.seen_at = asked
                return
            self.last_not_running = asked
            time.sleep(self.interval)


def measured_spawn(api: Api, profile: str, poll: float, timeout: float, watch_running: bool = False) -> dict[str, Any]:
    """Spawn to ready, then stop; a failure is recorded (with the hub log's tail), not raised. ``watch_running``: also
    job RUNNING (squeue, every 0.05 s) -> ready."""
    watch = RunningWatch(timeout=timeout) if watch_running else None
    if watch is not None:
        watch.start()
    run, error = attempt(api.spawn, {"profile": profile}, poll, timeout)
    if watch is not None:
        watch.done.set()
        watch.join(5)
        if run is not None and watch.seen_at is not None:
            run["running_to_ready_s"] = round(run["ready_epoch"] - watch.seen_at, 4)
            run["running_seen_within_s"] = round(watch.seen_at - (watch.last_not_running or watch.seen_at), 4)
    run = run or {"user": api.user, "error": error, "log_tail": api.hub.log_tail()}
    stop_s, error = attempt(api.stop, poll, timeout)
    run.update({"stop_s": stop_s} if error is None else {"stop_error": error})
    api.hub.remember_processes()
    return run


def phase_serial(apis: dict[str, Api], args: argparse.Namespace, log: Path) -> dict[str, list[dict[str, Any]]]:
    """Phase A: --repeat rounds, one spawn per hub each, the order alternating; warm-ups first (kept apart)."""
    runs: dict[str, list[dict[str, Any]]] = {"slurm": [], "local": [], "warmup": []}
    for i in range(args.warmup + args.repeat):
        measured = i >= args.warmup
        for name in ("slurm", "local") if i % 2 == 0 else ("local", "slurm"):
            waited, busy = wait_quiet(args.quiet, args.settle) if measured and args.settle > 0 else (0.0, None)
            run = measured_spawn(apis[name], PROFILES[name], args.poll, args.timeout, watch_running=name == "slurm")
            run.update(hub=name, round=i - args.warmup, settle_waited_s=round(waited, 1),
                       busy_cores_before=None if busy is None else round(busy, 2))
            if "ready_epoch" in run:
                calls = read_calls(log)
                for command in ("squeue", "sbatch"):
                    run[f"hub_{command}_calls"] = count(calls, command, run["post_epoch"], run["ready_epoch"])
            (runs[name] if measured else runs["warmup"]).append(run)
            outcome = f"ready in {run['ready_s']:.2f} s" if "ready_s" in run else f"FAILED: {run['error']}"
            if "running_to_ready_s" in run:
                outcome += f" (job RUNNING -> ready {run['running_to_ready_s']:.2f} s)"
            print(f"{f'round {i - args.warmup + 1}/{args.repeat}' if measured else 'warm-up'} {name:<5}: {outcome} "
                  f"(stop {run.get('stop_s', math.nan):.2f} s"
                  + (f", hub squeue calls {run['hub_squeue_calls']}" if name == "slurm" and "ready_s" in run else "") + ")",
                  flush=True)
            time.sleep(args.pause)
    return runs


def run_threads(target: Any, apis: list[Api]) -> None:
    threads = [threading.Thread(target=target, args=(api,), daemon=True) for api in apis]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def phase_burst(apis: list[Api], args: argparse.Namespace, log: Path, poll_interval: float) -> dict[str, Any]:
    """Phase B: every user POSTs at the same moment; each one's spawn-to-ready, then all stop."""
    barrier, results, stops = threading.Barrier(len(apis)), {}, {}

    def one(api: Api) -> None:
        barrier.wait()
        run, error = attempt(api.spawn, {"profile": PROFILES["slurm"]}, args.burst_poll, args.timeout)
        results[api.user] = run or {"user": api.user, "error": error}

    def stop(api: Api) -> None:
        stop_s, error = attempt(api.stop, args.burst_poll, args.timeout)
        stops[api.user] = error or stop_s

    run_threads(one, apis)
    ok = [r for r in results.values() if "ready_s" in r]
    start = min((r["post_epoch"] for r in ok), default=time.time())
    end = max((r["ready_epoch"] for r in ok), default=time.time())
    window = max(end - start, 1e-9)
    t_stop = time.time()
    run_threads(stop, apis)
    calls = read_calls(log)
    ready = sorted(r["ready_s"] for r in ok)
    return {
        "users": len(apis), "runs": sorted(results.values(), key=lambda r: r["user"]),
        "failures": len(results) - len(ok), "summary": summary(ready) if ready else None, "window_s": round(window, 3),
        "hub_squeue_calls": count(calls, "squeue", start, end),
        "hub_squeue_per_s": round(count(calls, "squeue", start, end) / window, 3),
        "hub_squeue_kinds": squeue_kinds(calls, start, end),
        "hub_sbatch_calls": count(calls, "sbatch", start, end), "hub_sinfo_calls": count(calls, "sinfo", start, end),
        "job_squeue_calls": count(calls, "squeue", start, end, from_hub=False),
        # one squeue per pending user: at the hub's poll interval, and at the spawner's 1 s wait tick
        "per_user_polling_at_interval": sum(math.ceil(t / poll_interval) for t in ready),
        "per_user_polling_every_1s": sum(math.ceil(t) for t in ready),
        "stop_s": stops, "stop_hub_squeue_calls": count(calls, "squeue", t_stop),
        "stop_hub_scancel_calls": count(calls, "scancel", t_stop),
    }


def serial_results(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians, the overhead, its ratio and per-spawn call counts of phase A."""
    ok = {name: [r["ready_s"] for r in runs[name] if "ready_s" in r] for name in ("slurm", "local")}
    out: dict[str, Any] = {"raw": ok, "failures": {name: sum(1 for r in runs[name] if "error" in r) for name in ok},
                           "summary": {name: summary(t) if t else None for name, t in ok.items()}, "runs": runs}
    if ok["slurm"] and ok["local"]:
        overhead = statistics.median(ok["slurm"]) - statistics.median(ok["local"])
        paired = [s["ready_s"] - loc["ready_s"] for s, loc in zip(runs["slurm"], runs["local"]) if "ready_s" in s and "ready_s" in loc]
        out.update(overhead_s=round(overhead, 4), overhead_goal_s=OVERHEAD_GOAL_S, within_goal=overhead <= OVERHEAD_GOAL_S,
                   ratio=round(statistics.median(ok["slurm"]) / statistics.median(ok["local"]), 4),
                   paired_overhead_median_s=round(statistics.median(paired), 4) if paired else None)
    running = [r["running_to_ready_s"] for r in runs["slurm"] if "running_to_ready_s" in r]
    if running:
        out["running_to_ready"] = {"raw": running, "summary": summary(running), "goal_s": 2.0,
                                   "within_goal": statistics.median(running) <= 2.0}
    per_spawn = [r["hub_squeue_calls"] for r in runs["slurm"] if "hub_squeue_calls" in r]
    out["slurm_squeue_per_spawn_median"] = statistics.median(per_spawn) if per_spawn else None
    return out


def print_report(results: dict[str, Any]) -> None:
    m, a, b = results["machine"], results["serial"], results["burst"]
    print(f"\nSLURM spawn benchmark: {m['nproc']} cores, dev cluster {results['cluster']['cpus']} CPUs, "
          f"poll_interval {results['slurm_poll_interval_s']} s, JupyterHub {m['jupyterhub']}, Python {m['python']}")
    print(f"Phase A, serial, spawn-to-ready as {results['serial_user']}, +{results['warmup']} warm-up round(s):")
    print_table({NAMES[h]: a["raw"][h] for h in ("local", "slurm")}, reference=NAMES["local"],
                extra={NAMES[h]: {"fails": a["failures"][h]} for h in ("local", "slurm")})
    if "overhead_s" in a:
        paired = math.nan if a["paired_overhead_median_s"] is None else a["paired_overhead_median_s"]
        print(f"SLURM overhead (median - median): {a['overhead_s']:+.2f} s (goal <= {OVERHEAD_GOAL_S:.0f} s: "
              f"{'met' if a['within_goal'] else 'NOT met'}); paired per round, median {paired:+.2f} s")
    if "running_to_ready" in a:
        r = a["running_to_ready"]
        print("job RUNNING (as squeue, asked every 0.05 s, first shows it) -> ready, s:")
        print_table({NAMES["slurm"]: r["raw"]})
        print(f"goal <= {r['goal_s']:.0f} s: {'met' if r['within_goal'] else 'NOT met'}")
    print(f"hub squeue calls per SLURM spawn (POST to ready), median: {a['slurm_squeue_per_spawn_median']}")
    print(f"\nPhase B, burst of {b['users']} users at once on the SLURM hub; failures {b['failures']} (goal 0):")
    print_table({f"burst, {b['users']} users (cpu)": [r["ready_s"] for r in b["runs"] if "ready_s" in r],
                 NAMES["slurm"] + ", serial": a["raw"]["slurm"]}, reference=NAMES["slurm"] + ", serial")
    k = b["hub_squeue_kinds"]
    print(f"hub squeue calls in the {b['window_s']:.1f} s window (first POST to last ready): {b['hub_squeue_calls']} "
          f"({b['hub_squeue_per_s']:.2f}/s; {k['list_all']} listings, {k['start_times']} --start, {k['other']} other); "
          f"sbatch {b['hub_sbatch_calls']}, sinfo {b['hub_sinfo_calls']}")
    print(f"one squeue per pending user would have been {b['per_user_polling_at_interval']} calls at the "
          f"{results['slurm_poll_interval_s']} s interval, {b['per_user_polling_every_1s']} at one a second")
    print(f"stopping all: hub squeue {b['stop_hub_squeue_calls']}, scancel {b['stop_hub_scancel_calls']}")
    t = results["calls_total"]
    print("whole run, calls by the hubs (by jobs): " + ", ".join(f"{c} {t[c]['hub']} ({t[c]['jobs']})" for c in WRAPPED))
    print(f"results: {results['path']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_spawn_options(parser, "slurm_spawn", repeat=10, quiet=0.5, settle=30, timeout=300,
                      keep="keep the hub folders, the call log and the cluster's state afterwards")
    parser.add_argument("--users", type=int, default=10, help="phase B users spawning at once (default 10)")
    parser.add_argument("--burst-poll", type=float, default=0.5, help="phase B readiness poll per user (default 0.5)")
    parser.add_argument("--poll-interval", type=int, default=None,
                        help="the SLURM backend's poll_interval (default: configs/hpclab-slurm.yaml's, 2 s)")
    parser.add_argument("--cpus", type=int, default=16, help="CPUs the dev cluster's node advertises (default 16)")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.users < 1:
        parser.error("--repeat and --users must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("slurm_spawn: run as root (it starts the dev cluster and creates Unix users)", file=sys.stderr)
        return 2
    exit_on_signals()
    users = [f"bench{i:02d}" for i in range(1, args.users + 1)]
    tmp = Path(tempfile.mkdtemp(prefix="slurm_spawn-"))
    tmp.chmod(0o711)  # the users' sbatch/scancel (via sudo) and their jobs reach the wrappers under it
    log = tmp / "calls" / "calls.log"
    settings = {"backends.cluster.slurm_conf": SLURM_CONF}
    if args.poll_interval is not None:
        settings["backends.cluster.poll_interval"] = args.poll_interval
    hubs = {"slurm": hpclab_hub("slurm", tmp / "slurm", "hpclab-slurm.yaml", settings),
            "local": hpclab_hub("local", tmp / "local", "hpclab-local.yaml")}
    poll_interval = hubs["slurm"].config["backends"]["cluster"]["poll_interval"]
    info = machine_info("jupyterhub", "jupyterlab", "jupyter_server")
    serial: dict[str, list[dict[str, Any]]] = {"slurm": [], "local": [], "warmup": []}
    burst: dict[str, Any] = {}
    failed, created = False, []
    try:
        print(f"dev cluster under {PREFIX} ({args.cpus} CPUs, ports {CTLD_PORT}/{SLURMD_PORT}) ...", flush=True)
        cluster_up(args.cpus)
        wrappers = install_wrappers(log.parent)
        created = ensure_unix_users(users)
        for name in users:
            add_account(hubs["slurm"], name)
        add_account(hubs["local"], users[0])
        for name, hub in hubs.items():
            hub.start(timeout=180, path_first=wrappers if name == "slurm" else None)
            print(f"{name} hub answers at {hub.url}", flush=True)
        serial_apis = {name: Api.login(hub, users[0], USER_PASSWORD, "slurm_spawn benchmark") for name, hub in hubs.items()}
        burst_apis = [Api.login(hubs["slurm"], name, USER_PASSWORD, "slurm_spawn benchmark") for name in users]
        serial = phase_serial(serial_apis, args, log)
        waited, busy = wait_quiet(args.quiet, args.settle) if args.settle > 0 else (0.0, None)
        print(f"burst: {len(users)} users at once ...", flush=True)
        burst = phase_burst(burst_apis, args, log, poll_interval)
        burst.update(settle_waited_s=round(waited, 1), busy_cores_before=None if busy is None else round(busy, 2))
        if burst["failures"]:
            burst["log_tail"] = hubs["slurm"].log_tail(80)
    except (KeyboardInterrupt, SystemExit, BenchError, requests.RequestException, subprocess.CalledProcessError) as exc:
        failed = True
        print(f"slurm_spawn: stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        for name, hub in hubs.items():
            print(f"--- {name} hub log tail ---\n{hub.log_tail()}", file=sys.stderr)
    finally:
        ignore_signals()
        problems = stop_hubs(hubs, timeout=60)
        try:
            if left := cancel_all():
                problems.append(f"jobs still listed after the hubs stopped, cancelled: {left}")
        except Exception as exc:
            problems.append(f"scancel: {exc}")
        dev_cluster("down" if args.keep or failed else "wipe", args.cpus)
        for problem in problems:
            print(f"slurm_spawn: clean-up: {problem}", file=sys.stderr)
        calls = read_calls(log)
        if args.keep or failed:
            print(f"hub folders and call log kept in {tmp}; cluster state in {PREFIX}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if failed or not burst:
        return 1
    info["loadavg_end"] = list(os.getloadavg())
    results = {
        "description": "seconds from POST /hub/api/users/<u>/server to servers[''].ready: SLURM backend (profile cpu, "
        "dev cluster) vs local backend (cpu-small), serial and as a burst; SLURM calls counted by PATH wrappers",
        "machine": info, "cluster": {"prefix": str(PREFIX), "cpus": args.cpus, "ctld_port": CTLD_PORT, "slurmd_port": SLURMD_PORT},
        "slurm_poll_interval_s": poll_interval, "repeat": args.repeat, "warmup": args.warmup, "poll_s": args.poll,
        "burst_poll_s": args.burst_poll, "serial_user": users[0], "unix_users_created": created,
        "serial": serial_results(serial), "burst": burst,
        "calls_total": {c: {"hub": count(calls, c), "jobs": count(calls, c, from_hub=False)} for c in WRAPPED},
        "cleanup_problems": problems,
    }
    results["path"] = str(write_results("slurm_spawn", results, args.out))
    print_report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
