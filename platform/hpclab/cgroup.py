"""Read the memory limit of this process's cgroup (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

#: Values at or above this are cgroup v1's way of saying "unlimited".
ABSURD_LIMIT = 2**60

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class _Mount:
    root: str  # path inside the cgroup hierarchy that is mounted
    mountpoint: str  # where it is mounted
    version: int  # 1 or 2


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _memory_mounts(mountinfo: str | None) -> list[_Mount]:
    """cgroup2 mounts and cgroup v1 mounts carrying the memory controller."""
    if mountinfo is None:  # no /proc: assume the usual layout
        return [_Mount("/", "/sys/fs/cgroup", 2), _Mount("/", "/sys/fs/cgroup/memory", 1)]
    mounts = []
    for line in mountinfo.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        pre_fields, post_fields = pre.split(), post.split()
        if len(pre_fields) < 5 or len(post_fields) < 3:
            continue
        fstype, super_opts = post_fields[0], post_fields[2].split(",")
        root, mountpoint = (_OCTAL_ESCAPE.sub(lambda m: chr(int(m[1], 8)), f) for f in pre_fields[3:5])
        if fstype == "cgroup2":
            mounts.append(_Mount(root, mountpoint, 2))
        elif fstype == "cgroup" and "memory" in super_opts:
            mounts.append(_Mount(root, mountpoint, 1))
    return mounts


def _cgroup_paths(proc_cgroup: str | None) -> dict[int, str]:
    """Map cgroup version -> this process's path in the (memory) hierarchy."""
    paths: dict[int, str] = {}
    for line in (proc_cgroup or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier_id, controllers, path = parts
        if hier_id == "0" and controllers == "":
            paths[2] = path
        elif "memory" in controllers.split(","):
            paths[1] = path
    return paths


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


def _limit_in_mount(mount: _Mount, cg_path: str) -> int | None:
    """Smallest limit on this cgroup and its ancestors visible below the mount."""
    root = mount.root.rstrip("/")
    if cg_path == root or cg_path.startswith(root + "/"):
        rel = cg_path[len(root):].strip("/")
    else:  # our cgroup is outside the mounted part (e.g. container): use the mount itself
        rel = ""
    filename = "memory.max" if mount.version == 2 else "memory.limit_in_bytes"
    base = Path(mount.mountpoint)
    directory = base / rel if rel else base
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
    paths = _cgroup_paths(_read(proc / "cgroup"))
    best: tuple[int, str] | None = None
    for mount in _memory_mounts(_read(proc / "mountinfo")):
        if mount.version not in paths:
            continue
        limit = _limit_in_mount(mount, paths[mount.version])
        if limit is not None and (best is None or limit < best[0]):
            best = (limit, f"cgroup{mount.version}")
    return best
