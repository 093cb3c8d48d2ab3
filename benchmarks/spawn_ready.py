#!/usr/bin/env python
"""Spawn-to-ready: HPCLab's local backend against bare JupyterHub's SimpleLocalProcessSpawner.

Starts two hubs side by side on free ports, both with configurable-http-proxy and SQLite in a
temporary folder, both starting the same ``jupyterhub-singleuser`` (default URL /lab):

* bare: ``jupyterhub -f <generated config>`` with ``spawner_class = "simple"``; a service token
  with the admin:users/admin:servers scopes drives it over the REST API;
* ours: ``hpclab-hub run --config <temp yaml>`` (tests/support/hubtools.py's hub_yaml(), profile
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

import abc
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

from support import hubtools  # noqa: E402  (tests/support/hubtools.py: hub_yaml, Hub, HubClient, free_port)

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
class BenchHub(abc.ABC):
    """A hub under measurement: its process, URL, token, and the body its spawn POST sends."""

    label: str
    workdir: Path
    spawn_body: dict[str, Any]
    url: str = ""
    token: str = ""
    proc: subprocess.Popen | None = None
    log_path: Path = field(init=False)
    started_in: float = 0.0
    known: dict[tuple[int, float], psutil.Process] = field(default_factory=dict)  # (pid, create time) -> process

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

    @abc.abstractmethod
    def start(self) -> None:
        """Start this kind of hub and wait until it answers."""

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
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.known.setdefault((child.pid, child.create_time()), child)
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
        # psutil.Process objects, not PIDs: they refuse to signal a PID that another process reused.
        leftovers = [proc for proc in self.known.values() if proc.is_running()]
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

    pin_cpus: tuple[int, ...] = ()  # diagnostic (--bare-cpus): pin the bare servers like our profiles do
    wait_in_start: bool = False  # diagnostic (--bare-wait-in-start): start() returns once the server answers

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
        if self.pin_cpus:
            config += textwrap.dedent(
                f"""\
                # --bare-cpus: same core pinning as the local backend's profiles, nothing else.
                import os
                from jupyterhub.spawner import SimpleLocalProcessSpawner

                class PinnedSimpleSpawner(SimpleLocalProcessSpawner):
                    def make_preexec_fn(self, name):
                        inner = super().make_preexec_fn(name)

                        def preexec():
                            os.sched_setaffinity(0, {set(self.pin_cpus)!r})
                            inner()

                        return preexec

                c.JupyterHub.spawner_class = PinnedSimpleSpawner
                c.PinnedSimpleSpawner.home_dir_template = c.SimpleLocalProcessSpawner.home_dir_template
                """
            )
        if self.wait_in_start:
            config += textwrap.dedent(
                """\
                # --bare-wait-in-start: start() itself polls the new server every 50 ms and returns once it
                # answers, so the hub's own check (exponential backoff: sleeps of up to 0.2, 0.4, 0.8, 1.6,
                # 3.2, 5 s with full jitter) succeeds on its first, immediate try.
                import asyncio
                from tornado.httpclient import AsyncHTTPClient

                _Base = c.JupyterHub.spawner_class
                if isinstance(_Base, str):
                    from jupyterhub.spawner import SimpleLocalProcessSpawner as _Base

                class PrewaitSpawner(_Base):
                    async def start(self):
                        ip, port = await super().start()
                        url = f"http://{ip}:{port}{self.server.base_url}api"
                        client = AsyncHTTPClient()
                        loop = asyncio.get_running_loop()
                        deadline = loop.time() + self.http_timeout
                        while loop.time() < deadline and self.proc.poll() is None:
                            try:
                                answer = await client.fetch(url, raise_error=False, request_timeout=2)
                                if answer.code < 500:
                                    break
                            except OSError:
                                pass
                            await asyncio.sleep(0.05)
                        return ip, port

                c.JupyterHub.spawner_class = PrewaitSpawner
                c.PrewaitSpawner.home_dir_template = c.SimpleLocalProcessSpawner.home_dir_template
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
    """``hpclab-hub run`` from tests/support/hubtools.py's deploy YAML, driven by the admin's API token."""

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


# --- CPU accounting: how busy the machine was, and how much of that was not us ---------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def tree_cpu(hubs: list["BenchHub"]) -> dict[int, float]:
    """CPU seconds (user+system) of this process, each hub, and everything the hubs started."""
    procs = [psutil.Process()]
    for hub in hubs:
        if hub.proc is not None:
            try:
                root = psutil.Process(hub.proc.pid)
                procs += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
    out = {}
    for proc in procs:
        try:
            t = proc.cpu_times()
            out[proc.pid] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return out


def singleuser_cpu(hub: "BenchHub") -> float | None:
    """CPU seconds the hub's running jupyterhub-singleuser has used so far."""
    try:
        for proc in psutil.Process(hub.proc.pid).children(recursive=True):
            if "jupyterhub-singleuser" in " ".join(proc.cmdline()):
                t = proc.cpu_times()
                return round(t.user + t.system, 3)
    except (psutil.NoSuchProcess, AttributeError):
        pass
    return None


def wait_quiet(hubs: list["BenchHub"], threshold: float, max_wait: float) -> tuple[float, float]:
    """Wait until other processes use less than ``threshold`` cores over one second (or ``max_wait`` passed).

    Returns (seconds waited, other processes' cores in the last window). This machine is shared: other
    people's test runs come and go, and a spawn measured under them says more about them than about us.
    """
    t0 = time.perf_counter()
    while True:
        ours_before, busy_before = tree_cpu(hubs), machine_busy_s()
        time.sleep(1.0)
        busy = machine_busy_s() - busy_before
        ours_after = tree_cpu(hubs)
        ours = sum(v - ours_before.get(pid, 0.0) for pid, v in ours_after.items())
        foreign = max(busy - ours, 0.0)
        waited = time.perf_counter() - t0
        if foreign < threshold or waited >= max_wait:
            return waited, foreign


# --- one measurement ---------------------------------------------------------------------------


def server_model(hub: BenchHub) -> dict[str, Any] | None:
    got = hub.api("GET", f"/users/{USER}")
    if got.status_code != 200:
        raise BenchError(f"{hub.label}: GET /users/{USER} answered {got.status_code}: {got.text}")
    return got.json().get("servers", {}).get("")


def spawn_once(hub: BenchHub, poll: float, timeout: float, all_hubs: list[BenchHub]) -> dict[str, Any]:
    """Start the admin's server, wait until ready, stop it, wait until gone; return the timings.

    Besides the wall-clock time, it notes how much CPU the machine spent meanwhile that was not
    ours (other users of this machine), the single-user process's own CPU time, and per-core load.
    """
    if server_model(hub) is not None:
        raise BenchError(f"{hub.label}: {USER} still has a server before the start")
    hub.remember_processes()
    loadavg = os.getloadavg()[0]
    ours_before, busy_before = tree_cpu(all_hubs), machine_busy_s()
    psutil.cpu_percent(percpu=True)
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
            per_core = psutil.cpu_percent(percpu=True)
            busy = machine_busy_s() - busy_before
            ours_after = tree_cpu(all_hubs)
            ours_cpu = sum(v - ours_before.get(pid, 0.0) for pid, v in ours_after.items())
            server_cpu = singleuser_cpu(hub)
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
        "server_cpu_s": server_cpu,
        "machine_busy_cpu_s": round(busy, 2),
        "foreign_cpu_s": round(max(busy - ours_cpu, 0.0), 2),
        "core_busy_pct": per_core,
        "loadavg_1m_before": round(loadavg, 2),
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
    """Split one spawn: POST → hub logs "Spawning" (Popen) → server's first log line → server listening → ready."""
    t0 = dt.datetime.fromisoformat(run["started_at"]).replace(tzinfo=None).timestamp()
    events = log_events(path, run["started_at"])
    if next_start:
        end = dt.datetime.fromisoformat(next_start).replace(tzinfo=None).timestamp()
        events = [e for e in events if e[0] < end]
    spawning = next((t for t, src, msg in events if src.startswith("JupyterHub") and "Spawning " in msg), None)
    server_src = ("ServerApp", "JupyterHubSingleUser", "LabApp", "SingleUserLabApp")
    first_server = next((t for t, src, _ in events if src.startswith(server_src)), None)
    listening = next((t for t, src, msg in events if src.startswith("ServerApp") and "running at" in msg), None)
    took = next(
        (float(m.group(1)) for _, _, msg in events if (m := re.search(r"took ([\d.]+) seconds to start", msg))), None
    )
    out: dict[str, float] = {}
    if spawning is not None:
        out["to_popen_s"] = round(spawning - t0, 3)  # the hub and spawner's work before the process starts
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
    m = results["machine"]
    names = {"bare": "bare JupyterHub (simple)", "ours": "ours (hpclab-hub cpu-small)"}
    if results["bare_cpus"] or results["bare_wait_in_start"]:
        extras = ([f"pinned {results['bare_cpus']}"] if results["bare_cpus"] else []) + (
            ["wait-in-start"] if results["bare_wait_in_start"] else []
        )
        names["bare"] = f"bare ({', '.join(extras)})"
    nan = float("nan")
    print()
    print(f"spawn-to-ready: {results['repeat']} repetitions per hub (+{results['warmup']} warm-up), "
          f"{m['nproc']} cores, JupyterHub {m['jupyterhub']}, JupyterLab {m['jupyterlab']}, Python {m['python']}")
    print(f"{'':<30} {'ready (s)':^23}   {'medians, s from POST':^24}   {'medians, CPU s':^18}")
    print(f"{'hub':<30} {'median':>7} {'min':>7} {'max':>7}   {'listening':>10} {'->ready':>13}   "
          f"{'server':>8} {'others':>9}")
    for key in ("bare", "ours"):
        s, ph, cpu = results["summary"][key], results["phases_median"].get(key, {}), results["cpu"][key]
        print(f"{names[key]:<30} {s['median']:>7.2f} {s['min']:>7.2f} {s['max']:>7.2f}   "
              f"{ph.get('to_server_listening_s', nan):>10.2f} {ph.get('listening_to_ready_s', nan):>13.2f}   "
              f"{cpu['server_cpu_s_median'] or nan:>8.2f} {cpu['foreign_cpu_s_median']:>9.2f}")
    c = results["comparison"]
    print(f"ours/bare (medians): {c['ratio']:.3f}; overhead {c['overhead_s']:+.2f} s = {c['overhead_pct']:+.1f} % of bare "
          f"(goal <= {c['goal_pct']:.0f} %: {'met' if c['within_goal'] else 'not met'}); "
          f"paired per-round ratio, median {c['paired_ratio_median']:.3f}"
          + (f"; POST->listening ratio {c['listening_ratio']:.3f}" if c["listening_ratio"] else ""))
    print(f"hub start-up to first /hub/api answer: bare {results['hub_startup_s']['bare']:.2f} s, "
          f"ours {results['hub_startup_s']['ours']:.2f} s; load average {m['loadavg_start'][0]:.2f} -> {m['loadavg_end'][0]:.2f}")
    print("listening = the server logged 'is running at'; ->ready = until the hub marked it ready (its backoff);")
    print("CPU others = CPU seconds used during the spawn by processes that are not these hubs or their servers.")
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
    parser.add_argument("--quiet", type=float, default=0.3, metavar="CORES",
                        help="before each spawn, wait until other processes use fewer cores than this (default 0.3)")
    parser.add_argument("--settle", type=float, default=60, metavar="S",
                        help="...but wait at most this long (default 60; 0: do not wait)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds before a start or stop is a failure")
    parser.add_argument("--bare-cpus", default="", metavar="0[,1..]",
                        help="diagnostic: pin the bare hub's servers to these cores (ours pins cpu-small to one core)")
    parser.add_argument("--bare-wait-in-start", action="store_true",
                        help="diagnostic: the bare spawner's start() waits for the server itself (no hub backoff lag)")
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
    if args.bare_cpus:
        hubs["bare"].pin_cpus = tuple(int(x) for x in args.bare_cpus.split(","))
    hubs["bare"].wait_in_start = args.bare_wait_in_start
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
                run = spawn_once(hubs[name], args.poll, args.timeout, list(hubs.values()))
                warmups[name].append(run)
                print(f"warm-up {name}: ready in {run['ready_s']:.2f} s", flush=True)
                time.sleep(args.pause)
        for i in range(args.repeat):
            order = ("bare", "ours") if i % 2 == 0 else ("ours", "bare")
            order_log.append(list(order))
            for name in order:
                waited, foreign = wait_quiet(list(hubs.values()), args.quiet, args.settle) if args.settle > 0 else (0.0, None)
                run = spawn_once(hubs[name], args.poll, args.timeout, list(hubs.values()))
                run["round"] = i
                run["settle_waited_s"] = round(waited, 1)
                run["foreign_cores_before"] = None if foreign is None else round(foreign, 2)
                runs[name].append(run)
                print(f"round {i + 1}/{args.repeat} {name}: ready in {run['ready_s']:.2f} s "
                      f"(server CPU {run['server_cpu_s']} s, other processes' CPU meanwhile {run['foreign_cpu_s']:.1f} s, "
                      f"stop {run['stop_s']:.2f} s)", flush=True)
                time.sleep(args.pause)
    except (KeyboardInterrupt, SystemExit, BenchError, requests.RequestException) as exc:
        failed = True
        print(f"spawn_ready: stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        # Clean-up is bounded (about 25 s per hub at worst); a second Ctrl-C must not cut it short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        for hub in hubs.values():
            hub.remember_processes()
        # Phases are read from the logs before anything is removed.
        for name, hub in hubs.items():
            all_runs = warmups[name] + runs[name]
            for k, run in enumerate(all_runs):
                nxt = all_runs[k + 1]["started_at"] if k + 1 < len(all_runs) else None
                try:
                    run["phases"] = phases(hub.log_path, run, nxt)
                except Exception as exc:  # a log we cannot read must not stop the clean-up
                    print(f"spawn_ready: phases of {hub.label}: {exc}", file=sys.stderr)
        for hub in hubs.values():
            try:
                hub.stop()
            except Exception as exc:  # clean-up must reach every hub
                print(f"spawn_ready: clean-up of {hub.label}: {exc}", file=sys.stderr)
        if args.keep or failed:
            print(f"hub logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if failed or not runs["bare"] or not runs["ours"]:
        return 1

    bare_t = [r["ready_s"] for r in runs["bare"]]
    ours_t = [r["ready_s"] for r in runs["ours"]]
    s_bare, s_ours = summary(bare_t), summary(ours_t)
    overhead = s_ours["median"] - s_bare["median"]
    phase_keys = ("to_popen_s", "to_first_server_log_s", "to_server_listening_s", "listening_to_ready_s", "hub_reported_start_s")
    phases_median = {}
    for name in runs:
        med = {}
        for key in phase_keys:
            vals = [r["phases"][key] for r in runs[name] if key in r.get("phases", {})]
            if vals:
                med[key] = round(statistics.median(vals), 3)
        phases_median[name] = med
    cpu_summary = {}
    for name in runs:
        server = [r["server_cpu_s"] for r in runs[name] if r.get("server_cpu_s") is not None]
        foreign = [r["foreign_cpu_s"] for r in runs[name]]
        cpu_summary[name] = {
            "server_cpu_s_median": round(statistics.median(server), 3) if server else None,
            "foreign_cpu_s_median": round(statistics.median(foreign), 2),
            "foreign_cpu_s_max": round(max(foreign), 2),
        }
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
        "quiet_cores": args.quiet,
        "settle_max_s": args.settle,
        "bare_cpus": list(hubs["bare"].pin_cpus),
        "bare_wait_in_start": args.bare_wait_in_start,
        "order": order_log,
        "machine": info,
        "hub_startup_s": {name: round(h.started_in, 3) for name, h in hubs.items()},
        "raw": {"bare": bare_t, "ours": ours_t},
        "runs": runs,
        "warmup_runs": warmups,
        "summary": {"bare": s_bare, "ours": s_ours},
        "phases_median": phases_median,
        "cpu": cpu_summary,
        "comparison": {
            "ratio": round(s_ours["median"] / s_bare["median"], 4),
            "overhead_s": round(overhead, 4),
            "overhead_pct": round(100 * overhead / s_bare["median"], 2),
            "goal_pct": 10.0,
            "within_goal": overhead <= 0.10 * s_bare["median"],
            "paired_ratio_median": round(statistics.median(o / b for o, b in zip(ours_t, bare_t)), 4),
            # POST -> the server's "is running at" line: the spawner's and the server's share, without
            # the hub's backoff lag between the server listening and the hub noticing.
            "listening_ratio": (
                round(phases_median["ours"]["to_server_listening_s"] / phases_median["bare"]["to_server_listening_s"], 4)
                if all("to_server_listening_s" in phases_median[h] for h in ("ours", "bare")) else None
            ),
        },
        "path": str(out.relative_to(REPO) if out.is_relative_to(REPO) else out),
    }
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
