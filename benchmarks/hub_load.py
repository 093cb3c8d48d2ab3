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
    .venv/bin/python benchmarks/hub_load.py --backend slurm --nodes 2 --cpus 16 --users 30 --concurrency 30  # 2 nodes
    .venv/bin/python benchmarks/hub_load.py --users 20 --compare-bare --bare-spawns --profile hub.txt
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
import yaml
from tornado.httpclient import HTTPClientError

from harness import (ADMIN_PASSWORD, USER_PASSWORD, Api, BenchError, add_account, add_out_option, bare_hub, ensure_unix_users,
                     exit_on_signals, hpclab_hub, ignore_signals, machine_info, root_workdir, stop_hubs, summary, write_results)
from load_clients import bare_user, user_session
from load_probes import Profiler, Sampler, percentile

PROFILES = {"local": "cpu-small", "slurm": "cpu"}
CONFIGS = {"local": "hpclab-local.yaml", "slurm": "hpclab-slurm.yaml"}


def cpus_per_node(args: argparse.Namespace) -> int:
    """--cpus, or enough for every user's 1-core job with two to spare (per node, the users spread evenly)."""
    return args.cpus or math.ceil(args.users / args.nodes) + 2


def slurm_setup(args: argparse.Namespace, tmp: Path, deploy: dict[str, Any], stack: contextlib.ExitStack) -> tuple[Path, str]:
    """A private dev SLURM with cores and memory for every user's job (1G each), torn down by ``stack``, and the counting
    wrappers; (their folder, SLURM_CONF). With --nodes N > 1 the cluster's nodes are hosts of their own on a bridge,
    that do not see the hub's venv: the servers run from a node-install prefix, and the hub (its proxy, the servers'
    door to the hub API) listens on the bridge's address."""
    import dev_slurm

    cpus, memory_mb = cpus_per_node(args), 1024 * math.ceil(args.users / args.nodes) + 4096
    if args.nodes == 1:
        stack.callback(dev_slurm.dev_cluster, "down" if args.keep else "wipe", cpus)
        dev_slurm.cluster_up(cpus, memory_mb=memory_mb)
        conf = dev_slurm.SLURM_CONF
    else:
        deploy["backends"]["cluster"]["node_prefix"] = dev_slurm.install_node_prefix()
        multi = dev_slurm.multi_cluster(args.nodes, cpus, memory_mb)
        conf = stack.enter_context(multi.running(keep=args.keep))
        deploy["hub"].update(ip=multi.login_addr, user_subdomains=False)
    stack.callback(dev_slurm.cancel_all, conf=conf)  # first on the way out (last in)
    return dev_slurm.install_wrappers(tmp / "calls"), conf


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("local", "slurm"), default="local")
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=20, help="users spawning at once")
    p.add_argument("--nodes", type=int, default=1, help="SLURM: nodes of the dev cluster, each its own host (default 1)")
    p.add_argument("--cpus", type=int, default=None, help="CPUs the dev SLURM advertises per node (default users / nodes + 2)")
    p.add_argument("--baseline", type=float, default=10, help="seconds of sampling the idle hub first (default 10)")
    p.add_argument("--sample", type=float, default=0.25, help="seconds between samples (default 0.25)")
    p.add_argument("--timeout", type=float, default=600, help="seconds one user's spawn may take (default 600)")
    p.add_argument("--compare-bare", action="store_true", help="also time a plain JupyterHub's users listing meanwhile")
    p.add_argument("--bare-spawns", action="store_true", help="with --compare-bare: the plain hub gets the same visits (its own servers)")
    p.add_argument("--server-nice", type=int, default=None, help="local backend: backends.local.server_nice for this run")
    p.add_argument("--no-history", action="store_true",
                   help="hub.history: false, nothing recorded (to compare with a run recording every server's life)")
    p.add_argument("--profile", type=Path, default=None, help="record the hub with py-spy during the load into FILE (collapsed stacks)")
    p.add_argument("--keep", action="store_true", help="keep the hubs' folders afterwards")
    add_out_option(p, "hub_load")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bare_spawns and not args.compare_bare:
        print("hub_load: --bare-spawns needs --compare-bare", file=sys.stderr)
        return 2
    if args.nodes < 1 or (args.nodes > 1 and args.backend != "slurm"):
        print("hub_load: --nodes N (1 or more) is for --backend slurm", file=sys.stderr)
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
    deploy["hub"]["history"] = not args.no_history
    if args.compare_bare:
        hubs["bare"] = bare_hub("bare", tmp / "bare")
        hubs["bare"].env["BENCH_SPAWN_TIMEOUT"] = str(int(args.timeout))  # the same patience as our profiles get
    conf, wrappers, created, failures, records, profiler = None, None, [], [], [], None
    stack = contextlib.ExitStack()  # the dev SLURM's tear-down
    bare_records: list[dict[str, Any]] = []
    bare_failures: list[str] = []
    results: dict[str, Any] = {"users": args.users, "concurrency": args.concurrency, "backend": args.backend,
                               "server_nice": deploy["backends"].get("local", {}).get("server_nice"),
                               "history": deploy["hub"]["history"]}
    if args.backend == "slurm":
        results.update(nodes=args.nodes, cpus_per_node=cpus_per_node(args))
    try:
        if args.backend == "slurm":
            wrappers, conf = slurm_setup(args, tmp, deploy, stack)
            deploy["backends"]["cluster"]["slurm_conf"] = conf
            created += ensure_unix_users(users)  # SLURM jobs run as the users' own accounts
            if args.nodes > 1:  # the hub is driven where the nodes reach it, on the bridge
                hubs["hpclab"].url = f"http://{deploy['hub']['ip']}:{deploy['hub']['port']}"
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
        all_ready = time.time()
        if conf is not None:  # where the servers run, all of them still running
            import dev_slurm

            results["jobs_per_node"] = dev_slurm.placement(conf, users)
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
        if conf is not None:
            import dev_slurm

            calls = dev_slurm.read_calls(tmp / "calls" / "calls.log")
            interval = hubs["hpclab"].config["backends"]["cluster"]["poll_interval"]
            cycles = max(1.0, (calls_to - calls_from) / interval)
            kinds = dev_slurm.squeue_kinds(calls, calls_from, calls_to)
            listing = kinds["list_all"]
            # the hub's listings while the servers start, while they are stopped, and over the whole load
            phases = {"starts": (calls_from, all_ready), "stops": (all_ready, calls_to), "whole": (calls_from, calls_to)}
            results["squeue_listings"] = {name: dev_slurm.listing_figures(calls, start, end, interval)
                                          for name, (start, end) in phases.items()}
            results.update(squeue_calls=listing, poll_interval_s=interval, poll_cycles=round(cycles, 1),
                           squeue_calls_per_poll=round(listing / cycles, 2),
                           squeue_max_per_interval=results["squeue_listings"]["whole"]["max_per_interval"],
                           squeue_start_times_calls=kinds["start_times"], squeue_other_calls=kinds["other"],
                           sbatch_calls=dev_slurm.count(calls, "sbatch", calls_from, calls_to),
                           scancel_calls=dev_slurm.count(calls, "scancel", calls_from, calls_to),
                           sinfo_calls=dev_slurm.count(calls, "sinfo", calls_from, calls_to),
                           job_squeue_calls=dev_slurm.count(calls, "squeue", calls_from, calls_to, from_hub=False))
    except (KeyboardInterrupt, SystemExit, BenchError, requests.RequestException, subprocess.CalledProcessError,
            RuntimeError) as exc:
        print(f"hub_load: stopped: {type(exc).__name__}: {exc}\n{hubs['hpclab'].log_tail()}", file=sys.stderr)
        return 1
    finally:
        ignore_signals()
        if profiler is not None and profiler.proc.poll() is None:
            profiler.proc.kill()
        problems = stop_hubs(hubs, timeout=120)
        stack.close()  # every job cancelled, the cluster stopped (--keep) or wiped
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
    for key in ("spawn_failures", "spawn_p50_s", "spawn_p95_s", "all_ready_s", "squeue_calls_per_poll", "squeue_max_per_interval",
                "jobs_per_node"):
        if key in results:
            print(f"{key:<22} {results[key]!s:>21}")
    for name, row in results.get("squeue_listings", {}).items():
        print(f"squeue listings, {name:<6} {row['calls']} in {row['seconds']} s: {row['per_poll']} per poll interval, "
              f"at most {row['max_per_interval']} in one, shortest gap {row['min_gap_s']} s")
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
