#!/usr/bin/env python
"""Hub-restart downtime: how long /hub/api and a user's open JupyterLab do not answer around a reload or a restart.

One hpclab hub (configs/hpclab-local.yaml with ``keep_servers_on_restart: true``) with the admin's server running.
Two probes run throughout, each a request every --interval s (timeout --probe-timeout s):

* hub API: ``GET /hub/api/`` at the hub's public URL (through the proxy, as a browser's page reaches it);
* lab: ``GET /user/admin/api/status`` on the admin's server with an API token, through the proxy (what an open
  JupyterLab asks its server every few seconds; the server's token check is warm, as in a lab already open).

Each repetition, in alternating order, one of:

* reload: the YAML is changed (``hub.site_name``) and ``hpclab-hub reload --config`` is run, which returns once the
  new hub answers;
* restart: SIGTERM to the hub (as ``systemctl stop``), then ``hpclab-hub run`` again (as ``systemctl start``);
  with --socket the benchmark holds the hub's API socket and hands it to each hub, as systemd does with
  deploy/systemd/hpclab-hub.socket: requests wait for the next hub instead of failing.

A probe's gap is the longest time between two of its answers (requests refused or failed in between, or one left
waiting), from the trigger until both probes answer again (plus --tail s); with requests every 0.02 s a hub that
never pauses shows gaps of a few hundredths. Failed requests (refused, 502/503) are counted apart.
The server must be the same process after the event (kept and re-adopted). Run as root from the repository root:

    .venv/bin/python benchmarks/hub_restart.py --repeat 5

Prints a table and writes benchmarks/results/hub_restart-<timestamp>.json (or --out).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import psutil
import requests
import yaml

from harness import (ADMIN_PASSWORD, VENV_BIN, Api, BenchError, add_out_option, exit_on_signals, hpclab_hub, ignore_signals,
                     machine_info, print_table, root_workdir, stop_hubs, summary, wait_quiet, write_results)

USER = "admin"
PROFILE = "cpu-small"
API_GOAL_S = 2.0
KINDS = ("reload", "restart")


class Probe(threading.Thread):
    """GET ``url`` every ``interval`` s; (start, end, ok) of each request, until stopped."""

    def __init__(self, name: str, url: str, headers: dict[str, str], interval: float, timeout: float) -> None:
        super().__init__(name=name, daemon=True)
        self.url, self.interval, self.timeout = url, interval, timeout
        self.http = requests.Session()
        self.http.headers.update(headers)
        self.samples: list[tuple[float, float, bool]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            t0 = time.perf_counter()
            try:
                ok = self.http.get(self.url, timeout=self.timeout).status_code == 200
            except requests.RequestException:
                ok = False
            self.samples.append((t0, time.perf_counter(), ok))
            time.sleep(max(0.0, self.interval - (time.perf_counter() - t0)))

    def answered_since(self, since: float) -> bool:
        return any(ok and start >= since for start, _, ok in self.samples[-5:])

    def gaps(self, since: float) -> dict[str, Any]:
        """From ``since`` on: the longest time between two answers (a request refused or failed, or one left waiting,
        both count), the slowest answer, and how many requests failed."""
        ends = [end for start, end, ok in self.samples if ok and start < since][-1:]
        ends += [end for start, end, ok in self.samples if ok and start >= since]
        longest = max((b - a for a, b in zip(ends, ends[1:], strict=False)), default=0.0)
        slowest = max((end - start for start, end, ok in self.samples if ok and start >= since), default=0.0)
        failed = sum(1 for start, _, ok in self.samples if not ok and start >= since)
        return {"longest_gap_s": round(longest, 3), "slowest_answer_s": round(slowest, 3), "failed_requests": failed}


def server_pid(hub: Any) -> int | None:
    """The pid of the admin's server (a jupyterhub-singleuser process under the hub's folder)."""
    for proc in psutil.process_iter(["cmdline", "environ"]):
        with_user = (proc.info.get("environ") or {}).get("JUPYTERHUB_USER")
        if with_user == USER and str(hub.workdir) in " ".join(proc.info.get("cmdline") or []) + str(proc.info.get("environ")):
            return proc.pid
    return None


def set_site_name(hub: Any, name: str) -> None:
    assert hub.config_path is not None and hub.config is not None
    hub.config["hub"]["site_name"] = name
    hub.config_path.write_text(yaml.safe_dump(hub.config, sort_keys=False))


#: with --socket: the hub's API socket, held by the benchmark as systemd holds it (deploy/systemd/hpclab-hub.socket)
LISTENING: list[socket.socket] = []


def hold_hub_socket(port: int) -> socket.socket:
    """Bind and listen on the hub's API port, as systemd's socket unit does; handed to every hub started."""
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind(("127.0.0.1", port))
    listening.listen(1024)
    LISTENING.append(listening)
    return listening


def trigger(kind: str, hub: Any, k: int, timeout: float) -> float:
    """Reload or stop-and-start the hub; the seconds the command(s) took."""
    t0 = time.perf_counter()
    if kind == "reload":
        set_site_name(hub, f"Reload {k}")
        done = subprocess.run([str(VENV_BIN / "hpclab-hub"), "reload", "--config", str(hub.config_path), "--timeout",
                               str(int(timeout))], capture_output=True, text=True, timeout=timeout + 30, check=False)
        if done.returncode != 0:
            raise BenchError(f"reload failed: {done.stdout}{done.stderr}\n{hub.log_tail()}")
    else:
        hub.remember_processes()
        hub.terminate(timeout)
        hub.start(timeout=timeout, listening=LISTENING[0] if LISTENING else None)
    return time.perf_counter() - t0


def one_event(kind: str, hub: Any, probes: dict[str, Probe], k: int, args: argparse.Namespace) -> dict[str, Any]:
    before = server_pid(hub)
    since = time.perf_counter()
    took = trigger(kind, hub, k, args.timeout)
    deadline = time.perf_counter() + args.timeout
    while not all(p.answered_since(since + took) for p in probes.values()):
        if time.perf_counter() > deadline:
            raise BenchError(f"{kind}: the probes did not answer again within {args.timeout:.0f} s:\n{hub.log_tail()}")
        time.sleep(args.interval)
    time.sleep(args.tail)
    after = server_pid(hub)
    record = {"kind": kind, "command_s": round(took, 3), "server_kept": before is not None and before == after}
    for name, probe in probes.items():
        record[name] = probe.gaps(since)
    return record


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="events of each kind (default 5)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="reload, restart or both (default)")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between a probe's requests (0.02)")
    parser.add_argument("--probe-timeout", type=float, default=10.0, help="a probe request's timeout (10 s)")
    parser.add_argument("--tail", type=float, default=1.0, help="seconds probed after both answer again (1)")
    parser.add_argument("--quiet", type=float, default=0.3, help="wait until other processes use fewer cores than this")
    parser.add_argument("--settle", type=float, default=30, help="at most this long (s; 0: do not wait)")
    parser.add_argument("--timeout", type=float, default=120, help="per reload, restart or spawn (s)")
    parser.add_argument("--zygote", action="store_true", help="the local backend with its zygote (zygote: true)")
    parser.add_argument("--socket", action="store_true",
                        help="hold the hub's API socket across restarts, as deploy/systemd/hpclab-hub.socket does")
    parser.add_argument("--keep", action="store_true", help="keep the hub's folder (logs)")
    add_out_option(parser, "hub_restart")
    args = parser.parse_args(argv)
    args.kinds = [k for k in args.kinds.split(",") if k]
    if args.repeat < 1 or not args.kinds or set(args.kinds) - set(KINDS):
        parser.error("--repeat >= 1 and --kinds among reload, restart")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = root_workdir("hub_restart")
    if workdir is None:
        return 2
    exit_on_signals()
    settings: dict[str, Any] = {"hub.keep_servers_on_restart": True}
    if args.zygote:
        settings["backends.local.zygote"] = True
    hub = hpclab_hub("ours", workdir / "ours", "hpclab-local.yaml", settings)
    info = machine_info("jupyterhub", "jupyterlab", "jupyter_server")
    events: list[dict[str, Any]] = []
    probes: dict[str, Probe] = {}
    failed = False
    try:
        assert hub.config is not None
        hub.start(timeout=90, listening=hold_hub_socket(hub.config["hub"]["hub_port"]) if args.socket else None)
        print(f"hub answers at {hub.url} after {hub.started_in:.2f} s", flush=True)
        api = Api.login(hub, USER, ADMIN_PASSWORD, "hub_restart benchmark")
        api.spawn({"profile": PROFILE}, 0.1, args.timeout)
        token = api.http.headers["Authorization"]
        lab = f"{hub.user_url(USER)}/api/status"
        if requests.get(lab, headers={"Authorization": token}, timeout=30).status_code != 200:
            raise BenchError(f"the admin's server does not answer at {lab}")
        probes = {"hub_api": Probe("hub-api", f"{hub.url}/hub/api/", {}, args.interval, args.probe_timeout),
                  "lab": Probe("lab", lab, {"Authorization": token}, args.interval, args.probe_timeout)}
        for probe in probes.values():
            probe.start()
        for k in range(args.repeat):
            for kind in args.kinds if k % 2 == 0 else list(reversed(args.kinds)):
                waited, _ = wait_quiet(args.quiet, args.settle) if args.settle > 0 else (0.0, None)
                record = one_event(kind, hub, probes, k, args)
                record.update(round=k, settle_waited_s=round(waited, 1))
                events.append(record)
                print(f"round {k + 1}/{args.repeat} {kind}: hub API gap {record['hub_api']['longest_gap_s']:.2f} s "
                      f"({record['hub_api']['failed_requests']} failed), "
                      f"lab gap {record['lab']['longest_gap_s']:.2f} s ({record['lab']['failed_requests']} failed), "
                      f"command {record['command_s']:.2f} s, server kept: {record['server_kept']}", flush=True)
    except (KeyboardInterrupt, SystemExit, BenchError, requests.RequestException, subprocess.SubprocessError) as exc:
        failed = True
        print(f"hub_restart: stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        ignore_signals()
        for probe in probes.values():
            probe.done.set()
        for problem in stop_hubs({"ours": hub}):
            print(f"hub_restart: clean-up: {problem}", file=sys.stderr)
        if args.keep or failed:
            print(f"hub logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if failed or not events:
        return 1
    info["loadavg_end"] = list(os.getloadavg())
    gaps = {f"{kind} {probe}": [e[probe]["longest_gap_s"] for e in events if e["kind"] == kind]
            for kind in args.kinds for probe in ("hub_api", "lab")}
    results = {
        "description": "longest time during which GET /hub/api/ (hub_api) and GET /user/admin/api/status (lab), both "
        "through the proxy, did not answer, around hpclab-hub reload and around a hub stop and start "
        "(keep_servers_on_restart: true)",
        "repeat": args.repeat, "interval_s": args.interval, "probe_timeout_s": args.probe_timeout, "zygote": args.zygote,
        "machine": info, "hub_startup_s": round(hub.started_in, 3), "events": events,
        "summary": {name: summary(values) for name, values in gaps.items()},
        "servers_kept": all(e["server_kept"] for e in events), "api_goal_s": API_GOAL_S,
    }
    results["path"] = str(write_results("hub_restart", results, args.out))
    print(f"\nhub-restart downtime, s: {args.repeat} events of each kind, {info['nproc']} cores, load average "
          f"{info['loadavg_start'][0]:.2f} -> {info['loadavg_end'][0]:.2f}")
    print_table(gaps)
    print(f"servers kept through every event: {results['servers_kept']}; goal: hub API gap <= {API_GOAL_S:.0f} s, "
          f"lab never drops")
    print(f"results: {results['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
