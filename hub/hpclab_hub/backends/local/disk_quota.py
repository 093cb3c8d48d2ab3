"""Disk quotas for homes on the local backend (``quotas.disk``), enforced by the kernel.

The hub sets the person's quota at every start of a server, as root:

- ext4 or XFS: a user quota, ``setquota -u UID 0 KiB 0 0 MOUNTPOINT`` (Debian's ``quota`` package); the
  file system must be mounted with ``usrquota`` (ext4 made or tuned with ``-O quota``, XFS with ``uquota``);
- btrfs: a qgroup limit on the home's subvolume (``btrfs qgroup limit``); quotas must be on (``btrfs quota
  enable``), and a new (empty) home is made a subvolume of its own.

Writes past the limit fail with EDQUOT (*Disk quota exceeded*). The server learns its limit and where to read
what is used from ``HPCLAB_DISK_*`` variables; ``hpclab.session()`` shows both. A file system that cannot
hold a quota refuses the start with the reason; ``hpclab-hub check`` says so ahead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: File systems whose quotas the hub can set, and how.
SUPPORTED = {"ext4": "user quota", "xfs": "user quota", "btrfs": "btrfs qgroup"}
BTRFS_SUBVOLUME_INODE = 256


class DiskQuotaUnavailable(Exception):
    """The home's file system cannot hold the configured quota (the message says why and what to do)."""


@dataclass(frozen=True)
class Filesystem:
    """The mount a path lies on (from /proc/self/mountinfo)."""

    mount_point: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def filesystem_of(path: str | os.PathLike[str], mountinfo: str = "/proc/self/mountinfo") -> Filesystem:
    """The mount holding ``path`` (its longest mount-point prefix; the last of stacked mounts)."""
    real = os.path.realpath(path)
    best: Filesystem | None = None
    for line in Path(mountinfo).read_text().splitlines():
        fields = line.split()
        mount_point = _unescape(fields[4])
        after = fields[fields.index("-") + 1 :]
        inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
        if inside and (best is None or len(mount_point) >= len(best.mount_point)):
            best = Filesystem(mount_point, after[0], _unescape(after[1]))
    if best is None:
        raise DiskQuotaUnavailable(f"no mount holds {real}")
    return best


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    if shutil.which(command[0]) is None:
        package = "btrfs-progs" if command[0] == "btrfs" else "quota"
        raise DiskQuotaUnavailable(f"{command[0]} is not installed (apt-get install {package})")
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


def _btrfs_uuid(mount_point: str) -> str:
    result = _run(["btrfs", "filesystem", "show", mount_point])
    for word_before, word in zip(result.stdout.split(), result.stdout.split()[1:], strict=False):
        if word_before == "uuid:":
            return word
    raise DiskQuotaUnavailable(f"cannot tell the btrfs file system at {mount_point}: {result.stderr.strip()}")


def quota_problem(path: str | os.PathLike[str]) -> str:
    """Why a home at ``path`` could not get a quota ('' when its file system has quotas on), without changing anything."""
    try:
        fs = filesystem_of(path)
        if fs.fstype not in SUPPORTED:
            return f"{path} is on {fs.fstype} ({fs.mount_point}), which has no quota HPCLab can set (ext4, XFS or btrfs)"
        if fs.fstype == "btrfs":
            if not (Path("/sys/fs/btrfs") / _btrfs_uuid(fs.mount_point) / "qgroups").is_dir():
                return f"btrfs quotas are off on {fs.mount_point} (btrfs quota enable {fs.mount_point})"
            return ""
        state = _run(["quotaon", "-p", "-u", fs.mount_point])
        if " is on" not in state.stdout:
            return (
                f"user quotas are off on {fs.mount_point} ({fs.fstype} from {fs.source}): mount it with usrquota "
                f"({'tune2fs -O quota on the device first' if fs.fstype == 'ext4' else 'uquota for XFS'}) and run quotaon"
            )
    except (DiskQuotaUnavailable, OSError, subprocess.SubprocessError) as error:
        return str(error)
    return ""


def set_home_quota(home: str, uid: int, gid: int, limit: int) -> dict[str, str]:
    """Limit the home of ``uid`` to ``limit`` bytes; return the server's HPCLAB_DISK_* variables.

    Raises DiskQuotaUnavailable with the reason (no quota on that file system, a tool missing, ...).
    """
    fs = filesystem_of(home)
    if fs.fstype not in SUPPORTED:
        raise DiskQuotaUnavailable(
            f"the home {home} is on {fs.fstype} ({fs.mount_point}), which has no quota HPCLab can set: homes need ext4 or XFS "
            "with user quotas, or btrfs with quotas enabled"
        )
    env = {"HPCLAB_DISK_LIMIT": str(limit), "HPCLAB_DISK_HOME": home}
    if fs.fstype == "btrfs":
        env["HPCLAB_DISK_USED_FILE"] = _btrfs_limit(home, uid, gid, limit, fs)
        return env
    kib = str(-(-limit // 1024))
    result = _run(["setquota", "-u", str(uid), "0", kib, "0", "0", fs.mount_point])
    if result.returncode != 0:
        raise DiskQuotaUnavailable(
            f"cannot set the quota of {home} on {fs.mount_point} ({fs.fstype} from {fs.source}): {result.stderr.strip()} — "
            "the file system needs user quotas: mount it with usrquota (ext4: tune2fs -O quota first; XFS: uquota) "
            "and run quotaon"
        )
    env["HPCLAB_DISK_QUOTA_DEVICE"] = fs.source
    return env


def _btrfs_limit(home: str, uid: int, gid: int, limit: int, fs: Filesystem) -> str:
    """The qgroup limit of the home's subvolume (an empty plain home becomes one); returns its sysfs ``referenced`` file."""
    info = os.lstat(home)
    if info.st_ino != BTRFS_SUBVOLUME_INODE:
        if os.listdir(home):
            raise DiskQuotaUnavailable(
                f"the home {home} is a plain folder on btrfs ({fs.mount_point}); a quota needs a subvolume per home: move it "
                f"aside, `btrfs subvolume create {home}`, copy the files back (cp -a --reflink), then start again"
            )
        os.rmdir(home)
        made = _run(["btrfs", "subvolume", "create", home])
        if made.returncode != 0:
            os.mkdir(home, 0o700)
            os.chown(home, uid, gid)
            raise DiskQuotaUnavailable(f"cannot make the home {home} a btrfs subvolume: {made.stderr.strip()}")
        os.chown(home, uid, gid)
        os.chmod(home, 0o700)
    result = _run(["btrfs", "qgroup", "limit", str(limit), home])
    if result.returncode != 0:
        raise DiskQuotaUnavailable(
            f"cannot limit the home {home} on btrfs ({fs.mount_point}): {result.stderr.strip()} — turn quotas on with "
            f"`btrfs quota enable {fs.mount_point}`"
        )
    subvolume = _run(["btrfs", "inspect-internal", "rootid", home]).stdout.strip()
    return str(Path("/sys/fs/btrfs") / _btrfs_uuid(fs.mount_point) / "qgroups" / f"0_{subvolume}" / "referenced")
