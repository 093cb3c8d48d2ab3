"""The local backend's isolation on a real cgroup v2 host: run inside the Debian 13 guest (`make test-cgroup-v2`).

Skipped anywhere else: on a host whose memory, cpuset and pids controllers are on cgroup v1 (the development
VM) they cannot be enabled on cgroup2, and a folder tree standing in for /sys/fs/cgroup proves nothing about
the kernel. In the guest these run as root in a Delegate=yes service, as the hub does under
deploy/systemd/hpclab-hub.service, with only python3 and pytest from Debian (no virtual environment).
Processes of the "server" run as the guest's user alice, joined to the group before they drop to her account.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hpclab_hub.backends.local.devices_bpf import attached
from hpclab_hub.backends.local.cgroups import CgroupUnavailable, ServerCgroup, ServerLimits


def _real_v2_host() -> bool:
    if not Path("/sys/fs/cgroup/cgroup.controllers").exists() or os.geteuid() != 0:
        return False
    try:
        return ServerCgroup.layout()[0] == 2
    except CgroupUnavailable:
        return False


pytestmark = pytest.mark.skipif(not _real_v2_host(), reason="needs a real cgroup v2 host with memory, cpuset and pids "
                                "(make test-cgroup-v2 boots one); never a folder standing in for it")

MiB = 2**20


@contextmanager
def server_group(name: str, limits: ServerLimits) -> Iterator[ServerCgroup]:
    group = ServerCgroup.create(f"test-{name}", limits)
    try:
        yield group
    finally:
        group.kill_all()
        group.remove()
    assert not group.exists()


def as_user(group: ServerCgroup | None, user: str = "alice"):
    """preexec_fn: join the group as root, then become ``user`` (what the local spawner does before exec)."""
    account = pwd.getpwnam(user)

    def preexec() -> None:
        if group is not None:
            group.attach()
        os.setgroups([])
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)

    return preexec


def run_as(group: ServerCgroup | None, code: str, *args: str, timeout: float = 120) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code, *args], preexec_fn=as_user(group), capture_output=True,
                          text=True, timeout=timeout, cwd="/", check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_hub_side_runs_in_a_delegated_subtree_with_every_controller():
    version, bases = ServerCgroup.layout()
    base = bases["unified"]
    assert version == 2
    assert base.name == "hpclab-v2-checks.service"  # the unit's own group (Delegate=yes), not the root
    assert {"memory", "cpuset", "cpu", "pids"} <= set((base / "cgroup.controllers").read_text().split())


def test_memory_over_the_limit_kills_that_process_not_the_server_and_never_goes_to_swap():
    assert Path("/proc/swaps").read_text().count("\n") > 1, "the guest has swap: 'no swap' is then a limit, not a lack"
    with server_group("memory", ServerLimits((0,), memory=128 * MiB, pids=64)) as group:
        path = Path(group.paths["unified"])
        assert (path / "memory.max").read_text().strip() == str(128 * MiB)
        assert (path / "memory.swap.max").read_text().strip() == "0"
        assert (path / "memory.oom.group").read_text().strip() == "0"
        words = run_as(group, """
import subprocess, sys
hog = '''
import mmap
size = 300 * 2**20
m = mmap.mmap(-1, size, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
for i in range(0, size, 4096):
    m[i] = 1
print('FILLED')
'''
child = subprocess.run([sys.executable, '-c', hog], capture_output=True, text=True)
print('CHILD', child.returncode, child.stdout.strip() or '-')
print('SERVER-ALIVE')
""")
        assert words == ["CHILD", "-9", "-", "SERVER-ALIVE"]  # the hog died, its parent (the server) did not
        assert group.oom_kills() >= 1
        assert (path / "memory.swap.current").read_text().strip() == "0"
        assert int((path / "memory.peak").read_text()) <= 128 * MiB


def test_the_cores_are_the_cpuset_and_the_user_cannot_widen_them():
    with server_group("cpuset", ServerLimits((1,), pids=64)) as group:
        path = Path(group.paths["unified"])
        assert (path / "cpuset.cpus.effective").read_text().strip() == "1"
        words = run_as(group, """
import os, sys
print(sorted(os.sched_getaffinity(0)))
try:
    os.sched_setaffinity(0, {0, 1})
except OSError as error:
    print('SETAFFINITY', error.errno)
print(sorted(os.sched_getaffinity(0)))
try:
    open(sys.argv[1], 'w').write('0-1')
    print('WIDENED')
except OSError as error:
    print('WRITE', error.strerror.replace(' ', '-'))
""", str(path / "cpuset.cpus"))
        assert words[0] == "[1]" and words[-3] == "[1]", words
        assert words[-2:] == ["WRITE", "Permission-denied"]


def test_a_fork_bomb_stops_at_the_pids_limit():
    with server_group("pids", ServerLimits((0,), pids=16)) as group:
        words = run_as(group, """
import os, time
children = 0
try:
    for _ in range(64):
        pid = os.fork()
        if pid == 0:
            time.sleep(30); os._exit(0)
        children += 1
except BlockingIOError:
    print('EAGAIN')
print(children)
""")
        assert words[0] == "EAGAIN" and int(words[1]) < 16, words
        assert "max 0" not in (Path(group.paths["unified"]) / "pids.events").read_text()


def test_servers_weigh_less_than_the_hub_on_a_shared_core():
    """cpu.weight of the servers' parent from NICE_WEIGHT[10] = 110 shares: 11 against the hub's 100."""
    with server_group("cpu", ServerLimits((1,), pids=64, servers_cpu_shares=110)) as group:
        parent = Path(group.paths["unified"]).parent
        assert (parent / "cpu.weight").read_text().strip() == "11"
        # both spin on core 1 over the same 5 s (Python starts slowly under emulation: a common start 5 s ahead)
        spin = ("import os, sys, time\nos.sched_setaffinity(0, {1})\nstart = float(sys.argv[1])\n"
                "while time.time() < start:\n    time.sleep(0.01)\nn = 0\nwhile time.time() < start + 5:\n    n += 1\nprint(n)\n")
        start = str(time.time() + 5)
        server = subprocess.Popen([sys.executable, "-c", spin, start], preexec_fn=as_user(group), stdout=subprocess.PIPE, text=True)  # noqa: PLW1509
        hub = subprocess.Popen([sys.executable, "-c", spin, start], stdout=subprocess.PIPE, text=True)  # in the hub's own leaf
        server_loops, hub_loops = int(server.communicate(timeout=120)[0]), int(hub.communicate(timeout=120)[0])
        assert server_loops < 0.4 * hub_loops, (server_loops, hub_loops)


@pytest.fixture
def fake_gpus() -> Iterator[dict[str, str]]:
    folder = Path(tempfile.mkdtemp(prefix="gpus-", dir="/var/tmp"))
    folder.chmod(0o755)
    nodes = {"nvidia0": (195, 0), "nvidia1": (195, 1), "nvidiactl": (195, 255), "gpu-own": (1, 5), "gpu-other": (1, 7)}
    for name, (major, minor) in nodes.items():
        os.mknod(folder / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        (folder / name).chmod(0o666)
    yield {name: str(folder / name) for name in nodes}
    shutil.rmtree(folder)


def test_gpu_nodes_outside_the_assignment_cannot_be_opened(fake_gpus):
    """The device program the v2 path attaches (no driver behind 195:*: ENXIO = let through, EPERM = refused)."""
    limits = ServerLimits((0,), pids=64, denied_devices=((1, 7), (195, 1)), allowed_devices=((1, 5), (195, 0)))
    with server_group("gpus", limits) as group:
        assert len(attached(group.paths["unified"])) == 1
        words = run_as(group, """
import errno, os, sys
for node in sys.argv[1:]:
    try:
        os.close(os.open(node, os.O_RDWR)); print('OPENED')
    except OSError as error:
        print(errno.errorcode[error.errno])
""", *(fake_gpus[n] for n in ("nvidia0", "nvidia1", "nvidiactl", "gpu-own", "gpu-other")))
        assert words == ["ENXIO", "EPERM", "ENXIO", "OPENED", "EPERM"]


def test_stopping_kills_detached_processes_and_the_group_goes():
    with server_group("kill", ServerLimits((0,), pids=64)) as group:
        proc = subprocess.Popen(["sh", "-c", "setsid sleep 300 & echo $!; exec sleep 300"], stdout=subprocess.PIPE,
                                text=True, preexec_fn=as_user(group))  # noqa: PLW1509
        grandchild = int(proc.stdout.readline())
        assert {proc.pid, grandchild} <= group.pids()
        assert group.kill_all() == set()
        proc.wait(timeout=10)
        assert not Path(f"/proc/{grandchild}").exists()


def test_the_user_cannot_leave_the_group_or_raise_its_limits():
    with server_group("escape", ServerLimits((0,), memory=256 * MiB, pids=64)) as group:
        path = Path(group.paths["unified"])
        targets = [path.parent.parent / "cgroup.procs", Path("/sys/fs/cgroup/cgroup.procs"), path / "memory.max", path / "pids.max"]
        words = run_as(group, """
import errno, os, sys
for target in sys.argv[1:]:
    try:
        with open(target, 'w') as handle:
            handle.write(str(os.getpid()) if target.endswith('procs') else 'max')
        print('WROTE')
    except OSError as error:
        print(errno.errorcode[error.errno])
""", *map(str, targets))
        assert words == ["EACCES"] * 4
        assert (path / "memory.max").read_text().strip() == str(256 * MiB)
