"""What the benchmarks share: hubs started from the config files in benchmarks/configs/, REST access as
a user, machine info, waiting for a quiet machine, CPU accounting, timing statistics, the results file
and the comparison table.

Imported by the scripts next to it (``from harness import ...``). What the tests use too (free ports, folders
other accounts can pass through, a hub as a process) comes from the ``support`` package, tests/support, which
``benchmarks/support`` links to: one copy for both.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import requests
import yaml

from support.hubprocess import HubProcess, free_port, make_reachable

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
CONFIGS = REPO / "benchmarks" / "configs"
VENV_BIN = Path(sys.executable).parent
ADMIN_PASSWORD = secrets.token_urlsafe(12)  # for `admin` on hpclab hubs (HPCLAB_ADMIN_PASSWORD)
USER_PASSWORD = secrets.token_urlsafe(12)  # for accounts made with add_account()


class BenchError(RuntimeError):
    """A start, spawn or stop that did not go as it should (the message carries what is known)."""


# --- machine -----------------------------------------------------------------------------------


def version_of(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def machine_info(*dists: str) -> dict[str, Any]:
    """Cores, CPU model, memory, Python, the versions of ``dists`` (key: name with _ for -), git commit, load."""
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    git = lambda *a: subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True,  # noqa: E731
                                    env=dict(os.environ, GIT_OPTIONAL_LOCKS="0")).stdout.strip()  # leave the index alone
    return {
        "nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "cpu_model": cpu_model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "platform": platform.platform(),
        "python": platform.python_version(), **{d.replace("-", "_"): version_of(d) for d in dists},
        "euid": os.geteuid(), "loadavg_start": list(os.getloadavg()),
        "git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain")),
    }


# --- CPU accounting and a quiet machine --------------------------------------------------------------


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and all it started (hubs, proxies, servers), the exited ones included."""
    me, total = psutil.Process(), 0.0
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):  # exited meanwhile: its time is no longer ours to read
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


class CpuWatch:
    """From creation on: wall seconds, CPU seconds of this process tree, and of everything else on the machine."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.own0 = time.perf_counter(), machine_busy_s(), own_cpu_s()

    def read(self) -> dict[str, float]:
        wall, own = time.perf_counter() - self.t0, own_cpu_s() - self.own0
        others = max(0.0, machine_busy_s() - self.busy0 - own)
        return {"wall_s": wall, "own_cpu_s": own, "others_cpu_s": others, "others_cores": others / max(wall, 1e-9)}


def wait_quiet(threshold: float, max_wait: float) -> tuple[float, float]:
    """Wait until other processes use fewer than ``threshold`` cores over one second (at most ``max_wait`` s).

    Returns (seconds waited, other processes' cores in the last second). A shared machine's other work
    changes start-up times by seconds; a measurement taken under it says more about it than about us.
    """
    t0 = time.perf_counter()
    while True:
        watch = CpuWatch()
        time.sleep(1.0)
        others = watch.read()["others_cores"]
        waited = time.perf_counter() - t0
        if others < threshold or waited >= max_wait:
            return waited, others


# --- statistics, results file, table -----------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float]:
    """n, median, mean, min, max, p95 (inclusive quantile) and stdev, rounded to 0.1 ms."""
    p95 = statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else values[0]
    return {"n": len(values), "median": round(statistics.median(values), 4), "mean": round(statistics.fmean(values), 4),
            "min": round(min(values), 4), "max": round(max(values), 4), "p95": round(p95, 4),
            "stdev": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}


def add_out_option(parser: Any, name: str) -> None:
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON file to write (default benchmarks/results/{name}-<timestamp>.json)")


def add_spawn_options(parser: Any, name: str, repeat: int, quiet: float, settle: float, timeout: float,
                      keep: str = "keep the temporary folder (hub logs) afterwards") -> None:
    """The options of the benchmarks that spawn servers through a hub's REST API, --out included."""
    parser.add_argument("--repeat", type=int, default=repeat, help=f"measured spawns per hub (default {repeat})")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first, one spawn per hub each (default 1)")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between readiness polls (default 0.1)")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between spawns (default 1)")
    parser.add_argument("--quiet", type=float, default=quiet, metavar="CORES",
                        help=f"before each measured spawn, wait until other processes use fewer cores (default {quiet})")
    parser.add_argument("--settle", type=float, default=settle, metavar="S",
                        help=f"...but wait at most this long (default {settle:g}; 0: do not wait)")
    parser.add_argument("--timeout", type=float, default=timeout, help=f"seconds before a start or stop is a failure "
                        f"(default {timeout:g})")
    parser.add_argument("--keep", action="store_true", help=keep)
    add_out_option(parser, name)


def write_results(name: str, results: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``results`` (plus benchmark, timestamp, path) as JSON to ``out`` or results/<name>-<timestamp>.json;
    the path as recorded (relative to the repository when inside it)."""
    now = dt.datetime.now().astimezone()
    path = Path(out) if out else RESULTS_DIR / f"{name}-{now:%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    shown = path.resolve().relative_to(REPO) if path.resolve().is_relative_to(REPO) else path
    doc = {"benchmark": name, "timestamp": now.isoformat(timespec="seconds"), **results, "path": str(shown)}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return shown


def print_table(rows: dict[str, list[float]], reference: str | None = None,
                extra: dict[str, dict[str, Any]] | None = None, unit: str = "s") -> None:
    """One line per method: n, min, median, max, p95, and median / the reference's median; then extra columns."""
    extra = extra or {}
    cols = list(dict.fromkeys(k for row in extra.values() for k in row))
    width = max([len(label) for label in rows] + [6])
    ref = statistics.median(rows[reference]) if reference and rows.get(reference) else None
    print(f"{'method':<{width}} {'n':>3} {'min':>8} {'median':>8} {'max':>8} {'p95':>8} {'ratio':>7}"
          + "".join(f" {c:>10}" for c in cols) + f"   ({unit})")
    for label, values in rows.items():
        if not values:
            print(f"{label:<{width}} {0:>3}   (no successful run)")
            continue
        s = summary(values)
        ratio = "ref" if label == reference else f"{s['median'] / ref:.3f}" if ref else "-"
        cells = "".join(f" {_cell(extra.get(label, {}).get(c)):>10}" for c in cols)
        print(f"{label:<{width}} {s['n']:>3} {s['min']:>8.3f} {s['median']:>8.3f} {s['max']:>8.3f} {s['p95']:>8.3f} "
              f"{ratio:>7}{cells}")


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def exit_on_signals() -> None:
    """SIGTERM and SIGHUP raise SystemExit like Ctrl-C raises KeyboardInterrupt, so clean-up runs."""
    def _raise(signum: int, frame: Any) -> None:  # noqa: ARG001
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise)


def ignore_signals() -> None:
    """During clean-up: a second Ctrl-C must not cut it short."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


# --- hubs ------------------------------------------------------------------------------------------


@dataclass
class Hub(HubProcess):
    """A hub process under measurement: command, environment, URL, log, and every process it started."""

    label: str
    workdir: Path
    argv: list[str]
    env: dict[str, str]
    url: str
    config_path: Path | None = None  # the deploy YAML of an hpclab hub ...
    config: dict[str, Any] | None = None  # ... and what it holds
    service_token: str = ""  # the bare hub's admin service token
    proc: subprocess.Popen | None = None
    start_error = BenchError
    timeout_error = BenchError

    def user_url(self, user: str) -> str:
        """Where ``user``'s default server is served (no trailing slash): their own host name on our hub with
        hub.user_subdomains (the default), the hub's host otherwise and on the bare hub."""
        hub = (self.config or {}).get("hub", {})
        if self.config is None or not hub.get("user_subdomains", True):
            return f"{self.url}/user/{user}"
        scheme, rest = self.url.split("://", 1)
        return f"{scheme}://{user}.{rest}/user/{user}"

    def start(self, timeout: float = 120, path_first: Path | None = None, listening: socket.socket | None = None) -> None:
        """Start the hub (``path_first`` leads its PATH; ``listening``: its API socket, handed over as systemd's socket
        activation does) and wait until /hub/api/ answers through the proxy."""
        env = dict(self.env, PATH=f"{path_first}:{self.env['PATH']}" if path_first else self.env["PATH"])
        try:
            self.launch(self.argv, env, timeout, cwd=self.workdir, listening=listening)
        except BenchError as exc:
            raise BenchError(f"{self.label}: {exc}") from None

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the hub, then end what it left behind (proxy, single-user servers under its folder)."""
        self.remember_processes()
        self.terminate(timeout)
        self.end_leftovers()


def root_workdir(name: str) -> Path | None:
    """A temporary folder the servers' accounts can pass through, for a benchmark that must run as root;
    None (after saying so) when it does not."""
    if os.geteuid() != 0:
        print(f"{name}: run as root (servers run as their users' accounts)", file=sys.stderr)
        return None
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    folder.chmod(0o711)
    return folder


def hub_proxy(hub: psutil.Process) -> psutil.Process:
    """The configurable-http-proxy (a node process) that the hub started."""
    return next(p for p in hub.children() if p.name() == "node")


def stop_hubs(hubs: dict[str, Hub], timeout: float = 30) -> list[str]:
    """Stop every hub and what it left; what went wrong on the way (never raises: clean-up must reach all)."""
    problems = []
    for name, hub in hubs.items():
        try:
            hub.stop(timeout)
        except Exception as exc:
            problems.append(f"stopping the {name} hub: {type(exc).__name__}: {exc}")
    return problems


def _env() -> dict[str, str]:
    return dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}")


def bare_hub(label: str, workdir: Path, admin: str = "admin", login: bool = False) -> Hub:
    """Plain JupyterHub from configs/bare_jupyterhub_config.py; its service token has admin:users/servers, access:servers, tokens.
    ``login``: a browser may log in through the form, with any password (DummyAuthenticator)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, token = free_port(), secrets.token_hex(24)
    env = dict(_env(), BENCH_PORT=str(port), BENCH_HUB_PORT=str(free_port()), BENCH_PROXY_API_PORT=str(free_port()),
               BENCH_WORKDIR=str(workdir), BENCH_ADMIN=admin, BENCH_TOKEN=token,
               BENCH_SINGLEUSER=str(VENV_BIN / "jupyterhub-singleuser"), **({"BENCH_LOGIN": "1"} if login else {}))
    argv = [str(VENV_BIN / "jupyterhub"), "-f", str(CONFIGS / "bare_jupyterhub_config.py")]
    return Hub(label, workdir, argv, env, f"http://127.0.0.1:{port}", service_token=token)


def hpclab_hub(label: str, workdir: Path, config: str, settings: dict[str, Any] | None = None) -> Hub:
    """``hpclab-hub run`` from configs/<config>: free ports, state in workdir/data, servers' folders in
    workdir/homes; ``settings`` sets further keys, each named by its dotted path (``backends.cluster.poll_interval``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    deploy = yaml.safe_load((CONFIGS / config).read_text())
    hub = deploy["hub"]
    hub.update(port=free_port(), hub_port=free_port(), proxy_api_port=free_port(), data_dir=str(workdir / "data"))
    homes = workdir / "homes"
    for backend in deploy["backends"].values():
        if backend["type"] == "local":
            backend["home_dir"] = str(homes / "{username}")
    for dotted, value in (settings or {}).items():
        *parents, last = dotted.split(".")
        node = deploy
        for key in parents:
            node = node[key]
        node[last] = value
    path = workdir / "hub.yaml"
    path.write_text(yaml.safe_dump(deploy, sort_keys=False))
    homes.mkdir(exist_ok=True)
    make_reachable(homes / "x")
    make_reachable(Path(sys.executable))
    env = dict(_env(), HPCLAB_ADMIN_PASSWORD=ADMIN_PASSWORD)
    # with a host name per user (the default), the hub is driven at its public name, as a browser would be
    host = hub.get("public_host", "localhost") if hub.get("user_subdomains", True) else "127.0.0.1"
    return Hub(label, workdir, [str(VENV_BIN / "hpclab-hub"), "run", "--config", str(path)], env,
               f"http://{host}:{hub['port']}", config_path=path, config=deploy)


def ensure_unix_users(names: list[str]) -> list[str]:
    """Make the Unix accounts (with homes) that do not exist yet; the names made, for removal afterwards."""
    created = []
    for name in names:
        if subprocess.run(["id", name], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-m", name], check=True, capture_output=True)
            created.append(name)
    return created


def add_account(hub: Hub, name: str, password: str = USER_PASSWORD) -> None:
    """An approved local account on an hpclab hub (``hpclab-hub users add``), before it starts."""
    subprocess.run([str(VENV_BIN / "hpclab-hub"), "users", "add", name, "--config", str(hub.config_path),
                    "--password-stdin"], input=password + "\n", text=True, check=True, capture_output=True)


# --- a user's REST access, one spawn, one stop ---------------------------------------------------------


class Api:
    """One user's REST access to one hub with an API token."""

    def __init__(self, hub: Hub, user: str, token: str) -> None:
        self.hub, self.user, self.http = hub, user, requests.Session()
        self.http.headers["Authorization"] = f"token {token}"

    @classmethod
    def login(cls, hub: Hub, user: str, password: str, note: str = "benchmark") -> "Api":
        """Log in through the form like a browser, then create an API token (hpclab hubs)."""
        web = requests.Session()
        page = web.get(f"{hub.url}/hub/login", timeout=30)
        xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text)
        answer = web.post(f"{hub.url}/hub/login", timeout=30, data={
            "username": user, "password": password, "_xsrf": xsrf.group(1) if xsrf else ""})
        if answer.status_code >= 400 or "/hub/login" in answer.url:
            raise BenchError(f"{hub.label}: login as {user} failed ({answer.status_code}):\n{hub.log_tail()}")
        made = web.post(f"{hub.url}/hub/api/users/{user}/tokens", timeout=30, json={"note": note, "expires_in": 7200},
                        headers={"X-XSRFToken": web.cookies.get("_xsrf", "", path="/hub/")})
        if made.status_code != 201:
            raise BenchError(f"{hub.label}: {user} could not create a token: {made.status_code} {made.text}")
        return cls(hub, user, made.json()["token"])

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", 60)
        return self.http.request(method, f"{self.hub.url}/hub/api{path}", **kwargs)

    def server(self) -> dict[str, Any] | None:
        """The user's default server model, or None."""
        got = self.request("GET", f"/users/{self.user}")
        if got.status_code != 200:
            raise BenchError(f"{self.hub.label}: GET /users/{self.user} answered {got.status_code}: {got.text}")
        return got.json().get("servers", {}).get("")

    def spawn(self, body: dict[str, Any], poll: float, timeout: float) -> dict[str, Any]:
        """POST the start, poll until ``servers[""].ready``; seconds from the POST to ready, and when (epoch)."""
        if self.server() is not None:
            raise BenchError(f"{self.hub.label}: {self.user} still has a server before the start")
        wall, t0 = time.time(), time.perf_counter()
        started = self.request("POST", f"/users/{self.user}/server", json=body, timeout=timeout)
        post_s = time.perf_counter() - t0
        if started.status_code not in (201, 202):
            raise BenchError(f"{self.hub.label}: POST for {self.user} answered {started.status_code}: {started.text}")
        while True:
            server = self.server()
            elapsed = time.perf_counter() - t0
            if server and server.get("ready"):
                break
            if server is None and (started.status_code == 201 or elapsed > 2):
                raise BenchError(f"{self.hub.label}: {self.user}'s server vanished (start failed):\n{self.hub.log_tail()}")
            if elapsed > timeout:
                raise BenchError(f"{self.hub.label}: {self.user}'s server not ready after {timeout:.0f} s")
            time.sleep(poll)
        return {"user": self.user, "started_at": dt.datetime.fromtimestamp(wall).astimezone().isoformat(timespec="milliseconds"),
                "post_status": started.status_code, "post_returned_s": round(post_s, 4), "ready_s": round(elapsed, 4),
                "post_epoch": round(wall, 4), "ready_epoch": round(wall + elapsed, 4)}

    def stop(self, poll: float, timeout: float) -> float:
        """DELETE the user's server and poll until the hub no longer lists it; the seconds that took."""
        t0 = time.perf_counter()
        stopped = self.request("DELETE", f"/users/{self.user}/server", timeout=timeout)
        if stopped.status_code not in (202, 204, 400):  # 400: not running (a failed start already cleared it)
            raise BenchError(f"{self.hub.label}: DELETE for {self.user} answered {stopped.status_code}: {stopped.text}")
        while self.server() is not None:
            if time.perf_counter() - t0 > timeout:
                raise BenchError(f"{self.hub.label}: {self.user}'s server not gone {timeout:.0f} s after DELETE")
            time.sleep(poll)
        return round(time.perf_counter() - t0, 4)
