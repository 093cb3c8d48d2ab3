"""hpclab_hub.backends.local.cgroups on this machine's real cgroups (v1 here), and its cgroup2 path on a stand-in tree.

The cgroup2 test uses a plain folder in place of /sys/fs/cgroup: a fake, named as such, because on this
machine the memory, cpuset and pids controllers are bound to the v1 hierarchies and cannot be enabled
in a cgroup2 tree at the same time.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from hpclab_hub.backends.local.cgroups import CgroupUnavailable, ServerCgroup, ServerLimits

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="creating cgroups needs root")


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for PID 1 to reap it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _v1_available() -> bool:
    try:
        return ServerCgroup.layout()[0] == 1
    except CgroupUnavailable:
        return False


@root_only
@pytest.mark.skipif(not _v1_available(), reason="no writable cgroup v1 memory/cpuset/pids hierarchies on this host")
def test_real_v1_group_limits_its_processes_and_kills_them_all():
    cpu = sorted(os.sched_getaffinity(0))[-1]
    group = ServerCgroup.create(f"test-{os.getpid()}", ServerLimits((cpu,), memory=256 * 2**20, pids=64, servers_cpu_shares=110))
    try:
        assert Path(group.paths["memory"], "memory.limit_in_bytes").read_text().strip() == str(256 * 2**20)
        if Path("/sys/fs/cgroup/cpu/cpu.shares").exists():  # the cpu controller (mounted here): servers weigh less than the hub
            assert Path(group.paths["cpu"]).parent.joinpath("cpu.shares").read_text().strip() == "110"
        assert Path(group.paths["cpuset"], "cpuset.cpus").read_text().strip() == str(cpu)
        assert Path(group.paths["pids"], "pids.max").read_text().strip() == "64"
        # a process that joins before exec, then leaves a detached grandchild behind
        proc = subprocess.Popen(
            ["sh", "-c", "setsid sleep 300 & echo $!; exec sleep 300"], stdout=subprocess.PIPE, text=True,
            preexec_fn=group.attach,
        )
        grandchild = int(proc.stdout.readline())
        assert {proc.pid, grandchild} <= group.pids()
        assert os.sched_getaffinity(proc.pid) == {cpu}  # the cpuset narrowed the affinity
        assert group.kill_all() == set()
        proc.wait(timeout=5)
        assert proc.returncode == -signal.SIGKILL
        assert not _running(grandchild)
        # the state survives a round trip, as across a hub restart
        assert ServerCgroup.from_state(group.as_state()).paths == group.paths
    finally:
        group.kill_all()
        group.remove()
    assert not group.exists()


def _cgroup2_stand_in(tmp_path: Path, hub_path: str, procs: str) -> tuple[Path, Path]:
    """A plain folder as a cgroup2 mount with the hub's group at ``hub_path``, and a /proc that points there."""
    mountpoint = tmp_path / "cgroup"
    hub_group = mountpoint / hub_path
    hub_group.mkdir(parents=True)
    (hub_group / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (hub_group / "cgroup.subtree_control").write_text("")
    (hub_group / "cgroup.procs").write_text(procs)
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "mountinfo").write_text(f"30 23 0:27 / {mountpoint} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n")
    (proc / "cgroup").write_text(f"0::/{hub_path}\n")
    return hub_group, proc


def test_cgroup2_host_delegates_controllers_and_writes_the_limits(tmp_path):
    """Stand-in cgroup2 tree (see the module docstring): the hub's own group holds the hub's process."""
    hub_group, proc = _cgroup2_stand_in(tmp_path, "system.slice/hpclab-hub.service", "4242\n")

    group = ServerCgroup.create("abc-jupyter-alice", ServerLimits((2, 3), memory=2**30, pids=100), proc=str(proc))

    assert group.version == 2
    server = Path(group.paths["unified"])
    assert server == hub_group / "hpclab" / "abc-jupyter-alice"
    assert (hub_group / "hub" / "cgroup.procs").read_text() == "4242"  # the hub moved into a leaf first
    assert (hub_group / "cgroup.subtree_control").read_text() == "+memory +cpuset +pids"
    assert (hub_group / "hpclab" / "cgroup.subtree_control").read_text() == "+memory +cpuset +pids"
    assert (server / "memory.max").read_text() == str(2**30)
    assert (server / "cpuset.cpus").read_text() == "2,3"
    assert (server / "pids.max").read_text() == "100"


def test_cgroup2_servers_parent_weighs_less_than_the_hub(tmp_path):
    """Stand-in cgroup2 tree: cpu.weight of the servers' parent from their cpu shares (1024 = the hub's 100)."""
    hub_group, proc = _cgroup2_stand_in(tmp_path, "hub.slice", "")

    group = ServerCgroup.create("abc-jupyter-bob", ServerLimits((0,), servers_cpu_shares=110), proc=str(proc))

    assert "+cpu" in (hub_group / "cgroup.subtree_control").read_text()  # the cpu controller delegated too
    assert (hub_group / "hpclab" / "cpu.weight").read_text() == "11"
    assert not group.notes


def test_cgroup2_without_the_needed_controllers_says_which(tmp_path):
    mountpoint = tmp_path / "cgroup"
    mountpoint.mkdir()
    (mountpoint / "cgroup.controllers").write_text("cpu io\n")
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "mountinfo").write_text(f"30 23 0:27 / {mountpoint} rw - cgroup2 cgroup2 rw\n")
    (proc / "cgroup").write_text("0::/\n")
    with pytest.raises(CgroupUnavailable, match="lacks the controllers memory, cpuset, pids"):
        ServerCgroup.create("x", ServerLimits((0,)), proc=str(proc))
