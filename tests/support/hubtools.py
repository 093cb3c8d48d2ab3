"""Start a real HPCLab hub (JupyterHub + configurable-http-proxy) for tests, and talk to it over HTTP."""

from __future__ import annotations

import html
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import psutil
import requests
import yaml
from bs4 import BeautifulSoup

from support.hubprocess import HubProcess, free_port, make_reachable
from support.paths import REPO_ROOT


REPO = REPO_ROOT
HUB_CLI = Path(sys.executable).with_name("hpclab-hub")
ADMIN_PASSWORD = "admin-test-password-7"
TEST_PUBLIC_HOST = "hpclab.localhost"


def homes_dir(data_dir: str | Path) -> Path:
    """Where test hubs keep their users' homes: beside the (private) data folder, one per user."""
    return Path(data_dir).parent / "homes"


def home_of(data_dir: str | Path, user: str) -> Path:
    return homes_dir(data_dir) / user


def write_in_home(data_dir: str | Path, user: str, relative: str | Path, text: str | bytes) -> Path:
    """Write a file into ``user``'s home before their server starts, owned by their account (made if missing)."""
    from hpclab_hub.backends.local.unix_accounts import ensure_home, resolve_account

    account = resolve_account(user, "create", "jupyter-", Path("/home"), str(home_of(data_dir, "{username}")))
    ensure_home(account)
    return write_owned(Path(account.home), account.uid, account.gid, relative, text)


def write_owned(home: Path, uid: int, gid: int, relative: str | Path, text: str | bytes) -> Path:
    """Write ``relative`` below ``home``, it and the folders it makes owned by ``uid``:``gid``."""
    path = home / relative
    for folder in reversed([p for p in path.parents if p.is_relative_to(home) and p != home]):
        folder.mkdir(exist_ok=True)
        os.chown(folder, uid, gid)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    os.chown(path, uid, gid)
    return path


def hub_yaml(data_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A deploy YAML for tests: free ports, state in ``data_dir``, homes beside it, alice in gpu-users, bob not."""
    config: dict[str, Any] = {
        "hub": {
            # each user's servers at <user>.hpclab.localhost (the default's subdomains; *.localhost resolves to the
            # loopback through nss-myhostname). Not plain "localhost": Python's cookie jar treats a host without a dot
            # as "<host>.local" and drops the hub's session cookie (Domain=localhost) that browsers keep.
            "public_host": TEST_PUBLIC_HOST,
            "port": free_port(),
            "hub_port": free_port(),
            "proxy_api_port": free_port(),
            "data_dir": str(data_dir),
            "admin_users": ["admin"],
            "log_level": "DEBUG",  # the most verbose level, so a leaked secret would show up in the log
        },
        "auth": {"groups": {"gpu-users": ["admin", "alice"]}},
        "backends": {"local": {"type": "local", "cpus": "auto", "gpus": ["fake0"], "home_dir": str(homes_dir(data_dir) / "{username}")}},
        "profiles": [
            {"slug": "cpu-small", "display_name": "CPU small", "backend": "local", "cpus": 1, "memory": "3G", "default": True},
            {"slug": "gpu-1", "display_name": "GPU one", "backend": "local", "cpus": 1, "gpus": 1, "groups": ["gpu-users"]},
        ],
    }
    for key, value in overrides.items():
        config[key] = value
    return config


@dataclass
class Hub(HubProcess):
    """One hub under test: its YAML, process, log, and URL."""

    workdir: Path
    config: dict[str, Any]
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "hub.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    @property
    def subdomains(self) -> bool:
        """Whether users' servers have their own host names (the default, unless the YAML turns it off)."""
        return bool(self.config["hub"].get("user_subdomains", True))

    @property
    def url(self) -> str:
        """The hub's public address: its public_host with subdomains on, else the loopback address."""
        scheme = "https" if self.config["hub"].get("ssl_cert") else "http"
        host = self.config["hub"].get("public_host", "localhost") if self.subdomains else "127.0.0.1"
        return f"{scheme}://{host}:{self.config['hub']['port']}"

    def user_url(self, user: str, server_name: str = "") -> str:
        """Where ``user``'s (named) server is served, ending in a slash: their own host name with subdomains on."""
        path = f"/user/{user}/" + (f"{server_name}/" if server_name else "")
        if not self.subdomains:
            return self.url + path
        scheme, rest = self.url.split("://", 1)
        return f"{scheme}://{user}.{rest}{path}"

    @property
    def verify(self) -> str | bool:
        """What requests should trust: the hub's own (self-signed) certificate when it serves HTTPS."""
        return self.config["hub"].get("ssl_cert") or True

    def start(self, timeout: float = 60, listening: socket.socket | None = None) -> None:
        """Start ``hpclab-hub run`` and wait until the hub answers through the proxy (``listening``: its API socket,
        handed over as systemd's socket activation does)."""
        make_reachable(Path(sys.executable))
        homes = homes_dir(self.config["hub"]["data_dir"])
        homes.mkdir(parents=True, exist_ok=True)
        make_reachable(homes / "x")
        env = dict(os.environ, HPCLAB_ADMIN_PASSWORD=ADMIN_PASSWORD)
        # a shell's PATH without the proxy: hpclab-hub run finds the one `make proxy` put next to the venv
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if "node_modules" not in p)
        env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
        self.launch([str(HUB_CLI), "run", "--config", str(self.config_path)], env, timeout, listening=listening)

    def stop(self, timeout: float = 30, keep_proxy: bool = False) -> None:
        """SIGTERM the hub (as an admin's Ctrl-C would) and wait for it; servers stay. The proxy, which a stop with
        ``keep_servers_on_restart`` leaves running for them, is ended too unless ``keep_proxy`` (tests of restarts):
        a test's proxy must not outlive it."""
        self.terminate(timeout)
        if not keep_proxy:
            self.end_kept_proxy()

    def end_kept_proxy(self) -> None:
        """End the configurable-http-proxy named by the data folder's pid file, if one still runs."""
        try:
            proxy = psutil.Process(int((Path(self.config["hub"]["data_dir"]) / "jupyterhub-proxy.pid").read_text()))
            if "configurable-http-proxy" in " ".join(proxy.cmdline()):
                proxy.kill()
                proxy.wait(10)
        except (OSError, ValueError, psutil.Error):
            pass

    def kill_servers(self) -> None:
        """Stop every single-user server this hub's data folder started, and the proxy a stop left running for
        them (``keep_servers_on_restart``; test clean-up)."""
        for proc in singleuser_processes(self.config["hub"]["data_dir"]):
            proc.kill()
        self.end_kept_proxy()


def singleuser_processes(data_dir: str, user: str | None = None) -> list[psutil.Process]:
    """Running jupyterhub-singleuser processes of the hub with this ``data_dir`` (homes beside it), optionally one user's."""
    found = []
    homes = str(homes_dir(data_dir))
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        cwd = proc.info.get("cwd") or ""
        if "jupyterhub-singleuser" in cmdline and cwd.startswith(homes + "/"):
            if user is None or Path(cwd).name == user:
                found.append(proc)
    return found


ZYGOTE_PROGRAM = "hpclab_hub.backends.local.zygote_main"


def start_path(proc: psutil.Process) -> str:
    """How a running server was started: "zygote" (forked by the backend's zygote), "spare" (a spare that became it,
    ``zygote: spare``) or "fresh"."""
    if ZYGOTE_PROGRAM in " ".join(psutil.Process(proc.ppid()).cmdline()):
        return "zygote"
    own = proc.cmdline()
    return "spare" if ZYGOTE_PROGRAM in " ".join(own) and "--once" in own else "fresh"


def assert_start_path(hub: Any, user: str) -> None:
    """The user's running servers came the way the hub's YAML says (zygote: true, spare or off): a zygote that failed
    would fall back to a fresh start and quietly leave a "with the zygote" test untested."""
    setting = hub.config["backends"]["local"].get("zygote")
    wanted = "spare" if setting == "spare" else "zygote" if setting else "fresh"
    servers = singleuser_processes(hub.config["hub"]["data_dir"], user)
    assert servers, f"no running server of {user}"
    for proc in servers:
        came = start_path(proc)
        assert came == wanted, f"{user}'s server pid {proc.pid} came {came}, the YAML says {wanted}"


class HubClient:
    """A logged-in browser-like session on the hub (cookies + xsrf), for form posts and the REST API."""

    def __init__(self, hub: Hub):
        self.hub = hub
        self.http = requests.Session()
        self.http.verify = hub.verify
        self.http.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment overrides verify

    def _xsrf(self, html: str) -> str:
        match = re.search(r'name="_xsrf"\s+value="([^"]+)"', html)
        return match.group(1) if match else self.hub_xsrf()

    def hub_xsrf(self) -> str:
        """The hub's xsrf cookie (the single-user server sets its own under /user/...)."""
        return self.http.cookies.get("_xsrf", "", path="/hub/")

    def login(self, username: str, password: str) -> requests.Response:
        page = self.http.get(f"{self.hub.url}/hub/login")
        return self.http.post(
            f"{self.hub.url}/hub/login",
            data={"username": username, "password": password, "_xsrf": self._xsrf(page.text)},
        )

    def spawn_form(self) -> str:
        return self.http.get(f"{self.hub.url}/hub/spawn").text

    def post_spawn(self, username: str, profile: str, server_name: str = "") -> requests.Response:
        """Post the spawn form directly (what a hand-crafted request would send), for a named server if given."""
        url = f"{self.hub.url}/hub/spawn/{username}" + (f"/{server_name}" if server_name else "")
        form = self.http.get(url)
        return self.http.post(
            url,
            data={"profile": profile, "_xsrf": self._xsrf(form.text)},
            allow_redirects=False,
        )

    def follow_spawn_link(self, path_and_query: str) -> requests.Response:
        """Open a spawn link (``/hub/spawn/...?opt-profile=...``) and press Start on the form it fills in, as a user would.

        The GET must only show the form (it starts nothing); the POST sends every field the browser would
        (the checked profile, each field's filled-in value) to the form's own action URL.
        """
        page = self.http.get(f"{self.hub.url}{path_and_query}", allow_redirects=False)
        assert page.status_code == 200 and 'id="hpclab-link-note"' in page.text, (page.status_code, page.text[:500])
        soup = BeautifulSoup(page.text, "html.parser")
        form = soup.find("form", id="spawn_form")
        fields: dict[str, str] = {}
        for element in form.find_all(["input", "select"]):
            name = element.get("name")
            if not name or element.has_attr("disabled"):
                continue
            if element.name == "select":
                chosen = element.find("option", selected=True) or element.find("option")
                fields[name] = chosen.get("value", "") if chosen else ""
            elif element.get("type") == "radio":
                if element.has_attr("checked"):
                    fields[name] = element.get("value", "")
            elif element.get("type") != "submit":
                fields[name] = element.get("value", "")
        return self.http.post(urljoin(page.url, form.get("action")), data=fields, allow_redirects=False)

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        headers["X-XSRFToken"] = self.hub_xsrf()
        return self.http.request(method, f"{self.hub.url}/hub/api{path}", headers=headers, **kwargs)

    def open_lab(self, server_url: str) -> requests.Response:
        """GET a server's lab (``server_url`` ends with /): the OAuth login to it, and where the hub asks whether a server
        not one's own may know who one is (a shared server), the answer yes, as a browser's click would give it."""
        page = self.http.get(server_url + "lab")
        if "/oauth2/authorize" in page.url and 'name="scopes"' in page.text:
            fields = re.findall(r'<input type="hidden" name="(_xsrf|scopes)" value="([^"]*)"', page.text)
            page = self.http.post(page.url, data=[(name, html.unescape(value)) for name, value in fields])
        return page

    def wait_ready(self, username: str, timeout: float = 90, server_name: str = "") -> dict[str, Any]:
        """Wait until the user's default (or named) server is ready; return its server model."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self.api("GET", f"/users/{username}").json().get("servers", {}).get(server_name)
            if server and server.get("ready"):
                return server
            time.sleep(0.5)
        raise TimeoutError(f"{username}'s server not ready after {timeout}s:\n{self.hub.log_tail()}")


def stop_server(client: HubClient, username: str, timeout: float = 60, server_name: str = "") -> None:
    """Stop a user's default (or named) server through the REST API and wait until the hub reports it gone."""
    client.api("DELETE", f"/users/{username}/server" + (f"s/{server_name}" if server_name else ""))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server_name not in client.api("GET", f"/users/{username}").json().get("servers", {}):
            return
        time.sleep(0.3)
    raise TimeoutError(f"{username}'s server did not stop within {timeout}s")


def server_process(data_dir: str, user: str) -> psutil.Process:
    """The single running jupyterhub-singleuser process of ``user`` (fails if none or several)."""
    procs = singleuser_processes(data_dir, user)
    assert len(procs) == 1, f"expected one server process for {user}, found {[p.pid for p in procs]}"
    return procs[0]


USER_PASSWORD = "user-test-password-9"


def add_account(hub: Hub, name: str, password: str = USER_PASSWORD) -> None:
    """Create an approved local account with ``hpclab-hub users add`` (what an admin runs)."""
    subprocess.run(
        [str(HUB_CLI), "users", "add", name, "--config", str(hub.config_path), "--password-stdin"],
        input=password + "\n", text=True, check=True, capture_output=True,
    )


@contextmanager
def started_hub(workdir: Path, config: dict, accounts: tuple[str, ...] = ("alice", "bob")) -> Iterator[Hub]:
    """Start a hub from ``config`` with these local accounts; stop it and any servers it left afterwards."""
    instance = Hub(workdir, config)
    for name in accounts:
        add_account(instance, name)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
        instance.kill_servers()


def login(hub: Hub, name: str) -> HubClient:
    """A logged-in client for ``name`` (admin uses the bootstrap password)."""
    client = HubClient(hub)
    response = client.login(name, ADMIN_PASSWORD if name == "admin" else USER_PASSWORD)
    assert response.ok and "/hub/login" not in response.url, f"login as {name} failed: {response.status_code}"
    return client
