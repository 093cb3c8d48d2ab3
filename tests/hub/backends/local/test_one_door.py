"""One door to the hub (issue 26, item 2), played as attacks against a real hub started as root.

alice works from her own kernel (code sent through the proxy, as JupyterLab would). The hub's own port, the
proxy's REST API and bob's server port must refuse her; everything she sends through the proxy is counted
at the address the proxy saw, whatever X-Forwarded-For she writes. Login guards: per name and address, per
address, and a short growing delay per name that spares addresses the name logged in from before; all of it
survives a hub restart.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests
from requests.adapters import HTTPAdapter

from hpclab_hub.backends.local.one_door import Door, _nft_json, sweep_stale_tables
from support.hubtools import USER_PASSWORD, HubClient, assert_start_path, hub_yaml, login, server_process, started_hub, stop_server
from support.kerneltools import run_in_kernel, server_environment

pytestmark = [pytest.mark.hub, pytest.mark.skipif(os.geteuid() != 0, reason="the firewall by account needs root")]

VICTIMS = ("alice", "bob", "carol", "dave", "frank")


@pytest.fixture(scope="module", params=["fresh", "zygote"])
def door_hub(request, tmp_path_factory):
    """Servers started fresh, then (the same tests again) forked from the backend's zygote (issue 32)."""
    workdir = tmp_path_factory.mktemp("one-door")
    config = hub_yaml(workdir / "state")
    config["backends"]["local"]["zygote"] = request.param == "zygote"
    config["profiles"] = [{"slug": "cpu-small", "display_name": "CPU small", "backend": "local", "cpus": 1, "memory": "512M", "default": True}]
    config["culling"] = {"enabled": True, "timeout": "01:00:00", "every": "00:10:00"}
    with started_hub(workdir, config, accounts=VICTIMS) as hub:
        yield hub
    from hpclab_hub.backends.local.one_door import sweep_stale_tables

    sweep_stale_tables()


@pytest.fixture(scope="module")
def running(door_hub):
    alice, bob = login(door_hub, "alice"), login(door_hub, "bob")
    for client, name in ((alice, "alice"), (bob, "bob")):
        assert client.post_spawn(name, "cpu-small").status_code == 302
    alice.wait_ready("alice")
    bob.wait_ready("bob")
    for name in ("alice", "bob"):
        assert_start_path(door_hub, name)
    yield alice, bob
    stop_server(alice, "alice")
    stop_server(bob, "bob")


def _data_dir(hub) -> str:
    return hub.config["hub"]["data_dir"]


def _listening_port(proc: psutil.Process) -> int:
    return next(c.laddr.port for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN)


class _FromAddress(HTTPAdapter):
    """Connections from one loopback address (127.0.0.x): a browser elsewhere, as the proxy sees it."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.source, 0)
        return super().init_poolmanager(*args, **kwargs)


def client_from(hub, source: str) -> HubClient:
    client = HubClient(hub)
    for scheme in ("http://", "https://"):
        client.http.mount(scheme, _FromAddress(source))
    return client


#: kernel code: POST the login (or sign-up) form at BASE, with a fresh X-Forwarded-For each time (and from a
#: chosen loopback source address when given); prints one word per try: REFUSED (no connection), LOCKED (429),
#: OK (logged in / signed up), FAILED (anything else)
_ATTEMPTS = r'''
import functools, http.client, http.cookiejar, re, socket, urllib.error, urllib.parse, urllib.request
class IPv4Connection(http.client.HTTPConnection):  # the host name's IPv4 address: the source is one
    def connect(self):
        address = (socket.gethostbyname(self.host), self.port)
        self.sock = socket.create_connection(address, self.timeout, self.source_address)
class FromSource(urllib.request.HTTPHandler):
    def __init__(self, source):
        super().__init__()
        self.source = source
    def http_open(self, req):
        return self.do_open(functools.partial(IPv4Connection, source_address=(self.source, 0)), req)
def attempt(base, path, form, forwarded, source=None):
    jar = http.cookiejar.CookieJar()
    handlers = [urllib.request.HTTPCookieProcessor(jar)] + ([FromSource(source)] if source else [])
    opener = urllib.request.build_opener(*handlers)
    headers = {"X-Forwarded-For": forwarded, "X-Real-Ip": forwarded}
    try:
        page = opener.open(urllib.request.Request(base + path, headers=headers), timeout=20).read().decode()
        token = re.search(r'name="_xsrf"\s+value="([^"]+)"', page)
        form = dict(form, _xsrf=token.group(1) if token else "")
        answer = opener.open(urllib.request.Request(base + path, data=urllib.parse.urlencode(form).encode(), headers=headers), timeout=20)
        text = answer.read().decode()
        if path.endswith("/login"):
            return "FAILED" if "/hub/login" in answer.url else "OK"
        return "OK" if "successfully" in text.lower() or "information" in text.lower() else "FAILED"
    except urllib.error.HTTPError as error:
        return "LOCKED" if error.code == 429 else "FAILED"
    except (urllib.error.URLError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        return "REFUSED" if isinstance(reason, ConnectionRefusedError) or "refused" in str(reason).lower() else f"ERROR:{reason}"
'''


def _kernel_attempts(client: HubClient, user: str, tries: list[tuple]) -> list[str]:
    """Run (base, path, form, forwarded[, source address]) tries in ``user``'s kernel; one word each."""
    loop = "for base, path, form, forwarded, *source in {!r}:\n    print(attempt(base, path, form, forwarded, *source))\n"
    code = _ATTEMPTS + "\n" + loop.format(tries)
    out, error = run_in_kernel(client, user, code, timeout=240)
    assert error == "", error
    return out.split()


def _direct(hub) -> str:
    return f"http://127.0.0.1:{hub.config['hub']['hub_port']}"


def _pending_signups(hub, prefix: str) -> list[str]:
    """The names waiting for approval that start with ``prefix`` (NativeAuthenticator's table)."""
    from jupyterhub import orm
    from nativeauthenticator.orm import UserInfo

    from hpclab_hub.config import load_deployment

    db = orm.new_session_factory(load_deployment(hub.config_path).hub.database_url)()
    try:
        return [info.username for info in db.query(UserInfo).all() if info.username.startswith(prefix)]
    finally:
        db.close()


def _signup_form(name: str) -> dict:
    password = "a-Long-signup-pw-42"
    return {"username": name, "signup_password": password, "signup_password_confirmation": password}


# --- what a kernel can reach -----------------------------------------------------------------------


def test_a_kernel_cannot_reach_the_hub_port_the_proxy_api_or_another_users_server(door_hub, running):
    alice, _ = running
    hub = door_hub.config["hub"]
    bob_port = _listening_port(server_process(_data_dir(door_hub), "bob"))
    alice_port = _listening_port(server_process(_data_dir(door_hub), "alice"))
    targets = {"hub": hub["hub_port"], "proxy-api": hub["proxy_api_port"], "bob-server": bob_port,
               "own-server": alice_port, "proxy": hub["port"]}
    out, error = run_in_kernel(alice, "alice", f"""
import socket
for name, port in {sorted(targets.items())!r}:
    for host in ('127.0.0.1', '::1'):
        try:
            socket.create_connection((host, port), timeout=5).close(); print(name, host, 'OPEN')
        except ConnectionRefusedError:
            print(name, host, 'REFUSED')
        except OSError as other:
            print(name, host, 'NONE', other.errno)
""")
    assert error == ""
    seen = {(name, host): word for name, host, word, *_ in (line.split() for line in out.splitlines())}
    for name in ("hub", "proxy-api", "bob-server"):
        assert seen[(name, "127.0.0.1")] == "REFUSED", out
        assert seen[(name, "::1")] in ("REFUSED", "NONE"), out  # nothing listens there, or refused
    assert seen[("proxy", "127.0.0.1")] == "OPEN" and seen[("own-server", "127.0.0.1")] == "OPEN", out
    # the hub itself (root) still reaches bob's server: it answers through the proxy
    assert requests.get(f"http://127.0.0.1:{bob_port}/user/bob/api", timeout=10).status_code < 500


def test_servers_reach_the_hub_api_through_the_proxy_and_the_culler_still_works(door_hub, running):
    alice, _ = running
    env = server_environment(alice, "alice")  # as its kernels see it (a zygote-forked server's /proc environ is the zygote's)
    assert env["JUPYTERHUB_API_URL"].startswith(f"http://127.0.0.1:{door_hub.config['hub']['port']}/"), env["JUPYTERHUB_API_URL"]
    assert f":{door_hub.config['hub']['hub_port']}/" not in env["JUPYTERHUB_API_URL"]
    # the server checks a browser's login with the hub API (OAuth) through the proxy: JupyterLab opens
    assert alice.http.get(f"{door_hub.url}/user/alice/lab").status_code == 200
    # the idle culler (the hub's own account) still lists users on the hub's port, and nothing failed to connect
    culler = [p for p in psutil.Process(door_hub.proc.pid).children() if "jupyterhub_idle_culler" in " ".join(p.cmdline())]
    assert culler and culler[0].is_running()
    assert "Failed to connect to Hub API" not in door_hub.log_path.read_text()


# --- guessing and locking out ----------------------------------------------------------------------


def test_25_guesses_with_fresh_forwarded_headers_are_refused_at_the_hub_port_and_stopped_at_the_proxy(door_hub, running):
    alice, _ = running
    form = {"username": "carol", "password": "wrong-guess"}
    tries = [(_direct(door_hub), "/hub/login", form, f"198.51.100.{i}") for i in range(25)]
    tries += [(door_hub.url, "/hub/login", form, f"198.51.100.{i}") for i in range(25)]
    tries.append((door_hub.url, "/hub/login", {"username": "carol", "password": USER_PASSWORD}, "198.51.100.99"))
    words = _kernel_attempts(alice, "alice", tries)
    direct, proxied, right = words[:25], words[25:50], words[50]
    assert direct == ["REFUSED"] * 25, direct
    assert proxied[:5] == ["FAILED"] * 5 and proxied[5:] == ["LOCKED"] * 20, proxied
    assert right == "LOCKED"  # the right password, too late: the guesser learns nothing


def test_five_forged_failures_with_bobs_address_do_not_lock_bob_out(door_hub, running):
    alice, _ = running
    bob_address = "127.0.0.2"  # where bob's browser is, as the proxy reports it
    form = {"username": "bob", "password": "wrong-on-purpose"}
    tries = [(base, "/hub/login", form, bob_address) for base in (_direct(door_hub), door_hub.url) for _ in range(5)]
    words = _kernel_attempts(alice, "alice", tries)
    assert words[:5] == ["REFUSED"] * 5 and words[5:] == ["FAILED"] * 5, words
    answer = client_from(door_hub, bob_address).login("bob", USER_PASSWORD)
    assert answer.status_code == 200 and "/hub/login" not in answer.url, answer.status_code


def test_signups_with_rotating_headers_are_limited_whichever_way_they_come(door_hub, running):
    alice, _ = running
    tries = [(_direct(door_hub), "/hub/signup", _signup_form(f"rot{i}"), f"203.0.113.{i}") for i in range(12)]
    tries += [(door_hub.url, "/hub/signup", _signup_form(f"rotp{i}"), f"203.0.113.{i}") for i in range(12)]
    words = _kernel_attempts(alice, "alice", tries)
    assert words[:12] == ["REFUSED"] * 12, words
    assert words[12:].count("LOCKED") >= 7 and "REFUSED" not in words[12:], words[12:]
    pending = _pending_signups(door_hub, "rot")
    assert len(pending) <= 5, pending


def test_a_kernel_cannot_choose_another_loopback_source_address_not_even_nginxs(door_hub, running):
    """Any of 127.0.0.0/8 can be bound without privileges: each would count as a new client of the lockout and the
    sign-up limit, and 127.0.0.2 is where nginx comes from (docs/admin-guide.md). A user's account may use 127.0.0.1
    (and ::1) only."""
    alice, _ = running
    proxy = door_hub.config["hub"]["port"]
    out, error = run_in_kernel(alice, "alice", f"""
import socket
for source in ('127.0.0.1', '127.0.0.2', '127.0.0.5', '127.3.4.5'):
    connection = socket.socket()
    connection.settimeout(5)
    connection.bind((source, 0))  # allowed: the door acts on the packets
    try:
        connection.connect(('127.0.0.1', {proxy})); print(source, 'OPEN')
    except ConnectionRefusedError:
        print(source, 'REFUSED')
    except OSError as other:
        print(source, 'FAILED', other)
    finally:
        connection.close()
""")
    assert error == "", error
    seen = dict(line.split()[:2] for line in out.splitlines())
    assert seen == {"127.0.0.1": "OPEN", "127.0.0.2": "REFUSED", "127.0.0.5": "REFUSED", "127.3.4.5": "REFUSED"}, out


def test_signups_from_a_kernel_over_rotating_source_addresses_are_limited(door_hub, running):
    """Twelve sign-ups, each from a fresh 127.0.0.x through the proxy: none gets through as a new address."""
    alice, _ = running
    tries = [(door_hub.url, "/hub/signup", _signup_form(f"srcrot{i}"), f"192.0.2.{i}", f"127.0.0.{100 + i}") for i in range(12)]
    words = _kernel_attempts(alice, "alice", tries)
    assert words == ["REFUSED"] * 12, words
    assert _pending_signups(door_hub, "srcrot") == []


def test_guessing_one_name_from_many_addresses_waits_but_its_owner_gets_in(door_hub):
    known = client_from(door_hub, "127.0.0.9")
    assert "/hub/login" not in known.login("dave", USER_PASSWORD).url  # dave's usual address
    answers = []
    for i in range(10, 24):  # one wrong guess from each of many addresses: no pair or address lock applies
        answers.append(client_from(door_hub, f"127.0.0.{i}").login("dave", "wrong-guess"))
        if answers[-1].status_code == 429:
            break
    assert answers[-1].status_code == 429 and "for this name" in answers[-1].text, [a.status_code for a in answers]
    assert len(answers) <= 12  # ten free failures, then each further one waits
    wait = int(re.search(r"Try again in (\d+) second", answers[-1].text).group(1))
    assert wait <= 60  # short: a stranger can cause it
    assert client_from(door_hub, "127.0.0.30").login("dave", USER_PASSWORD).status_code == 429  # a new address waits too
    answer = client_from(door_hub, "127.0.0.9").login("dave", USER_PASSWORD)  # ... but dave, where he logs in, does not
    assert answer.status_code == 200 and "/hub/login" not in answer.url


def test_locks_survive_a_hub_restart_in_a_private_file(door_hub):
    guesser = client_from(door_hub, "127.0.0.40")
    for _ in range(5):
        assert "/hub/login" in guesser.login("frank", "wrong-guess").url
    assert guesser.login("frank", USER_PASSWORD).status_code == 429
    state = Path(_data_dir(door_hub)) / "login-guard.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert any(key.startswith("user:frank@127.0.0.40") for key in json.loads(state.read_text())["locked_until"])
    door_hub.stop()
    door_hub.start()
    assert client_from(door_hub, "127.0.0.40").login("frank", USER_PASSWORD).status_code == 429
    answer = client_from(door_hub, "127.0.0.41").login("frank", USER_PASSWORD)  # frank elsewhere is not locked
    assert answer.status_code == 200 and "/hub/login" not in answer.url


@pytest.mark.skipif(os.geteuid() != 0, reason="nftables rules need root")
def test_a_hub_still_starting_keeps_its_table_when_another_hub_sweeps_and_a_gone_hubs_table_goes():
    """Each hub sweeps the tables of hubs that are gone when it starts: never one whose hub is alive but not yet listening."""
    def tables() -> set[str]:
        return {entry["table"]["name"] for entry in _nft_json("list", "tables") if "table" in entry}

    starting = Door(hub_port=1, proxy_api_port=2, hub_uid=0)  # port 1: nothing listens there; this process is alive
    script = "from hpclab_hub.backends.local.one_door import Door; Door(hub_port=3, proxy_api_port=4, hub_uid=0).install()"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)  # a hub that installed its table and ended
    starting.install()
    try:
        assert {starting.table, "hpclab_door_3"} <= tables()
        swept = sweep_stale_tables()
        assert "hpclab_door_3" in swept and "hpclab_door_3" not in tables()
        assert starting.table in tables() and starting.table not in swept
    finally:
        starting.remove()
        Door(hub_port=3, proxy_api_port=4, hub_uid=0).remove()
