"""Security model of the local backend, played as attacks against a real hub started as root (issue 12).

Each test is one row of the threat table in docs/admin-guide.md ("Security model"): alice, an approved
user, works from her own kernel (code sent through the hub's proxy, as JupyterLab would); a stranger
uses the sign-up and login pages. Every attack must be refused.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, unquote

import psutil
import pytest
import requests

from support.hubtools import (
    ADMIN_PASSWORD, USER_PASSWORD, HubClient, assert_start_path, home_of, hub_yaml, login, server_process,
    started_hub, stop_server,
)
from support.kerneltools import run_in_kernel, server_environment
from support.paths import REPO_ROOT as REPO


pytestmark = [pytest.mark.hub, pytest.mark.skipif(os.geteuid() != 0, reason="isolation switches accounts: the hub must run as root")]

MEMORY_LIMIT = 512 * 2**20
GPU_MAJOR = 195  # NVIDIA's character major; no driver here, so an allowed open fails with ENXIO, a denied one with EPERM


@pytest.fixture(scope="module")
def fake_gpus(tmp_path_factory) -> dict[str, str]:
    """Fake GPU device nodes (this machine has no GPU): two character devices with NVIDIA's major number."""
    folder = tmp_path_factory.mktemp("dev")
    folder.chmod(0o755)
    nodes = {}
    for minor in (0, 1):
        node = folder / f"nvidia{minor}"
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(GPU_MAJOR, minor))
        node.chmod(0o666)
        nodes[f"g{minor}"] = str(node)
    return nodes


@pytest.fixture(scope="module", params=["fresh", "zygote", "spare"])
def secure_hub(request, tmp_path_factory, fake_gpus):
    """The hub every isolation test attacks: servers started fresh, then (the same tests again) forked from a zygote,
    then from spares (zygote: spare)."""
    workdir = tmp_path_factory.mktemp("isolation")
    config = hub_yaml(workdir / "state")
    config["backends"]["local"].update({"gpus": list(fake_gpus), "gpu_devices": fake_gpus, "poll_interval": 2,
                                        "zygote": {"fresh": False, "zygote": True, "spare": "spare"}[request.param]})
    config["profiles"] = [
        {"slug": "cpu-small", "display_name": "CPU small", "backend": "local", "cpus": 1, "memory": "512M", "default": True},
        {"slug": "gpu-1", "display_name": "GPU one", "backend": "local", "cpus": 1, "memory": "2G", "gpus": 1, "groups": ["gpu-users"]},
    ]
    config["culling"] = {"enabled": True, "timeout": "01:00:00", "every": "00:10:00"}
    with started_hub(workdir, config, accounts=("alice", "bob", "dave")) as hub:
        yield hub


@pytest.fixture(scope="module")
def running(secure_hub):
    """alice and bob each have a cpu-small server."""
    alice, bob = login(secure_hub, "alice"), login(secure_hub, "bob")
    for client, name in ((alice, "alice"), (bob, "bob")):
        assert client.post_spawn(name, "cpu-small").status_code == 302
    alice.wait_ready("alice")
    bob.wait_ready("bob")
    for name in ("alice", "bob"):
        assert_start_path(secure_hub, name)
    yield alice, bob
    stop_server(alice, "alice")
    stop_server(bob, "bob")


def forked(hub) -> bool:
    """Whether this hub's servers come from the local backend's zygote, forked or spares (secure_hub runs every test
    three ways)."""
    return bool(hub.config["backends"]["local"].get("zygote"))


def data_dir(hub) -> Path:
    return Path(hub.config["hub"]["data_dir"])


def hub_pids(hub) -> dict[str, int]:
    """The hub, its proxy and the idle culler (root's processes holding tokens and passwords)."""
    hub_process = psutil.Process(hub.proc.pid)
    pids = {"hub": hub_process.pid, "proxy": int((data_dir(hub) / "jupyterhub-proxy.pid").read_text())}
    for child in hub_process.children():
        if "jupyterhub_idle_culler" in " ".join(child.cmdline()):
            pids["idle-culler"] = child.pid
    return pids


# --- who runs as whom ---------------------------------------------------------------------------


def test_servers_run_as_their_own_accounts_with_private_homes(secure_hub, running):
    for name in ("alice", "bob"):
        proc = server_process(str(data_dir(secure_hub)), name)
        assert proc.username() == f"jupyter-{name}"
        assert proc.uids().real != 0 and proc.uids().effective != 0
        home = home_of(data_dir(secure_hub), name)
        info = home.stat()
        assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == proc.uids().real
        env = proc.environ()
        assert ADMIN_PASSWORD not in json.dumps(env) and "HPCLAB_CONFIG" not in env  # nothing of the hub's own environment
        if forked(secure_hub):  # and what its kernels get (no exec: the process changed its own environment)
            env = server_environment(running[0 if name == "alice" else 1], name)
            assert ADMIN_PASSWORD not in json.dumps(env) and "HPCLAB_CONFIG" not in env
        assert env["HOME"] == str(home) and env["USER"] == f"jupyter-{name}"


def test_alice_cannot_read_or_write_bobs_home(secure_hub, running):
    alice, _ = running
    bob_home = home_of(data_dir(secure_hub), "bob")
    out, error = run_in_kernel(alice, "alice", f"""
import os
for attempt in (lambda: os.listdir({str(bob_home)!r}), lambda: open({str(bob_home / 'planted.txt')!r}, 'w')):
    try:
        attempt(); print('ALLOWED')
    except PermissionError:
        print('REFUSED')
""")
    assert error == "" and out.split() == ["REFUSED", "REFUSED"]
    assert not (bob_home / "planted.txt").exists()


def test_alice_cannot_read_the_hub_database_cookie_secret_or_state_folder(secure_hub, running):
    alice, _ = running
    state = data_dir(secure_hub)
    targets = [state, state / "jupyterhub.sqlite", state / "jupyterhub_cookie_secret"]
    out, error = run_in_kernel(alice, "alice", f"""
import os
for path in {[str(t) for t in targets]!r}:
    try:
        os.listdir(path) if os.path.isdir(path) else open(path, 'rb').read(16); print('ALLOWED', path)
    except PermissionError:
        print('REFUSED')
""")
    assert error == "" and out.split() == ["REFUSED"] * 3, out
    # and as files: only the hub's account may enter the folder or read the secrets
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in ("jupyterhub.sqlite", "jupyterhub_cookie_secret"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name


def test_alice_cannot_read_the_environment_of_the_hub_proxy_or_culler(secure_hub, running):
    alice, _ = running
    pids = hub_pids(secure_hub)
    assert set(pids) == {"hub", "proxy", "idle-culler"}
    out, error = run_in_kernel(alice, "alice", f"""
for pid in {sorted(pids.values())!r}:
    try:
        open(f'/proc/{{pid}}/environ', 'rb').read(); print('ALLOWED', pid)
    except (PermissionError, FileNotFoundError):  # FileNotFoundError: hidden altogether (hidepid)
        print('REFUSED')
""")
    assert error == "" and out.split() == ["REFUSED"] * 3, out


def test_admin_password_is_not_in_the_hubs_environment_at_all(secure_hub):
    login(secure_hub, "admin")  # the account was set from the variable
    environ = psutil.Process(secure_hub.proc.pid).environ()  # read as root
    assert "HPCLAB_ADMIN_PASSWORD" not in environ and ADMIN_PASSWORD not in json.dumps(environ)


# --- limits the kernel enforces ----------------------------------------------------------------


def test_alice_cannot_widen_her_cores(secure_hub, running):
    alice, _ = running
    out, error = run_in_kernel(alice, "alice", """
import os, hpclab
before = sorted(os.sched_getaffinity(0))
try:
    os.sched_setaffinity(0, range(os.cpu_count()))
except OSError as failed:
    print('setaffinity failed:', failed.errno)
print('CPUS', before, sorted(os.sched_getaffinity(0)), hpclab.session().cores)
""")
    assert error == ""
    before, after, cores = re.search(r"CPUS (\[[\d, ]*\]) (\[[\d, ]*\]) (\d+)", out).groups()
    assert json.loads(after) == json.loads(before) and len(json.loads(before)) == 1 and cores == "1", out


def test_alice_runs_below_the_hubs_cpu_priority_and_cannot_raise_hers(secure_hub, running):
    """backends.local.server_nice (default 10): a burst of servers cannot starve the hub and its proxy."""
    alice, _ = running
    out, error = run_in_kernel(alice, "alice", """
import os
nice = os.getpriority(os.PRIO_PROCESS, 0)
try:
    os.setpriority(os.PRIO_PROCESS, 0, 0)
except OSError as failed:
    print('setpriority failed:', failed.errno)
print('NICE', nice, os.getpriority(os.PRIO_PROCESS, 0))
print('CPU', [line.split(':')[2] for line in open('/proc/self/cgroup') if line.split(':')[1] in ('cpu', 'cpu,cpuacct', '')])
""")
    assert error == "" and "setpriority failed: 13" in out, out  # EACCES: an unprivileged process cannot lower it
    assert re.search(r"NICE (\d+) (\d+)", out).groups() == ("10", "10"), out
    assert os.getpriority(os.PRIO_PROCESS, secure_hub.proc.pid) == 0  # the hub itself keeps its priority
    cpu_root = Path("/sys/fs/cgroup/cpu")
    if (cpu_root / "cpu.shares").exists():  # v1 cpu controller (this machine): the servers weigh as one nice-10 task
        group = re.search(r"CPU \[.*'(/[^']*hpclab/[^']+)'", out)
        assert group, out  # her kernel is in a server group under hpclab/, not in the hub's
        assert (cpu_root / group[1].lstrip("/")).parent.joinpath("cpu.shares").read_text().strip() == "110"


def test_three_processes_over_the_memory_limit_are_stopped_by_the_kernel_and_bob_is_untouched(secure_hub, running):
    """Three children of 250 MB each (shared anonymous mappings, which RLIMIT_DATA never counted) on a 512 MB profile."""
    alice, bob = running
    bob_server = server_process(str(data_dir(secure_hub)), "bob")
    out, error = run_in_kernel(alice, "alice", """
import subprocess, sys, time, hpclab
child = '''
import mmap, time
size = 250 * 2**20
m = mmap.mmap(-1, size, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
for i in range(0, size, 4096):
    m[i] = 1
print('filled', flush=True)
time.sleep(120)
'''
procs = [subprocess.Popen([sys.executable, '-c', child]) for _ in range(3)]
time.sleep(10)
print('STATUS', [p.poll() for p in procs])
for p in procs:
    p.kill()
session = hpclab.session()
print('LIMIT', session.memory_limit, session.memory_source)
""", timeout=180)
    assert error == "", error
    status = json.loads(re.search(r"STATUS (\[.*\])", out).group(1).replace("None", "null"))
    assert -9 in status, f"no child was stopped on the limit: {status}"
    assert re.search(rf"LIMIT {MEMORY_LIMIT} cgroup", out), out
    deadline = time.monotonic() + 15  # the hub polls every 2 s and reports the kill in the server's log
    while "Out of memory: the kernel killed" not in secure_hub.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    log = secure_hub.log_path.read_text()
    assert re.search(r"Out of memory: the kernel killed \d+ process\(es\) of alice.*512", log)
    assert bob_server.is_running() and server_process(str(data_dir(secure_hub)), "alice").is_running()
    assert bob.http.get(f"{secure_hub.url}/user/bob/api/status").status_code in (200, 403)


def test_gpu_devices_outside_the_assignment_cannot_be_opened(secure_hub, fake_gpus):
    """Fake GPU nodes (major 195, no driver on this machine): ENXIO = the cgroup let the open through, EPERM = refused."""
    admin = login(secure_hub, "admin")  # in gpu-users; alice's and bob's CPU servers keep running meanwhile
    try:
        assert admin.post_spawn("admin", "gpu-1").status_code == 302
        admin.wait_ready("admin")
        server = server_process(str(data_dir(secure_hub)), "admin")
        env = server_environment(admin, "admin") if forked(secure_hub) else server.environ()
        assigned = env["CUDA_VISIBLE_DEVICES"]
        other = next(g for g in fake_gpus if g != assigned)
        out, error = run_in_kernel(admin, "admin", f"""
import errno, os
for node in ({fake_gpus[assigned]!r}, {fake_gpus[other]!r}):
    try:
        os.close(os.open(node, os.O_RDWR)); print('OPENED')
    except OSError as failed:
        print(errno.errorcode[failed.errno])
""")
        assert error == "" and out.split() == ["ENXIO", "EPERM"], out
    finally:
        stop_server(admin, "admin")


# --- /tmp, /dev/shm and /proc of one's own (issue 26, item 3) ---------------------------------------


def _meminfo_shmem() -> int:
    """The host's memory held by tmpfs and shared memory, in bytes (/proc/meminfo Shmem)."""
    line = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("Shmem:"))
    return int(line.split()[1]) * 1024


def _cgroup_shmem(pid: int) -> int:
    """Bytes of tmpfs/shared memory charged to the memory cgroup of ``pid`` (v1 or cgroup2 memory.stat ``shmem``)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        folder = Path("/sys/fs/cgroup/memory" if "memory" in controllers.split(",") else "/sys/fs/cgroup" if controllers == "" else "")
        stat_file = folder / path.lstrip("/") / "memory.stat"
        if folder != Path("") and stat_file.exists():
            return int(next(row.split()[1] for row in stat_file.read_text().splitlines() if row.split()[0] == "shmem"))
    raise AssertionError(f"no memory cgroup for {pid}")


def test_memory_in_dev_shm_counts_against_the_server_and_is_gone_when_it_stops(secure_hub):
    """The attack of issue 26: GiBs written to /dev/shm stayed after the server stopped, held by nobody's cgroup.
    Now /dev/shm is the server's own tmpfs, at most its memory limit, charged to its cgroup, gone with it."""
    dave = login(secure_hub, "dave")
    assert dave.post_spawn("dave", "cpu-small").status_code == 302
    dave.wait_ready("dave")
    blob = 200 * 2**20
    try:
        out, error = run_in_kernel(dave, "dave", f"""
import os
chunk = b'x' * 2**20
with open('/dev/shm/dave-blob', 'wb') as handle:
    for _ in range({blob // 2**20}):
        handle.write(chunk)
info = os.statvfs('/dev/shm')
print("SHM", info.f_blocks * info.f_frsize)
""")
        assert error == "", error
        size = int(re.search(r"SHM (\d+)", out).group(1))
        assert not Path("/dev/shm/dave-blob").exists(), "dave's /dev/shm is the host's: it outlives his server"
        assert size == MEMORY_LIMIT, f"/dev/shm holds {size} bytes, not the profile's {MEMORY_LIMIT}"
        server = server_process(str(data_dir(secure_hub)), "dave")
        assert _cgroup_shmem(server.pid) >= blob, "the tmpfs pages are not charged to dave's server"
        held = _meminfo_shmem()
    finally:
        stop_server(dave, "dave")
    deadline = time.monotonic() + 10
    while _meminfo_shmem() > held - blob * 3 // 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _meminfo_shmem() <= held - blob * 3 // 4, "the 200 MiB in dave's /dev/shm outlived his server"


def test_bob_cannot_read_alices_tmp_files(secure_hub, running):
    """bob read alice's /tmp file (umask 022, one shared /tmp). Now /tmp is private and files are 0600 (umask 077)."""
    alice, bob = running
    out, error = run_in_kernel(alice, "alice", """
import os, stat
for path in ('/tmp/alice-notes.txt', '/var/tmp/alice-notes.txt'):
    with open(path, 'w') as handle:
        handle.write('my draft')
with open(os.path.expanduser('~/alice-home-notes.txt'), 'w') as handle:
    handle.write('my draft')
print('MODE', oct(stat.S_IMODE(os.stat('/tmp/alice-notes.txt').st_mode)),
      oct(stat.S_IMODE(os.stat(os.path.expanduser('~/alice-home-notes.txt')).st_mode)), oct(os.umask(0o077)))
""")
    assert error == "", error
    assert re.search(r"MODE 0o600 0o600 0o77", out), out
    assert not Path("/tmp/alice-notes.txt").exists()  # not in the host's /tmp either
    assert not Path("/var/tmp/alice-notes.txt").exists(), "alice's /var/tmp is the host's"
    out, error = run_in_kernel(bob, "bob", """
for path in ('/tmp/alice-notes.txt', '/var/tmp/alice-notes.txt'):
    try:
        print('READ', open(path).read())
    except OSError as failed:
        print('REFUSED', type(failed).__name__)
""")
    assert error == "" and out.split("\n").count("REFUSED FileNotFoundError") == 2, out


#: kernel code: System V shared memory through libc (no sysv_ipc here): shmget(KEY), and with MAKE a new 1 MiB
#: segment (0600) written through shmat and detached, as a program that leaves it behind would
_SHM = r'''
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmdt.argtypes = [ctypes.c_void_p]
IPC_CREAT, IPC_EXCL = 0o1000, 0o2000
flags = IPC_CREAT | IPC_EXCL | 0o600 if MAKE else 0
ident = libc.shmget(KEY, 2**20 if MAKE else 0, flags)
if ident < 0:
    print('SHMGET', os.strerror(ctypes.get_errno()))
else:
    if MAKE:
        address = libc.shmat(ident, None, 0)
        ctypes.memset(address, 7, 2**20)
        libc.shmdt(address)
    print('SHMGET', 'FOUND')
keys = [int(row.split()[0]) for row in open('/proc/sysvipc/shm').read().splitlines()[1:]]
print('LISTED', KEY in keys)
'''


def _shm(client, user: str, key: int, make: bool) -> str:
    out, error = run_in_kernel(client, user, f"KEY, MAKE = {key}, {make}\n" + _SHM)
    assert error == "", error
    return out


def test_system_v_shared_memory_and_tmp_files_are_the_servers_own_and_gone_when_it_stops(secure_hub, running):
    """A System V segment outlived its maker (kernel.shm_rmid_forced is 0) and every account found it by its key, as
    /dev/shm did before: each server has its own IPC namespace now. /tmp and /var/tmp are emptied by the stop too."""
    _, bob = running
    dave = login(secure_hub, "dave")
    key = 0x26000000 + os.getpid() % 0xFFFF
    assert dave.post_spawn("dave", "cpu-small").status_code == 302
    dave.wait_ready("dave")
    try:
        assert "SHMGET FOUND" in _shm(dave, "dave", key, make=True)
        out, error = run_in_kernel(dave, "dave", "for p in ('/tmp/dave-kept', '/var/tmp/dave-kept'): open(p, 'w').write('x')")
        assert error == "", error
        # bob's server cannot find the key (shmget without permission bits finds even a 0600 segment) nor see it listed
        out = _shm(bob, "bob", key, make=False)
        assert "SHMGET No such file or directory" in out and "LISTED False" in out, out
        host = [int(row.split()[0]) for row in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]]
        assert key not in host, "dave's segment is in the host's IPC namespace"
    finally:
        stop_server(dave, "dave")
    assert dave.post_spawn("dave", "cpu-small").status_code == 302
    dave.wait_ready("dave")
    try:
        out = _shm(dave, "dave", key, make=False)
        assert "SHMGET No such file or directory" in out and "LISTED False" in out, f"the segment outlived the server: {out}"
        kept = "import os; print('KEPT', [p for p in ('/tmp/dave-kept', '/var/tmp/dave-kept') if os.path.exists(p)])"
        out, error = run_in_kernel(dave, "dave", kept)
        assert error == "" and "KEPT []" in out, out
    finally:
        stop_server(dave, "dave")


@pytest.mark.skipif(tuple(int(v) for v in re.findall(r"\d+", os.uname().release)[:2]) < (5, 8),
                    reason="hidepid=invisible per proc mount needs Linux 5.8")
def test_bob_cannot_see_alices_processes_or_their_command_lines(secure_hub, running):
    alice_server = server_process(str(data_dir(secure_hub)), "alice")
    _, bob = running
    out, error = run_in_kernel(bob, "bob", f"""
import os
def owner(pid):
    try:
        return os.stat(f'/proc/{{pid}}').st_uid
    except FileNotFoundError:  # exited meanwhile
        return os.getuid()
others = [pid for pid in os.listdir('/proc') if pid.isdigit() and owner(pid) != os.getuid()]
print('OTHERS', len(others))
try:
    print('CMDLINE', open('/proc/{alice_server.pid}/cmdline').read())
except OSError as failed:
    print('REFUSED', type(failed).__name__)
print('OWN', os.path.exists(f'/proc/{{os.getppid()}}/cmdline'))
""")
    assert error == "", error
    assert "OTHERS 0" in out and "REFUSED FileNotFoundError" in out, out
    assert "OWN True" in out, out  # its own processes stay visible (JupyterLab, psutil)


# --- stopping means everything -------------------------------------------------------------------


def test_detached_processes_die_with_the_server_even_across_a_hub_restart(secure_hub):
    dave = login(secure_hub, "dave")
    assert dave.post_spawn("dave", "cpu-small").status_code == 302
    dave.wait_ready("dave")
    out, error = run_in_kernel(dave, "dave", """
import os, subprocess, sys
setsid = subprocess.Popen(['setsid', 'sleep', '600'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
double = subprocess.run([sys.executable, '-c', 'import os, subprocess; p = subprocess.Popen(["sleep", "600"], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid)'], capture_output=True, text=True)
print('PIDS', setsid.pid, double.stdout.strip())
""")
    assert error == ""
    pids = [int(p) for p in re.search(r"PIDS (\d+) (\d+)", out).groups()]
    assert all(psutil.pid_exists(p) for p in pids)
    secure_hub.stop()  # the hub restarts in between: it finds the server and its cgroup again
    secure_hub.start()
    admin = login(secure_hub, "admin")
    admin.wait_ready("dave", timeout=30)
    stop_server(admin, "dave")
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids), "a detached process outlived its server"


def test_a_restarted_hub_never_signals_a_pid_that_is_no_longer_its_server(secure_hub):
    """After a reboot the stored pid may belong to another process: with the server's cgroup gone, it is left alone."""
    import sqlite3

    from hpclab_hub.backends.local.cgroups import ServerCgroup

    dave = login(secure_hub, "dave")
    assert dave.post_spawn("dave", "cpu-small").status_code == 302
    dave.wait_ready("dave")
    secure_hub.stop()
    database = sqlite3.connect(data_dir(secure_hub) / "jupyterhub.sqlite")
    row_id, state_text = database.execute(
        "SELECT spawners.id, spawners.state FROM spawners JOIN users ON users.id = spawners.user_id WHERE users.name = 'dave'"
    ).fetchone()
    state = json.loads(state_text)
    group = ServerCgroup.from_state(state["cgroup"])  # what a reboot does: the server and its cgroup are gone
    group.kill_all()
    group.remove()
    bystander = subprocess.Popen(["sleep", "300"])  # ... and its pid now belongs to someone else
    try:
        state["pid"] = bystander.pid
        database.execute("UPDATE spawners SET state = ? WHERE id = ?", (json.dumps(state), row_id))
        database.commit()
        database.close()
        secure_hub.start()
        admin = login(secure_hub, "admin")
        deadline = time.monotonic() + 30
        while admin.api("GET", "/users/dave").json()["servers"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert admin.api("GET", "/users/dave").json()["servers"] == {}
        assert bystander.poll() is None, "the hub signalled a process that was not its server"
        assert "is not its server any more (its cgroup is gone" in secure_hub.log_path.read_text()
    finally:
        bystander.kill()
        bystander.wait()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- sign-up and login ----------------------------------------------------------------------------


def _signup(hub, username: str, password: str = "a-Long-signup-pw-42") -> requests.Response:
    client = HubClient(hub)
    page = client.http.get(f"{hub.url}/hub/signup")
    return client.http.post(f"{hub.url}/hub/signup", data={
        "username": username, "signup_password": password, "signup_password_confirmation": password,
        "_xsrf": client._xsrf(page.text),
    })


def _pending(hub) -> dict[str, bool]:
    from hpclab_hub.config import load_deployment
    from jupyterhub import orm
    from nativeauthenticator.orm import UserInfo

    db = orm.new_session_factory(load_deployment(hub.config_path).hub.database_url)()
    try:
        return {info.username: info.is_authorized for info in db.query(UserInfo).all()}
    finally:
        db.close()


def test_signup_name_with_tabs_and_html_is_refused_with_a_reason(secure_hub):
    name = "x\tonmouseover=alert(1)\tstyle=x"
    response = _signup(secure_hub, name)
    assert response.status_code == 400
    assert "may hold only letters a-z, digits" in response.text, re.findall(r"alert.{0,300}", response.text, re.S)
    assert not any("onmouseover" in existing for existing in _pending(secure_hub))
    too_long = _signup(secure_hub, "a" * 30)
    assert too_long.status_code == 400 and "at most 24 characters" in too_long.text


def test_names_are_normalised_on_every_path(secure_hub):
    from hpclab_hub.config.usernames import check_username

    assert check_username("ＣＡＲＯＬ") == "carol"  # fullwidth letters (NFKC) and upper case
    for bad in (".hidden", "a b", "a/b", "a\tb", "é<script>", "a..b"):
        with pytest.raises(ValueError):
            check_username(bad)
    refused = subprocess.run([sys.executable, "-m", "hpclab_hub.cli", "users", "add", "x\ty", "--config",
                              str(secure_hub.config_path), "--password-stdin"], input="long-enough-pw\n",
                             capture_output=True, text=True)
    assert refused.returncode == 1 and "may hold only letters" in refused.stderr
    admin = login(secure_hub, "admin")
    assert admin.api("POST", "/users/bad%09name").status_code == 400
    assert admin.api("POST", "/users/Alice").status_code == 400  # not in normal form: would be a second alice


def test_approval_is_a_post_with_xsrf_and_the_page_quotes_names(secure_hub):
    assert _signup(secure_hub, "erin").status_code == 200
    assert _pending(secure_hub)["erin"] is False
    admin = login(secure_hub, "admin")
    assert admin.http.get(f"{secure_hub.url}/hub/authorize/erin").status_code == 405  # a link on another site
    assert _pending(secure_hub)["erin"] is False
    forged = requests.post(f"{secure_hub.url}/hub/authorize/erin", data={"approve": "1"}, cookies=admin.http.cookies)
    assert forged.status_code == 403 and _pending(secure_hub)["erin"] is False  # no XSRF token: refused
    page = admin.http.get(f"{secure_hub.url}/hub/authorize").text
    assert 'data-username="erin"' in page
    token = re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)
    approved = admin.http.post(f"{secure_hub.url}/hub/authorize/erin", data={"approve": "1", "_xsrf": token})
    assert approved.ok and _pending(secure_hub)["erin"] is True


class _Elements(HTMLParser):
    """Every start tag's attributes, every text run, and what each <script> holds, as a browser would parse them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.texts: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        (self.scripts if self._in_script else self.texts).append(data)


def _write_accounts(hub, change) -> None:
    """Apply ``change(db, UserInfo)`` straight to the hub's database and commit, past every rule of the hub."""
    from hpclab_hub.config import load_deployment
    from jupyterhub import orm
    from nativeauthenticator.orm import UserInfo

    db = orm.new_session_factory(load_deployment(hub.config_path).hub.database_url)()
    try:
        change(db, UserInfo)
        db.commit()
    finally:
        db.close()


def test_a_hostile_name_in_the_database_is_escaped_on_the_approval_page_and_get_changes_nothing(secure_hub):
    """A name with quotes, tabs and HTML that reached the database anyway stays text on /hub/authorize (no attribute
    or script of its own), a GET of /hub/authorize/<name> or /hub/discard/<name> answers 405 and changes nothing,
    and the page's own POST form still discards it."""
    hostile = 'mal"\tonfocus=alert(1)\tautofocus\tx=\'><script>alert(2)</script><b a="'
    # a pending account that never went through sign-up's name rule (an old database, a bug elsewhere)
    _write_accounts(secure_hub, lambda db, UserInfo: db.add(UserInfo(username=hostile, password=b"x", is_authorized=False)))
    try:
        admin = login(secure_hub, "admin")
        page = admin.http.get(f"{secure_hub.url}/hub/authorize")
        assert page.status_code == 200
        assert "<script>alert(2)" not in page.text and "alert(2)</script>" not in page.text
        elements = _Elements()
        elements.feed(page.text)
        assert not [attrs for _, attrs in elements.tags if {"onfocus", "autofocus", "x", "a"} & set(attrs)]
        assert not [tag for tag, _ in elements.tags if tag == "b"]
        assert not [script for script in elements.scripts if "alert(" in script]
        rows = [attrs for tag, attrs in elements.tags if tag == "tr" and "data-username" in attrs]
        assert hostile in [row["data-username"] for row in rows]  # the whole name stayed inside its quoted attribute
        assert hostile in elements.texts
        quoted = quote(hostile, safe="")
        for route in ("authorize", "discard"):  # a link on another site, or an <img src=...>
            answer = admin.http.get(f"{secure_hub.url}/hub/{route}/{quoted}", allow_redirects=False)
            assert answer.status_code == 405, (route, answer.status_code)
            assert _pending(secure_hub)[hostile] is False
        # the page's own discard form still works for such a name (its action must reach the handler)
        actions = [attrs["action"] for tag, attrs in elements.tags if tag == "form" and "/discard/" in attrs.get("action", "")]
        action = next(a for a in actions if unquote(a.rsplit("/discard/", 1)[1]) == hostile)
        token = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
        discarded = admin.http.post(f"{secure_hub.url}{action}", data={"_xsrf": token}, allow_redirects=False)
        assert discarded.status_code == 302, discarded.status_code
        assert hostile not in _pending(secure_hub)
    finally:
        _write_accounts(secure_hub, lambda db, UserInfo: db.query(UserInfo).filter(UserInfo.username == hostile).delete())


def test_repeated_wrong_passwords_lock_the_account(secure_hub):
    client = HubClient(secure_hub)
    for _ in range(5):
        assert "/hub/login" in client.login("dave", "wrong-password").url
    locked = client.login("dave", USER_PASSWORD)
    assert locked.status_code == 429 and "Too many failed logins" in locked.text
    assert HubClient(secure_hub).login("bob", USER_PASSWORD).ok  # other accounts are not affected


def _signup_claiming(hub, username: str, claimed_address: str) -> requests.Response:
    """A sign-up whose request claims another client address (X-Real-Ip, which JupyterHub would trust)."""
    client = HubClient(hub)
    client.http.headers["X-Real-Ip"] = claimed_address
    page = client.http.get(f"{hub.url}/hub/signup")
    password = "a-Long-signup-pw-42"
    return client.http.post(f"{hub.url}/hub/signup", data={
        "username": username, "signup_password": password, "signup_password_confirmation": password,
        "_xsrf": client._xsrf(page.text),
    })


def test_signups_are_rate_limited_per_address(secure_hub):
    # a bot that claims a new address each time (X-Real-Ip) is still one address to the hub
    answers = [_signup_claiming(secure_hub, f"bot{i}", f"10.0.0.{i}").status_code for i in range(6)]
    assert 429 in answers, answers
    assert sum(1 for name in _pending(secure_hub) if name.startswith("bot")) <= 5


def test_hub_cookies_are_samesite_lax(secure_hub):
    client = HubClient(secure_hub)
    client.login("bob", USER_PASSWORD)
    for cookie in client.http.cookies:
        if cookie.path.startswith("/hub"):
            assert cookie.get_nonstandard_attr("SameSite") == "Lax", cookie.name


# --- accounts without root, or missing -----------------------------------------------------------


def test_a_hub_without_root_serves_only_its_own_account_and_existing_mode_needs_a_users_account():
    from hpclab_hub.backends.local.unix_accounts import AccountUnavailable, resolve_account

    with pytest.raises(AccountUnavailable) as missing:
        resolve_account("nobody-here", "existing", "", Path("/home"), None)
    assert missing.value.status == 400 and "no Unix account 'nobody-here'" in str(missing.value)
    with pytest.raises(AccountUnavailable) as daemon:  # a sign-up named after a daemon's account
        resolve_account("daemon", "existing", "", Path("/home"), None)
    assert daemon.value.status == 403 and "system account" in str(daemon.value)
    code = (
        "from pathlib import Path\n"
        "from hpclab_hub.backends.local.unix_accounts import AccountUnavailable, resolve_account\n"
        "print(resolve_account('nobody', 'create', 'jupyter-', Path('/home'), '/tmp').name)\n"
        "try:\n    resolve_account('alice', 'create', 'jupyter-', Path('/home'), None)\n"
        "except AccountUnavailable as refused:\n    print(refused.status, refused)\n"
    )
    import pwd

    nobody = pwd.getpwnam("nobody")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                            preexec_fn=lambda: (os.setgid(nobody.pw_gid), os.setuid(nobody.pw_uid)))
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert lines[0] == "nobody"
    assert lines[1].startswith("403") and "runs without root (as 'nobody')" in lines[1]


def test_without_root_auto_is_a_one_person_trial_for_the_first_admin_and_hub_user_never_runs_as_root():
    """accounts.mode auto/hub-user: the first admin's server runs as the hub's account, everyone else is refused
    with the reason; as root, auto creates accounts and hub-user refuses (tests/e2e/test_trial_without_root.py
    plays the whole `make hub` path)."""
    from hpclab_hub.config import load_deployment
    from hpclab_hub.backends.local.trial import trial_user
    from hpclab_hub.backends.local.unix_accounts import AccountUnavailable, resolve_account

    with pytest.raises(AccountUnavailable) as as_root:
        resolve_account("admin", "hub-user", "jupyter-", Path("/home"), None, only_user="admin")
    assert as_root.value.status == 500 and "servers never run as root" in str(as_root.value)
    shipped = load_deployment(REPO / "deploy" / "hub.yaml")
    assert shipped.backends["local"].accounts.mode == "auto" and trial_user(shipped) is None  # root: several people
    code = (
        "from pathlib import Path\n"
        "from hpclab_hub.config import load_deployment\n"
        "from hpclab_hub.backends.local.trial import trial_user, start_lines\n"
        "from hpclab_hub.backends.local.unix_accounts import AccountUnavailable, resolve_account\n"
        "shipped = load_deployment(Path('deploy/hub.yaml'))\n"
        "print(trial_user(shipped))\n"
        "account = resolve_account('admin', 'auto', 'jupyter-', Path('/home'), None, only_user='admin')\n"
        "print(account.name, account.home)\n"
        "try:\n    resolve_account('bob', 'auto', 'jupyter-', Path('/home'), None, only_user='admin')\n"
        "except AccountUnavailable as refused:\n    print(refused.status, refused)\n"
        "print(start_lines(shipped)[0])\n"
    )
    import pwd

    nobody = pwd.getpwnam("nobody")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            preexec_fn=lambda: (os.setgid(nobody.pw_gid), os.setuid(nobody.pw_uid)))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "admin"
    assert lines[1] == f"nobody {nobody.pw_dir}/hpclab-trial"
    assert lines[2].startswith("403 This HPCLab hub is a one-person trial: it runs without root (as the Unix account 'nobody')")
    assert "only for 'admin'" in lines[2]
    assert lines[3].startswith("mode: one-person trial (no root; the hub runs as 'nobody'): 'admin' logs in")
