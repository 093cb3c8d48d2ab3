"""Read cgroups: the mounted hierarchies, a process's cgroups, and its memory limit (v2 ``memory.max`` or v1
``memory.limit_in_bytes``). The hub's server groups (hpclab_hub.backends.local.cgroups) use the same parsing."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

#: Values at or above this are cgroup v1's way of saying "unlimited".
ABSURD_LIMIT = 2**60

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class CgroupMount:
    """One mounted cgroup hierarchy: its version, the part of the tree it shows, where, and (v1) its controllers."""

    version: int  # 1 or 2
    root: str  # path inside the cgroup hierarchy that is mounted
    mountpoint: str  # where it is mounted
    controllers: frozenset[str] = frozenset()  # v1 only; a cgroup2 mount lists them in cgroup.controllers

    def directory_of(self, cgroup_path: str) -> Path:
        """The folder of ``cgroup_path`` (as /proc/PID/cgroup names it) below this mount; the mount itself when
        the path lies outside the mounted part (e.g. in a container)."""
        root = self.root.rstrip("/")
        inside = cgroup_path == root or cgroup_path.startswith(root + "/")
        rel = cgroup_path[len(root) :].strip("/") if inside else ""
        return Path(self.mountpoint) / rel if rel else Path(self.mountpoint)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def cgroup_mounts(mountinfo: str) -> list[CgroupMount]:
    """Every cgroup2 mount and cgroup v1 hierarchy listed in a /proc/PID/mountinfo text."""
    mounts = []
    for line in mountinfo.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        pre_fields, post_fields = pre.split(), post.split()
        if len(pre_fields) < 5 or len(post_fields) < 3:
            continue
        root, mountpoint = (_OCTAL_ESCAPE.sub(lambda m: chr(int(m[1], 8)), f) for f in pre_fields[3:5])
        if post_fields[0] == "cgroup2":
            mounts.append(CgroupMount(2, root, mountpoint))
        elif post_fields[0] == "cgroup":
            mounts.append(CgroupMount(1, root, mountpoint, frozenset(post_fields[2].split(","))))
    return mounts


def process_cgroups(proc_cgroup: str) -> dict[str, str]:
    """A /proc/PID/cgroup text as controller (or 'unified' for cgroup2) -> the process's cgroup path."""
    paths = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier_id, controllers, path = parts
        if hier_id == "0" and controllers == "":
            paths["unified"] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


def _memory_mounts(mountinfo: str | None) -> list[CgroupMount]:
    """cgroup2 mounts and cgroup v1 mounts carrying the memory controller."""
    if mountinfo is None:  # no /proc: assume the usual layout
        return [CgroupMount(2, "/", "/sys/fs/cgroup"), CgroupMount(1, "/", "/sys/fs/cgroup/memory", frozenset({"memory"}))]
    return [m for m in cgroup_mounts(mountinfo) if m.version == 2 or "memory" in m.controllers]


def _parse_limit(text: str | None) -> int | None:
    if text is None:
        return None
    value = text.strip()
    if value in ("", "max"):
        return None
    try:
        limit = int(value)
    except ValueError:
        return None
    return limit if 0 < limit < ABSURD_LIMIT else None


def _limit_in_mount(mount: CgroupMount, cg_path: str) -> int | None:
    """Smallest limit on this cgroup and its ancestors visible below the mount."""
    filename = "memory.max" if mount.version == 2 else "memory.limit_in_bytes"
    base = Path(mount.mountpoint)
    directory = mount.directory_of(cg_path)
    best: int | None = None
    while True:
        limit = _parse_limit(_read(directory / filename))
        if limit is not None and (best is None or limit < best):
            best = limit
        if directory == base or base not in directory.parents:
            return best
        directory = directory.parent


def cgroup_memory_limit(proc_dir: str | os.PathLike[str] = "/proc/self") -> tuple[int, str] | None:
    """Return ``(bytes, "cgroup2" | "cgroup1")`` for the tightest cgroup memory limit, or None.

    Follows ``<proc_dir>/cgroup`` into the hierarchies listed in ``<proc_dir>/mountinfo``
    and takes the minimum over our cgroup and its ancestors, because SLURM and
    container runtimes often put the limit on a parent (job) cgroup.
    """
    proc = Path(proc_dir)
    own = process_cgroups(_read(proc / "cgroup") or "")
    paths = {version: own[key] for version, key in ((2, "unified"), (1, "memory")) if key in own}
    best: tuple[int, str] | None = None
    for mount in _memory_mounts(_read(proc / "mountinfo")):
        if mount.version not in paths:
            continue
        limit = _limit_in_mount(mount, paths[mount.version])
        if limit is not None and (best is None or limit < best[0]):
            best = (limit, f"cgroup{mount.version}")
    return best
