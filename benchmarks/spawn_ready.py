#!/usr/bin/env python
"""Spawn-to-ready: HPCLab's local backend against bare JupyterHub's SimpleLocalProcessSpawner.

Starts two hubs side by side on free ports, both with configurable-http-proxy and SQLite in a
temporary folder, both starting the same ``jupyterhub-singleuser`` (default URL /lab):

* bare: ``jupyterhub -f <generated config>`` with ``spawner_class = "simple"``; a service token
  with the admin:users/admin:servers scopes drives it over the REST API;
* ours: ``hpclab-hub run --config <temp yaml>`` (tests/hubtools.py's hub_yaml(), profile
  cpu-small); an API token of the admin, created after logging in like a browser, drives it.

Each repetition, for each hub in turn (the order alternates every round to spread machine
noise): POST /hub/api/users/admin/server, poll GET /hub/api/users/admin until servers[""].ready,
record the seconds from the POST to ready, then DELETE the server and wait until it is gone.
The same user (admin) is stopped and started again on both hubs.

Run from the repository root:

    .venv/bin/python benchmarks/spawn_ready.py --repeat 5

Prints a table and writes benchmarks/results/spawn_ready-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import hubtools  # noqa: E402  (tests/hubtools.py: hub_yaml, Hub, HubClient, free_port)

VENV_BIN = Path(sys.executable).parent
SINGLEUSER = Path(sys.executable).with_name("jupyterhub-singleuser")
RESULTS_DIR = REPO / "benchmarks" / "results"
USER = "admin"
PROFILE = "cpu-small"
LOG_LINE = re.compile(r"^\[(?P<level>[DIWEC]) (?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (?P<src>\S+)")


class BenchError(RuntimeError):
    pass


# --- the two hubs ------------------------------------------------------------------------------


@dataclass
class BenchHub:
    """A hub under measurement: its process, URL, token, and the body its spawn POST sends."""

    label: str
    workdir: Path
    spawn_body: dict[str, Any]
    url: str = ""
    token: str = ""
    proc: subprocess.Popen | None = None
    log_path: Path = field(init=False)
    started_in: float = 0.0
    known_pids: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "hub.log"

    @property
    def http(self) -> requests.Session:
        if not hasattr(self, "_http"):
            self._http = requests.Session()
            self._http.headers["Authorization"] = f"token {self.token}"
        return self._http

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        return self.http.request(method, f"{self.url}/hub/api{path}", **kwargs)

    def start(self) -> None:
        raise NotImplementedError

    def _wait_answering(self, timeout: float = 90) -> None:
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise BenchError(f"{self.label} hub exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/hub/api/", timeout=2).status_code == 200:
                    self.started_in += time.perf_counter() - t0
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise BenchError(f"{self.label} hub did not answer within {timeout}s:\n{self.log_tail()}")

    def remember_processes(self) -> None:
        """Note every process this hub started (proxy, servers) so clean-up can reach it after the hub exits."""
        if self.proc is None:
            return
        try:
            self.known_pids.update(p.pid for p in psutil.Process(self.proc.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass

    def stop(self) -> None:
        """SIGTERM the hub, then kill whatever it left behind (proxy, single-user servers)."""
        self.remember_processes()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        leftovers = []
        for pid in self.known_pids:
            try:
                leftovers.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        leftovers += servers_under(self.workdir)
        for proc in leftovers:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(leftovers, timeout=5)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc = None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class BareHub(BenchHub):
    """Plain JupyterHub with SimpleLocalProcessSpawner, driven by a service token."""

    def start(self) -> None:
        port, hub_port, api_port = hubtools.free_port(), hubtools.free_port(), hubtools.free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.token = os.urandom(24).hex()
        args = ["--allow-root"] if os.geteuid() == 0 else []
        config = textwrap.dedent(
            f"""\
            # Generated by benchmarks/spawn_ready.py: the reference hub.
            c.JupyterHub.ip = "127.0.0.1"
            c.JupyterHub.port = {port}
            c.JupyterHub.hub_ip = "127.0.0.1"
            c.JupyterHub.hub_port = {hub_port}
            c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
            c.ConfigurableHTTPProxy.pid_file = {str(self.workdir / "jupyterhub-proxy.pid")!r}
            c.JupyterHub.pid_file = {str(self.workdir / "jupyterhub.pid")!r}
            c.JupyterHub.db_url = "sqlite:///{self.workdir / "jupyterhub.sqlite"}"
            c.JupyterHub.cookie_secret_file = {str(self.workdir / "jupyterhub_cookie_secret")!r}
            c.JupyterHub.cleanup_servers = True
            c.JupyterHub.authenticator_class = "null"
            c.Authenticator.allow_all = True
            c.Authenticator.admin_users = {{{USER!r}}}
            c.JupyterHub.spawner_class = "simple"
            c.SimpleLocalProcessSpawner.home_dir_template = {str(self.workdir / "home" / "{username}")!r}
            c.Spawner.cmd = [{str(SINGLEUSER)!r}]
            c.Spawner.args = {args!r}
            c.Spawner.default_url = "/lab"
            c.JupyterHub.services = [{{"name": "bench", "api_token": {self.token!r}}}]
            c.JupyterHub.load_roles = [
                {{"name": "bench", "scopes": ["admin:users", "admin:servers"], "services": ["bench"]}},
            ]
            """
        )
        config_path = self.workdir / "jupyterhub_config.py"
        config_path.write_text(config)
        env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "jupyterhub"), "-f", str(config_path)],
                cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        self._wait_answering()
        self.remember_processes()


class OurHub(BenchHub):
    """``hpclab-hub run`` from tests/hubtools.py's deploy YAML, driven by the admin's API token."""

    def start(self) -> None:
        data_dir = self.workdir / "data"
        self._hub = hubtools.Hub(self.workdir, hubtools.hub_yaml(data_dir))
        self.url = self._hub.url
        # hubtools.Hub.start() waits like _wait_answering does; time it the same way.
        t0 = time.perf_counter()
        try:
            self._hub.start(timeout=90)
        finally:
            self.proc = self._hub.proc
            self.log_path = self._hub.log_path
        self.started_in = time.perf_counter() - t0
        self.remember_processes()
        client = hubtools.HubClient(self._hub)
        login = client.login(USER, hubtools.ADMIN_PASSWORD)
        if login.status_code >= 400 or "hub/login" in login.url:
            raise BenchError(f"admin login failed ({login.status_code} at {login.url}):\n{self.log_tail()}")
        made = client.api("POST", f"/users/{USER}/tokens", json={"note": "spawn_ready benchmark", "expires_in": 7200})
        if made.status_code != 201:
            raise BenchError(f"could not create an API token: {made.status_code} {made.text}")
        self.token = made.json()["token"]


def servers_under(folder: Path) -> list[psutil.Process]:
    """jupyterhub-singleuser processes whose working folder lies under ``folder``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if "jupyterhub-singleuser" in cmdline and (proc.info.get("cwd") or "").startswith(str(folder)):
            found.append(proc)
    return found


# --- one measurement ---------------------------------------------------------------------------


def server_model(hub: BenchHub) -> dict[str, Any] | None:
    got = hub.api("GET", f"/users/{USER}")
    if got.status_code != 200:
        raise BenchError(f"{hub.label}: GET /users/{USER} answered {got.status_code}: {got.text}")
    return got.json().get("servers", {}).get("")


def spawn_once(hub: BenchHub, poll: float, timeout: float) -> dict[str, Any]:
    """Start the admin's server, wait until ready, stop it, wait until gone; return the timings."""
    if server_model(hub) is not None:
        raise BenchError(f"{hub.label}: {USER} still has a server before the start")
    hub.remember_processes()
    wall = dt.datetime.now().astimezone()
    t0 = time.perf_counter()
    started = hub.api("POST", f"/users/{USER}/server", json=hub.spawn_body, timeout=timeout)
    post_returned = time.perf_counter() - t0
    if started.status_code not in (201, 202):
        raise BenchError(f"{hub.label}: POST server answered {started.status_code}: {started.text}\n{hub.log_tail()}")
    deadline = t0 + timeout
    while True:
        server = server_model(hub)
        now = time.perf_counter()
        if server and server.get("ready"):
            ready = now - t0
            break
        if server is None or (not server.get("pending") and not server.get("ready")):
            if server is None and started.status_code == 201:
                raise BenchError(f"{hub.label}: server vanished after a 201:\n{hub.log_tail()}")
        if now > deadline:
            raise BenchError(f"{hub.label}: not ready after {timeout}s:\n{hub.log_tail()}")
        time.sleep(poll)
    hub.remember_processes()

    t1 = time.perf_counter()
    stopped = hub.api("DELETE", f"/users/{USER}/server", timeout=timeout)
    if stopped.status_code not in (202, 204):
        raise BenchError(f"{hub.label}: DELETE server answered {stopped.status_code}: {stopped.text}")
    while server_model(hub) is not None:
        if time.perf_counter() - t1 > timeout:
            raise BenchError(f"{hub.label}: server not gone {timeout}s after DELETE:\n{hub.log_tail()}")
        time.sleep(poll)
    gone = time.perf_counter() - t1
    return {
        "started_at": wall.isoformat(timespec="milliseconds"),
        "ready_s": round(ready, 4),
        "post_status": started.status_code,
        "post_returned_s": round(post_returned, 4),
        "stop_s": round(gone, 4),
    }


# --- where the time went, from the hub's log (hub and server write to the same file) -------------


def log_events(path: Path, start: str) -> list[tuple[float, str, str]]:
    """(epoch seconds, source, message) of each log line written at or after ``start`` (ISO time)."""
    since = dt.datetime.fromisoformat(start).replace(tzinfo=None).timestamp() - 0.002
    events = []
    for line in path.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        when = dt.datetime.strptime(match["stamp"], "%Y-%m-%d %H:%M:%S.%f").timestamp()
        if when >= since:
            events.append((when, match["src"], line[match.end():].lstrip("] ")))
    return events


def phases(path: Path, run: dict[str, Any], next_start: str | None) -> dict[str, float]:
    """Split one spawn into: POST → server process's first log line → server listening → hub says ready."""
    t0 = dt.datetime.fromisoformat(run["started_at"]).replace(tzinfo=None).timestamp()
    events = log_events(path, run["started_at"])
    if next_start:
        end = dt.datetime.fromisoformat(next_start).replace(tzinfo=None).timestamp()
        events = [e for e in events if e[0] < end]
    server_src = ("ServerApp", "JupyterHubSingleUser", "LabApp", "SingleUserLabApp")
    first_server = next((t for t, src, _ in events if src.startswith(server_src)), None)
    listening = next((t for t, src, msg in events if src.startswith("ServerApp") and "running at" in msg), None)
    took = next(
        (float(m.group(1)) for _, _, msg in events if (m := re.search(r"took ([\d.]+) seconds to start", msg))), None
    )
    out: dict[str, float] = {}
    if first_server is not None:
        out["to_first_server_log_s"] = round(first_server - t0, 3)
    if listening is not None:
        out["to_server_listening_s"] = round(listening - t0, 3)
        out["listening_to_ready_s"] = round(run["ready_s"] - (listening - t0), 3)
    if took is not None:
        out["hub_reported_start_s"] = took
    return out


# --- reporting ---------------------------------------------------------------------------------


def version_of(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    try:
        cpu_model = next(
            (l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), ""
        )
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True).stdout.strip())
    except OSError:
        commit, dirty = "", None
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jupyterhub": version_of("jupyterhub"),
        "jupyterlab": version_of("jupyterlab"),
        "jupyter_server": version_of("jupyter_server"),
        "configurable_http_proxy": shutil.which("configurable-http-proxy"),
        "euid": os.geteuid(),
        "loadavg_start": list(os.getloadavg()),
        "git_commit": commit,
        "git_dirty": dirty,
    }


def summary(times: list[float]) -> dict[str, float]:
    return {
        "n": len(times),
        "median": round(statistics.median(times), 4),
        "mean": round(statistics.fmean(times), 4),
        "min": round(min(times), 4),
        "max": round(max(times), 4),
        "stdev": round(statistics.stdev(times), 4) if len(times) > 1 else 0.0,
    }


def print_table(results: dict[str, Any]) -> None:
    bare, ours = results["summary"]["bare"], results["summary"]["ours"]
    rows = [("bare JupyterHub (simple)", bare), ("ours (hpclab-hub, cpu-small)", ours)]
    print()
    print(f"spawn-to-ready, {results['repeat']} repetitions per hub, {results['machine']['nproc']} cores, "
          f"JupyterHub {results['machine']['jupyterhub']}, Python {results['machine']['python']}")
    print(f"{'hub':<30} {'n':>3} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, s in rows:
        print(f"{name:<30} {s['n']:>3} {s['median']:>9.3f} {s['min']:>7.3f} {s['max']:>7.3f}")
    c = results["comparison"]
    print(f"ratio ours/bare (medians): {c['ratio']:.3f}   overhead: {c['overhead_s']:+.3f} s "
          f"({c['overhead_pct']:+.1f} % of bare; goal <= 10 %)")
    print(f"paired per-round ratio, median: {c['paired_ratio_median']:.3f}")
    ph = results.get("phases_median", {})
    if ph:
        print("median phases (s from POST):  " + "   ".join(
            f"{hub}: server first log {p.get('to_first_server_log_s', float('nan')):.2f}, "
            f"listening {p.get('to_server_listening_s', float('nan')):.2f}, "
            f"listening->ready {p.get('listening_to_ready_s', float('nan')):.2f}"
            for hub, p in ph.items()
        ))
    print(f"hub start-up (to first /hub/api answer): bare {results['hub_startup_s']['bare']:.2f} s, "
          f"ours {results['hub_startup_s']['ours']:.2f} s")
    print(f"results: {results['path']}")


# --- main --------------------------------------------------------------------------------------


def _raise_exit(signum, frame):  # noqa: ARG001
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="measured repetitions per hub (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured spawns per hub first (default 1)")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between readiness polls (default 0.1)")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds of quiet between spawns (default 1)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds before a start or stop is a failure")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (hub logs) afterwards")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/spawn_ready-<ts>.json)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_exit)

    tmp = Path(tempfile.mkdtemp(prefix="spawn_ready-"))
    hubs = {
        "bare": BareHub("bare", tmp / "bare", spawn_body={}),
        "ours": OurHub("ours", tmp / "ours", spawn_body={"profile": PROFILE}),
    }
    info = machine_info()
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "ours": []}
    warmups: dict[str, list[dict[str, Any]]] = {"bare": [], "ours": []}
    order_log: list[list[str]] = []
    failed = False
    try:
        for name, hub in hubs.items():
            print(f"starting {name} hub ...", flush=True)
            hub.start()
            print(f"  {name} hub answers at {hub.url} after {hub.started_in:.2f} s", flush=True)
        for i in range(args.warmup):
            for name in ("bare", "ours") if i % 2 == 0 else ("ours", "bare"):
                run = spawn_once(hubs[name], args.poll, args.timeout)
                warmups[name].append(run)
                print(f"warm-up {name}: ready in {run['ready_s']:.2f} s", flush=True)
                time.sleep(args.pause)
        for i in range(args.repeat):
            order = ("bare", "ours") if i % 2 == 0 else ("ours", "bare")
            order_log.append(list(order))
            for name in order:
                run = spawn_once(hubs[name], args.poll, args.timeout)
                run["round"] = i
                runs[name].append(run)
                print(f"round {i + 1}/{args.repeat} {name}: ready in {run['ready_s']:.2f} s "
                      f"(POST {run['post_status']} after {run['post_returned_s']:.2f} s, stop {run['stop_s']:.2f} s)",
                      flush=True)
                time.sleep(args.pause)
    except (KeyboardInterrupt, SystemExit, BenchError, requests.RequestException) as exc:
        failed = True
        print(f"spawn_ready: stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        for hub in hubs.values():
            hub.remember_processes()
        # Phases are read from the logs before anything is removed.
        for name, hub in hubs.items():
            all_runs = warmups[name] + runs[name]
            for k, run in enumerate(all_runs):
                nxt = all_runs[k + 1]["started_at"] if k + 1 < len(all_runs) else None
                try:
                    run["phases"] = phases(hub.log_path, run, nxt)
                except OSError:
                    pass
        for hub in hubs.values():
            try:
                hub.stop()
            except Exception as exc:  # clean-up must reach every hub
                print(f"spawn_ready: clean-up of {hub.label}: {exc}", file=sys.stderr)
        if args.keep or failed:
            print(f"hub logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if failed or not runs["bare"] or not runs["ours"]:
        return 1

    bare_t = [r["ready_s"] for r in runs["bare"]]
    ours_t = [r["ready_s"] for r in runs["ours"]]
    s_bare, s_ours = summary(bare_t), summary(ours_t)
    overhead = s_ours["median"] - s_bare["median"]
    phase_keys = ("to_first_server_log_s", "to_server_listening_s", "listening_to_ready_s", "hub_reported_start_s")
    phases_median = {}
    for name in runs:
        med = {}
        for key in phase_keys:
            vals = [r["phases"][key] for r in runs[name] if key in r.get("phases", {})]
            if vals:
                med[key] = round(statistics.median(vals), 3)
        phases_median[name] = med
    info["loadavg_end"] = list(os.getloadavg())
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS_DIR / f"spawn_ready-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {
        "benchmark": "spawn_ready",
        "description": "seconds from POST /hub/api/users/admin/server to servers[''].ready; "
        "bare JupyterHub SimpleLocalProcessSpawner vs hpclab-hub run (local backend, profile cpu-small)",
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "repeat": args.repeat,
        "warmup": args.warmup,
        "poll_s": args.poll,
        "pause_s": args.pause,
        "order": order_log,
        "machine": info,
        "hub_startup_s": {name: round(h.started_in, 3) for name, h in hubs.items()},
        "raw": {"bare": bare_t, "ours": ours_t},
        "runs": runs,
        "warmup_runs": warmups,
        "summary": {"bare": s_bare, "ours": s_ours},
        "phases_median": phases_median,
        "comparison": {
            "ratio": round(s_ours["median"] / s_bare["median"], 4),
            "overhead_s": round(overhead, 4),
            "overhead_pct": round(100 * overhead / s_bare["median"], 2),
            "goal_pct": 10.0,
            "within_goal": overhead <= 0.10 * s_bare["median"],
            "paired_ratio_median": round(statistics.median(o / b for o, b in zip(ours_t, bare_t)), 4),
        },
        "path": str(out.relative_to(REPO) if out.is_relative_to(REPO) else out),
    }
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
