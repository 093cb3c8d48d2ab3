"""The hub behind Debian's nginx with TLS (issue 29, item 3): deploy/nginx/hpclab.conf as shipped.

A real hub (root: servers under the users' own accounts) and a real nginx, started as a process of its own with
its configuration and temporary folders in the test's folder (not the system's service), with a self-signed
certificate for hpclab.localhost and *.hpclab.localhost made here with openssl. Through nginx over TLS: the
login works and every cookie is Secure, a kernel runs a cell over its websocket at the user's own host name,
and the login lockout counts the address nginx saw: never one written into X-Forwarded-For by the client,
whether it goes through nginx or straight to the hub's proxy.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter

from support.hubtools import (
    TEST_PUBLIC_HOST,
    Hub,
    HubClient,
    add_account,
    free_port,
    hub_yaml,
    login,
    make_reachable,
    stop_server,
)
from support.kerneltools import run_in_kernel
from support.paths import REPO_ROOT

pytestmark = [
    pytest.mark.hub,
    pytest.mark.skipif(shutil.which("nginx", path="/usr/sbin:/usr/bin") is None, reason="nginx missing: make system-packages"),
]

EXAMPLE = REPO_ROOT / "deploy" / "nginx" / "hpclab.conf"
NGINX_ACCOUNT = "www-data"
WRONG = "not-the-password-1"


def _site_config(hub_port: int, tls_port: int, http_port: int, cert: Path, key: Path) -> str:
    """The example with this test's names, ports and certificate (each replaced where the example has it)."""
    text = EXAMPLE.read_text()
    for old, new in (("hub.example.org", TEST_PUBLIC_HOST), ("/etc/hpclab/tls/hub-wildcard.crt", str(cert)),
                     ("/etc/hpclab/tls/hub-wildcard.key", str(key)), ("127.0.0.1:8000", f"127.0.0.1:{hub_port}"),
                     ("listen 443 ssl;", f"listen 127.0.0.1:{tls_port} ssl;"), ("listen 80;", f"listen 127.0.0.1:{http_port};"),
                     ("listen [::]:443 ssl;\n", ""), ("listen [::]:80;\n", "")):
        assert old in text, f"{old} is no longer in {EXAMPLE}"
        text = text.replace(old, new)
    return text


def _self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "hub.crt", folder / "hub.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={TEST_PUBLIC_HOST}",
         "-addext", f"subjectAltName=DNS:{TEST_PUBLIC_HOST},DNS:*.{TEST_PUBLIC_HOST}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


class NginxHub(Hub):
    """A test hub whose users come through nginx: its URL is nginx's, its certificate the test's."""

    tls_port: int = 0
    http_port: int = 0
    cert: str = ""

    @property
    def url(self) -> str:
        return f"https://{TEST_PUBLIC_HOST}:{self.tls_port}"

    @property
    def verify(self) -> str | bool:
        return self.cert

    @property
    def direct_url(self) -> str:
        """The hub's own proxy (configurable-http-proxy), past nginx."""
        return f"http://{TEST_PUBLIC_HOST}:{self.config['hub']['port']}"


class FromAddress(HTTPAdapter):
    """Connections from one loopback address (as if the client were another machine)."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def _client_from(hub: NginxHub, address: str) -> HubClient:
    client = HubClient(hub)
    for prefix in ("https://", "http://"):
        client.http.mount(prefix, FromAddress(address))
    return client


def _try_login(hub: NginxHub, address: str, name: str, password: str, forged: str, direct: bool = False) -> requests.Response:
    """A login from ``address`` with a forged X-Forwarded-For, through nginx or straight to the hub's proxy."""
    client = _client_from(hub, address)
    base = hub.direct_url if direct else hub.url
    page = client.http.get(f"{base}/hub/login", headers={"X-Forwarded-For": forged})
    return client.http.post(f"{base}/hub/login", headers={"X-Forwarded-For": forged}, allow_redirects=False,
                            data={"username": name, "password": password, "_xsrf": client._xsrf(page.text)})


def _counted(hub: NginxHub) -> set[str]:
    """The addresses the login lockout has counted failures for."""
    events = json.loads((Path(hub.config["hub"]["data_dir"]) / "login-guard.json").read_text())["events"]
    return {key.removeprefix("login:addr:") for key in events if key.startswith("login:addr:")}


@pytest.fixture(scope="module")
def nginx_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxHub]:
    workdir = tmp_path_factory.mktemp("nginx-hub")
    make_reachable(workdir / "x")
    tls = workdir / "tls"
    tls.mkdir()
    cert, key = _self_signed(tls)
    config = hub_yaml(workdir / "state")
    tls_port, http_port = free_port(), free_port()
    config["hub"]["tls_proxy"] = {"port": tls_port, "trusted_addresses": ["127.0.0.2"]}
    config["auth"]["lockout"] = {"attempts": 3}
    # nginx: its own prefix, configuration, pid and temporary folders; workers as Debian's www-data
    prefix = workdir / "nginx"
    for folder in ("logs", "tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
        (prefix / folder).mkdir(parents=True)
    shutil.chown(prefix / "tmp", NGINX_ACCOUNT)
    for folder in (prefix / "tmp").iterdir():
        shutil.chown(folder, NGINX_ACCOUNT)
    (prefix / "hpclab.conf").write_text(_site_config(config["hub"]["port"], tls_port, http_port, cert, key))
    temp = prefix / "tmp"
    (prefix / "nginx.conf").write_text(
        f"user {NGINX_ACCOUNT};\nworker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log;\n"
        "daemon off;\nevents { worker_connections 256; }\n"
        f"http {{\n  access_log {prefix}/logs/access.log;\n  client_body_temp_path {temp}/body;\n"
        f"  proxy_temp_path {temp}/proxy;\n  fastcgi_temp_path {temp}/fastcgi;\n  uwsgi_temp_path {temp}/uwsgi;\n"
        f"  scgi_temp_path {temp}/scgi;\n  include {prefix}/hpclab.conf;\n}}\n"
    )
    checked = subprocess.run(["nginx", "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    nginx = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf")], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=open(prefix / "logs" / "stderr.log", "w"))
    instance = NginxHub(workdir / "hub", config)
    instance.tls_port, instance.cert, instance.http_port = tls_port, str(cert), http_port
    try:
        for name in ("alice", "bob"):
            add_account(instance, name)
        instance.start()  # answers through nginx once it is up
        yield instance
    finally:
        instance.stop()
        instance.kill_servers()
        os.killpg(nginx.pid, signal.SIGQUIT)
        nginx.wait(20)


def test_login_through_nginx_sets_only_secure_cookies_and_a_kernel_runs_over_its_websocket(nginx_hub):
    started = time.monotonic()
    alice = login(nginx_hub, "alice")
    try:
        assert alice.post_spawn("alice", "cpu-small").status_code == 302
        alice.wait_ready("alice")
        lab = alice.http.get(nginx_hub.user_url("alice") + "lab")  # alice's own host name, through nginx
        assert lab.status_code == 200 and "JupyterLab" in lab.text
        assert lab.url.startswith(f"https://alice.{TEST_PUBLIC_HOST}:{nginx_hub.tls_port}/user/alice/")
        cookies = list(alice.http.cookies)
        assert {"jupyterhub-session-id", "jupyterhub-hub-login", "jupyterhub-user-alice"} <= {c.name for c in cookies}
        assert [(c.name, c.domain, c.path) for c in cookies if not c.secure] == [], "a cookie without Secure behind TLS"
        out, error = run_in_kernel(alice, "alice", "print(6 * 7)")  # wss:// through nginx to the kernel
        assert (out.strip(), error) == ("42", "")
    finally:
        stop_server(alice, "alice")
    print(f"login, spawn, lab, a cell through nginx: {time.monotonic() - started:.1f} s")


def test_plain_http_is_redirected_to_https(nginx_hub):
    answer = requests.get(f"http://{TEST_PUBLIC_HOST}:{nginx_hub.http_port}/hub/login", allow_redirects=False, timeout=10)
    assert answer.status_code == 301
    assert answer.headers["Location"] == f"https://{TEST_PUBLIC_HOST}/hub/login"


def test_the_lockout_counts_the_address_nginx_saw_never_a_forged_one(nginx_hub):
    # three wrong passwords for bob from 127.0.0.3, each claiming another address: the lock falls on 127.0.0.3
    for forged in ("203.0.113.1", "203.0.113.2", "127.0.0.1, 127.0.0.2"):
        assert _try_login(nginx_hub, "127.0.0.3", "bob", WRONG, forged).status_code == 403
    counted = _counted(nginx_hub)
    assert "127.0.0.3" in counted and not counted & {"203.0.113.1", "203.0.113.2", "127.0.0.2", "127.0.0.1"}, counted
    locked = _try_login(nginx_hub, "127.0.0.3", "bob", "user-test-password-9", "198.51.100.7")
    assert locked.status_code == 429, "bob's right password from the locked address must wait"
    # bob from another address, through the same nginx, is not locked: nginx's own address was never counted
    assert _try_login(nginx_hub, "127.0.0.5", "bob", "user-test-password-9", "127.0.0.3").status_code == 302

    # straight to the hub's proxy, past nginx, with a forged header: the address the hub's proxy saw counts
    for _ in range(3):
        assert _try_login(nginx_hub, "127.0.0.6", "alice", WRONG, "127.0.0.7", direct=True).status_code == 403
    counted = _counted(nginx_hub)
    assert "127.0.0.6" in counted and "127.0.0.7" not in counted, counted
    # the forged address is not locked: alice logs in from it through nginx
    assert _try_login(nginx_hub, "127.0.0.7", "alice", "user-test-password-9", "").status_code == 302
