"""cgroup2 GPU fence (hpclab_hub.backends.local.devices_bpf) on this machine's real cgroup2 hierarchy.

The test's groups go on the cgroup2 mount, under this process's own group: /sys/fs/cgroup/unified on a hybrid
host like the development VM (no controllers there; a device program attaches regardless, and the kernel consults
it for every process in the group), /sys/fs/cgroup on a pure v2 host (Debian 13, Ubuntu 24.04).
The GPUs are fake nodes: NVIDIA's major 195 with no driver (an open the cgroup lets through fails with
ENXIO, one it refuses with EPERM), and copies of /dev/zero and /dev/full standing for GPUs whose nodes
open for real. The process that opens them runs as ``nobody`` inside the group, as a user's kernel would.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpclab.cgroup import cgroup_mounts, process_cgroups
from hpclab_hub.backends.local.cgroups import CgroupUnavailable, ServerLimits, fence_devices_v2
from hpclab_hub.backends.local.devices_bpf import (
    DeviceFenceError,
    assemble,
    attached,
    fence,
    load,
)
from support.paths import REPO_ROOT

NOBODY = 65534


def _cgroup2() -> tuple[Path, Path] | None:
    """The cgroup2 mount (whole tree) and this process's own group on it; None without one."""
    mounts = [m for m in cgroup_mounts(Path("/proc/self/mountinfo").read_text()) if m.version == 2 and m.root == "/"]
    own = process_cgroups(Path("/proc/self/cgroup").read_text()).get("unified")
    for mount in sorted(mounts, key=lambda m: m.mountpoint != "/sys/fs/cgroup/unified"):  # hybrid first, then pure v2
        if own is not None and (mount.directory_of(own) / "cgroup.procs").exists():
            return Path(mount.mountpoint), mount.directory_of(own)
    return None


CGROUP2 = _cgroup2()
MOUNT, OWN_GROUP = CGROUP2 or (Path("/nonexistent"), Path("/nonexistent"))

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="loading a device program and making device nodes need root"),
    pytest.mark.skipif(CGROUP2 is None, reason="no cgroup2 mount (neither /sys/fs/cgroup/unified nor /sys/fs/cgroup)"),
]

#: name -> (major, minor): what the server may open (own GPU, control devices) and what it may not
NODES = {
    "nvidia0": (195, 0),  # the server's own GPU
    "nvidia1": (195, 1),  # another user's GPU (configured)
    "nvidia7": (195, 7),  # a GPU the configuration does not name (appeared later)
    "nvidia-modeset": (195, 254),
    "nvidiactl": (195, 255),
    "nvidia-uvm": (235, 0),  # a dynamic major, as nvidia-uvm gets one
    "nvidia-uvm-tools": (235, 1),
    "gpu-own": (1, 5),  # the /dev/null trick: a GPU whose node opens for real (here /dev/zero's numbers)
    "gpu-other": (1, 7),  # another one (/dev/full's numbers)
}
OWN = [(195, 0), (1, 5)]
OTHERS = [(195, 1), (1, 7)]


@pytest.fixture
def fake_dev() -> Iterator[Path]:
    """The fake nodes, world-readable and writable, in a folder on a file system that allows devices."""
    folder = Path(tempfile.mkdtemp(prefix="hpclab-fence-", dir="/var/tmp"))
    folder.chmod(0o755)
    for name, (major, minor) in NODES.items():
        os.mknod(folder / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        (folder / name).chmod(0o666)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def server_group() -> Iterator[Path]:
    """A server-like group on the real cgroup2 hierarchy, under the test's own group."""
    path = OWN_GROUP / f"hpclab-test-fence-{os.getpid()}"
    path.mkdir()
    yield path
    for pid in (path / "cgroup.procs").read_text().split():
        os.kill(int(pid), 9)
    for _ in range(100):
        try:
            path.rmdir()
            break
        except OSError:
            time.sleep(0.05)


PROBE = """
import errno, json, os, sys
folder, group, uid, top = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if group:
    with open(os.path.join(group, 'cgroup.procs'), 'w') as handle:  # joins as root, before dropping, as a server does
        handle.write(str(os.getpid()))
os.setgroups([]); os.setgid(uid); os.setuid(uid)
result = {}
for name in sorted(os.listdir(folder)):
    try:
        os.close(os.open(os.path.join(folder, name), os.O_RDWR))
        result[name] = 'OPENED'
    except OSError as failed:
        result[name] = errno.errorcode[failed.errno]
escape = {}
for target in (os.path.join(top, 'cgroup.procs'), os.path.join(os.path.dirname(group or top), 'cgroup.procs')):
    try:
        with open(target, 'w') as handle:
            handle.write(str(os.getpid()))
        escape[target] = 'MOVED'
    except OSError as failed:
        escape[target] = errno.errorcode[failed.errno]
result['escape'] = escape
print(json.dumps(result))
"""


def _probe(folder: Path, group: Path | None) -> dict:
    """Open every node as ``nobody`` from inside ``group`` (None: outside any server group)."""
    out = subprocess.run([sys.executable, "-c", PROBE, str(folder), str(group or ""), str(NOBODY), str(MOUNT)],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return json.loads(out)


def test_a_users_process_opens_its_own_gpu_and_the_control_devices_and_no_other_gpu(fake_dev, server_group):
    program_id = fence(str(server_group), OWN, OTHERS)
    assert attached(str(server_group)) == [program_id]

    inside = _probe(fake_dev, server_group)
    outside = _probe(fake_dev, None)

    escape = inside.pop("escape")  # and it cannot leave the group: not to the top, not to the parent
    assert escape[str(MOUNT / "cgroup.procs")] == "EACCES" and set(escape.values()) == {"EACCES"}, escape
    assert inside == {
        "nvidia0": "ENXIO",  # let through (no driver behind the fake node)
        "nvidia1": "EPERM",  # another user's GPU: refused by the program
        "nvidia7": "EPERM",  # any NVIDIA GPU node not the server's own
        "nvidia-modeset": "ENXIO",
        "nvidiactl": "ENXIO",
        "nvidia-uvm": "ENXIO",
        "nvidia-uvm-tools": "ENXIO",
        "gpu-own": "OPENED",
        "gpu-other": "EPERM",
    }
    outside.pop("escape")
    assert outside["nvidia1"] == "ENXIO" and outside["gpu-other"] == "OPENED"  # the fence, nothing else, refused


def test_refencing_a_group_replaces_its_program(fake_dev, server_group):
    """A stale group reused for a new server (another GPU now): the old program must not stay attached."""
    first = fence(str(server_group), OWN, OTHERS)
    second = fence(str(server_group), [(195, 1), (1, 7)], [(195, 0), (1, 5)])

    assert attached(str(server_group)) == [second] and second != first
    inside = _probe(fake_dev, server_group)
    assert (inside["nvidia0"], inside["nvidia1"], inside["gpu-own"], inside["gpu-other"]) == ("EPERM", "ENXIO", "EPERM", "OPENED")


def test_the_fence_holds_for_the_groups_children_and_a_user_cannot_remove_it(fake_dev, server_group):
    fence(str(server_group), OWN, OTHERS)
    child = server_group / "kernel"  # a sub-group (a user cannot make one: the hub's group is root's)
    child.mkdir()
    try:
        inside = _probe(fake_dev, child)
        assert inside["nvidia1"] == "EPERM" and inside["gpu-own"] == "OPENED"
        assert inside["escape"][str(server_group / "cgroup.procs")] == "EACCES"
    finally:
        child.rmdir()
    detach = """
import ctypes, os, sys
sys.path.insert(0, sys.argv[2])
os.setgroups([]); os.setgid(65534); os.setuid(65534)
from hpclab_hub.backends.local.devices_bpf import attached
try:
    attached(sys.argv[1]); print('QUERIED')
except OSError as failed:
    print(failed.strerror)
"""
    spawners = str(REPO_ROOT / "hub")
    out = subprocess.run([sys.executable, "-c", detach, str(server_group), spawners], check=False, capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "Operation not permitted", out


def test_the_server_cgroup_v2_path_fences_through_the_program(fake_dev, server_group):
    """cgroups.fence_devices_v2, as ServerCgroup._create_v2 calls it with the spawner's limits."""
    limits = ServerLimits((0,), denied_devices=tuple(OTHERS), allowed_devices=tuple(OWN))
    fence_devices_v2(server_group, limits)
    inside = _probe(fake_dev, server_group)
    assert (inside["nvidia0"], inside["nvidia1"], inside["gpu-own"], inside["gpu-other"]) == ("ENXIO", "EPERM", "OPENED", "EPERM")


def test_a_folder_that_is_not_a_cgroup_cannot_be_fenced_and_says_so(tmp_path):
    with pytest.raises(CgroupUnavailable, match="GPUs cannot be fenced on cgroup2"):
        fence_devices_v2(tmp_path, ServerLimits((0,), denied_devices=((195, 1),)))


def test_the_program_is_the_instructions_slurm_would_build():
    """Shape of the hand-assembled program: 8-byte instructions ending in the allow and deny exits."""
    code = assemble([(195, 0)], [(195, 1)])
    assert len(code) % 8 == 0
    exits = [code[i:i + 8] for i in range(len(code) - 32, len(code), 8)]
    assert exits == [bytes.fromhex("b700000001000000"), bytes.fromhex("9500000000000000"),
                     bytes.fromhex("b700000000000000"), bytes.fromhex("9500000000000000")]
    with pytest.raises(DeviceFenceError, match="refused the device program"):
        load(code[:-8])  # no exit at the end: the verifier says no
