"""Servers forked from a local backend's zygote (backends.<name>.zygote): each is its own user's, and nothing else's.

A real hub as root, real accounts, real cgroups: alice's and bob's servers come from one zygote, and
bob's carries nothing of alice's start (environment, open files, folder, account, groups, cgroup).
tests/hub/backends/local/test_isolation.py runs the whole isolation suite with the zygote on as well.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from support.hubtools import assert_start_path, hub_yaml, login, server_process, started_hub, stop_server, write_in_home
from support.kerneltools import run_in_kernel
from support.slurmtools import wait_for

pytestmark = pytest.mark.hub


@pytest.fixture(scope="module")
def zygote_hub(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("zygote")
    config = hub_yaml(workdir / "state")
    config["backends"]["local"]["zygote"] = True
    with started_hub(workdir, config) as hub:
        yield hub


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def _open_files(pid: int) -> dict[int, str]:
    folder = Path(f"/proc/{pid}/fd")
    return {int(fd.name): os.readlink(fd) for fd in folder.iterdir()}


def test_the_zygote_starts_with_the_hub_not_at_the_first_start(zygote_hub):
    """Its imports (a second or two) are done before anyone clicks Start: no first start pays for them."""
    hub = psutil.Process(zygote_hub.proc.pid)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        zygotes = [p for p in hub.children(recursive=True) if "hpclab_hub.backends.local.zygote_main" in " ".join(p.cmdline())]
        if zygotes:
            break
        time.sleep(0.2)
    assert zygotes, "no zygote runs beside the hub before any start"


def _start_one_after_the_other(hub, alice, bob) -> dict[str, psutil.Process]:
    """alice's cpu-small server, then bob's, each ready before the next start; their processes by name."""
    for client, name in ((alice, "alice"), (bob, "bob")):
        assert client.post_spawn(name, "cpu-small").status_code == 302
        client.wait_ready(name)
    return {name: server_process(hub.config["hub"]["data_dir"], name) for name in ("alice", "bob")}


def test_two_users_servers_come_from_one_zygote_and_bobs_carries_nothing_of_alices(zygote_hub):
    alice, bob = login(zygote_hub, "alice"), login(zygote_hub, "bob")
    data_dir = zygote_hub.config["hub"]["data_dir"]
    try:
        servers = _start_one_after_the_other(zygote_hub, alice, bob)
        zygotes = {psutil.Process(proc.ppid()) for proc in servers.values()}
        assert len(zygotes) == 1, "both servers forked by one zygote"
        zygote = zygotes.pop()
        assert "hpclab_hub.backends.local.zygote_main" in " ".join(zygote.cmdline()) and zygote.uids().real == 0
        alice_proc, bob_proc = servers["alice"], servers["bob"]
        # the account, its groups and its home: bob's own, as a fresh start would make them
        for name, proc in servers.items():
            account = f"jupyter-{name}" if proc.username().startswith("jupyter-") else name
            assert proc.username() == account and proc.uids().real != 0 and proc.uids().effective != 0
            assert proc.cwd().endswith(f"/{name}")
            assert proc.name() == proc.username()[:15]  # what `ps -o comm` and top show: the account
        assert set(bob_proc.gids()) != {0} and alice_proc.uids().real != bob_proc.uids().real
        assert all(_ignores_sigpipe(proc.pid) for proc in servers.values())  # as a fresh Python: EPIPE, not death
        # the environment is the server's alone: bob's token and user, nothing of alice's, nothing of the hub's. A fork
        # does not exec: the child points /proc/<pid>/environ at its new environment (shown_environ.py), so what ps and
        # an admin see is what the server and its kernels use, not the zygote's
        for name, proc in servers.items():
            shown = _environ(proc.pid)
            assert shown["JUPYTERHUB_USER"] == name and shown["HOME"].endswith(f"/{name}"), shown
        assert _environ(bob_proc.pid)["JUPYTERHUB_API_TOKEN"] != _environ(alice_proc.pid)["JUPYTERHUB_API_TOKEN"]
        probe = "import json, os; print(json.dumps(dict(os.environ)))"
        alice_env = json.loads(run_in_kernel(alice, "alice", probe)[0])
        bob_env = json.loads(run_in_kernel(bob, "bob", probe)[0])
        assert bob_env["JUPYTERHUB_USER"] == "bob" and alice_env["JUPYTERHUB_USER"] == "alice"
        assert bob_env["JUPYTERHUB_API_TOKEN"] != alice_env["JUPYTERHUB_API_TOKEN"]
        assert alice_env["JUPYTERHUB_API_TOKEN"] not in json.dumps(bob_env)
        assert not any("alice" in value for value in bob_env.values()), bob_env
        assert "HPCLAB_CONFIG" not in bob_env and bob_env["HOME"].endswith("/bob")
        # open files: stdin from /dev/null; nothing of alice's, of the hub's state, or the zygote's socket to the hub
        files = _open_files(bob_proc.pid)
        assert files[0] == "/dev/null"
        zygote_sockets = {os.readlink(fd) for fd in Path(f"/proc/{zygote.pid}/fd").iterdir()
                          if os.readlink(fd).startswith("socket:")}
        for target in files.values():
            assert "/alice" not in target and not target.startswith(str(data_dir)), files
            assert target not in zygote_sockets, f"bob's server holds the zygote's socket {target}"
        # each in its own cgroup, as a fresh start's
        alice_groups, bob_groups = (Path(f"/proc/{p.pid}/cgroup").read_text() for p in (alice_proc, bob_proc))
        assert alice_groups != bob_groups and "bob" in bob_groups and "alice" not in bob_groups
        # the server serves: a kernel runs as bob, in his home, in his cores
        out, _ = run_in_kernel(bob, "bob", "import os; print(os.getuid(), os.getcwd(), sorted(os.sched_getaffinity(0)))")
        uid, cwd, cores = out.split(" ", 2)
        assert int(uid) == bob_proc.uids().real and cwd.endswith("/bob")
        assert cores.strip() == str(sorted(bob_proc.cpu_affinity()))
    finally:
        stop_server(alice, "alice")
        stop_server(bob, "bob")


def test_a_server_that_dies_at_start_is_reported_and_the_next_start_works(zygote_hub):
    """A child of the zygote that exits during start-up fails that start at once; the zygote stays for the next."""
    alice = login(zygote_hub, "alice")
    data_dir = zygote_hub.config["hub"]["data_dir"]
    # the user's own config ends the server before it listens
    config = write_in_home(data_dir, "alice", ".jupyter/jupyter_server_config.py", "raise SystemExit(3)\n")
    try:
        response = alice.api("POST", "/users/alice/server", json={"profile": "cpu-small"})
        if response.status_code == 500:  # found out within JupyterHub's slow-spawn wait (10 s): said at once
            message = response.json()["message"]
        else:  # a slower machine: the progress stream says it
            assert response.status_code == 202, response.text
            events = []
            with alice.api("GET", "/users/alice/server/progress", stream=True, timeout=120) as stream:
                for line in stream.iter_lines(decode_unicode=True):
                    if line and line.startswith("data:"):
                        events.append(json.loads(line[5:]))
                        if events[-1].get("ready") or events[-1].get("failed"):
                            break
            assert events and events[-1].get("failed"), events
            message = events[-1]["message"]
        assert "JupyterLab exited during start-up" in message, message
    finally:
        config.unlink()
    assert alice.post_spawn("alice", "cpu-small").status_code == 302
    try:
        alice.wait_ready("alice")
    finally:
        stop_server(alice, "alice")


def test_a_start_ready_within_a_second_goes_straight_to_the_lab_else_to_the_progress_page(zygote_hub):
    """The form's POST answers after at most about a second (as JupyterHub's): with the server ready by then it sends
    the browser to the server itself, skipping the progress page (issue 32); otherwise to the progress page."""
    alice = login(zygote_hub, "alice")
    straight = 0
    try:
        for _ in range(3):  # the zygote is warm after the first: a start takes well under a second on a quiet machine
            response = alice.post_spawn("alice", "cpu-small")
            location = response.headers["Location"]
            ready = alice.api("GET", "/users/alice").json()["servers"].get("", {}).get("ready", False)
            assert response.status_code == 302
            if "/hub/spawn-pending/alice" in location:
                assert alice.wait_ready("alice")["ready"]
            else:
                assert location.rstrip("/").endswith("/user/alice") and ready, (location, ready)
                assert alice.http.get(location).status_code == 200  # the lab, through the user's OAuth round trip
                straight += 1
            stop_server(alice, "alice")
        assert straight >= 1, "no start went straight to the lab, though a zygote start takes about 0.5 s"
    finally:
        stop_server(alice, "alice")


def test_a_forked_servers_jupyterlab_keeps_settings_and_workspaces_in_its_users_home(zygote_hub):
    """JupyterLab computes its settings and workspaces folders from $HOME when imported, i.e. in the zygote (root's
    home): a child must use its own user's, or every settings change and layout save fails (HTTP 500)."""
    alice = login(zygote_hub, "alice")
    try:
        assert alice.post_spawn("alice", "cpu-small").status_code == 302
        alice.wait_ready("alice")
        token = alice.api("POST", "/users/alice/tokens", json={"note": "settings"}).json()["token"]
        base, headers = zygote_hub.user_url("alice") + "lab/api/", {"Authorization": f"token {token}"}
        plugin = "@jupyterlab/apputils-extension:themes"
        saved = alice.http.put(base + f"settings/{plugin}", headers=headers, json={"raw": '{"theme": "JupyterLab Dark"}'})
        assert saved.status_code == 204, saved.text[:300]
        workspace = alice.http.put(base + "workspaces/mine", headers=headers,
                                   json={"data": {}, "metadata": {"id": "mine"}})
        assert workspace.status_code == 204, workspace.text[:300]
        home = Path(server_process(zygote_hub.config["hub"]["data_dir"], "alice").cwd())
        assert (home / ".jupyter/lab/user-settings/@jupyterlab/apputils-extension/themes.jupyterlab-settings").is_file()
        assert list((home / ".jupyter/lab/workspaces").rglob("mine*")), "the workspace is not in alice's home"
    finally:
        stop_server(alice, "alice")


def _zygote_of(hub_pid: int) -> psutil.Process:
    zygotes = [child for child in psutil.Process(hub_pid).children() if "zygote_main" in " ".join(child.cmdline())]
    assert len(zygotes) == 1, zygotes
    return zygotes[0]


def test_a_zygote_that_does_not_answer_costs_a_normal_start_and_is_replaced(zygote_hub):
    """A zygote that does not answer (stopped here) fails no start: after its wait (10 s) the server starts the normal
    way, a fresh process of the hub's, and the hub log says why; the next start comes from a new zygote."""
    data_dir = zygote_hub.config["hub"]["data_dir"]
    hub_pid = zygote_hub.proc.pid
    stuck = _zygote_of(hub_pid)
    alice = login(zygote_hub, "alice")
    os.kill(stuck.pid, signal.SIGSTOP)
    try:
        assert alice.post_spawn("alice", "cpu-small").status_code == 302
        alice.wait_ready("alice")
        fresh = server_process(data_dir, "alice")
        assert fresh.ppid() == hub_pid and "zygote_main" not in " ".join(fresh.cmdline()), fresh.cmdline()
        assert "starting without the zygote: the zygote did not answer" in zygote_hub.log_tail(400)
        stop_server(alice, "alice")
    finally:
        os.kill(stuck.pid, signal.SIGCONT)  # it was told to end when it did not answer: now it can
    assert alice.post_spawn("alice", "cpu-small").status_code == 302
    try:
        alice.wait_ready("alice")
        forked = server_process(data_dir, "alice")
        parent = psutil.Process(forked.ppid())
        assert "zygote_main" in " ".join(parent.cmdline()) and parent.pid != stuck.pid
    finally:
        stop_server(alice, "alice")


@pytest.fixture(scope="module")
def spare_hub(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("spare")
    config = hub_yaml(workdir / "state")
    config["backends"]["local"]["zygote"] = "spare"
    with started_hub(workdir, config) as hub:
        yield hub


def _waiting_spares(hub_pid: int) -> list[psutil.Process]:
    """The hub's spares not yet anyone's server (still root)."""
    return [child for child in psutil.Process(hub_pid).children()
            if "--once" in child.cmdline() and child.uids().real == 0]


def _ignores_sigpipe(pid: int) -> bool:
    """Whether ``pid`` ignores SIGPIPE, as every Python started afresh does (else a write to a connection the peer
    closed ends the process without a word)."""
    ignored = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("SigIgn:"))
    return bool(int(ignored.split()[1], 16) & (1 << (signal.SIGPIPE - 1)))


def _libc_at(pid: int) -> str:
    """Where the C library is mapped in ``pid``: the same in every child of one fork, new at every exec (ASLR)."""
    return next(line.split("-")[0] for line in Path(f"/proc/{pid}/maps").read_text().splitlines() if "libc.so" in line)


def test_spares_each_become_one_server_and_share_nothing_a_fork_would_copy(spare_hub):
    """zygote: spare: the waiting spare becomes alice's server itself and another is started for the next start, so
    alice's and bob's servers are each the hub's own child with a layout of its own (as after two execs), each with
    its own environment in /proc; stopped, each is waited for like a fresh start's (no zombie left)."""
    hub_pid = spare_hub.proc.pid
    wait_for(lambda: len(_waiting_spares(hub_pid)) == 1, 60, "no spare waiting after the hub's start")
    first = _waiting_spares(hub_pid)[0].pid
    alice, bob = login(spare_hub, "alice"), login(spare_hub, "bob")
    try:
        servers = _start_one_after_the_other(spare_hub, alice, bob)
        for name, proc in servers.items():
            assert_start_path(spare_hub, name)
            assert proc.ppid() == hub_pid and proc.uids().real != 0
            assert proc.username() in (name, f"jupyter-{name}")
            assert _environ(proc.pid)["JUPYTERHUB_USER"] == name
        assert servers["alice"].pid == first  # the spare that waited became alice's server
        assert all(_ignores_sigpipe(proc.pid) for proc in servers.values())  # as a fresh Python: EPIPE, not death
        assert _libc_at(servers["alice"].pid) != _libc_at(servers["bob"].pid)
        wait_for(lambda: len(_waiting_spares(hub_pid)) == 1, 60, "no new spare after the starts")
        assert _waiting_spares(hub_pid)[0].pid not in {proc.pid for proc in servers.values()}
        out, _ = run_in_kernel(bob, "bob", "import os; print(os.getcwd())")
        assert out.strip().endswith("/bob")
    finally:
        stop_server(alice, "alice")
        stop_server(bob, "bob")
    for proc in servers.values():
        wait_for(lambda proc=proc: not psutil.pid_exists(proc.pid), 30, f"server {proc.pid} left behind (a zombie?)")
