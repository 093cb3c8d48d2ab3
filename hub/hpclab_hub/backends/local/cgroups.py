"""Kernel-enforced limits for one local server: its own cgroup (v1 controllers where mounted, else cgroup2).

Every process of the server (kernels, terminals, anything started with ``setsid`` or a double fork)
lives in the server's cgroup, so the memory limit counts all of them together (shared mappings and
swap included), the cores are a cpuset the user cannot widen, the number of processes is bounded,
GPUs outside the assignment cannot be opened (v1 ``devices``; on cgroup2 a device program attached to
the group, :mod:`hpclab_hub.backends.local.devices_bpf`), and stopping the server kills
everything in the group. The hub creates the group, the child joins it before ``exec`` (as root,
before dropping to the user's account), and the paths are kept in the spawner's state so a restarted
hub finds the group again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from hpclab.cgroup import cgroup_mounts, process_cgroups
from hpclab_hub.backends.local.devices_bpf import DeviceFenceError, fence

#: v1 controllers HPCLab uses; memory, cpuset and pids are required, devices, freezer and cpu used when present.
V1_REQUIRED = ("memory", "cpuset", "pids")
V1_OPTIONAL = ("devices", "freezer", "cpu")
V2_CONTROLLERS = ("memory", "cpuset", "pids")
PARENT = "hpclab"
#: cgroup2: the leaf the hub's own processes live in, beside PARENT (no processes in a group that delegates controllers)
HUB_LEAF = "hub"
#: The kernel's CPU weight of a task at niceness 0..19 (sched_prio_to_weight): the servers' parent group
#: weighs what one process at ``server_nice`` would, against the hub's 1024.
NICE_WEIGHT = (1024, 820, 655, 526, 423, 335, 272, 215, 172, 137, 110, 87, 70, 56, 45, 36, 29, 23, 18, 15)

_LAYOUTS: dict[str, tuple[int, dict[str, Path]]] = {}


class CgroupUnavailable(Exception):
    """This machine's cgroups cannot hold a server (not mounted, not writable, a controller missing)."""


@dataclass(frozen=True)
class ServerLimits:
    """What the kernel enforces for one server."""

    cpu_ids: tuple[int, ...]
    memory: int | None = None
    pids: int | None = None
    denied_devices: tuple[tuple[int, int], ...] = ()  # (major, minor) of GPUs assigned to someone else or no one
    allowed_devices: tuple[tuple[int, int], ...] = ()  # (major, minor) of the server's own GPUs (cgroup2's fence)
    servers_cpu_shares: int | None = None  # CPU weight of all servers together (v1 cpu.shares units; the hub has 1024)


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def group_name(hub_key: str, account: str, server_name: str = "") -> str:
    """Directory name of one server's cgroup: unique per hub (data folder), account and named server."""
    key = hashlib.sha256(hub_key.encode()).hexdigest()[:8]
    suffix = "-" + hashlib.sha256(server_name.encode()).hexdigest()[:8] if server_name else ""
    return f"{key}-{account}{suffix}"


@dataclass
class ServerCgroup:
    """One server's cgroup: a directory per v1 controller, or one cgroup2 directory ('unified')."""

    version: int
    paths: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what could not be enforced on this host (for the hub log)

    # --- where the controllers are ---------------------------------------------------------------

    @staticmethod
    def layout(proc: str = "/proc/self") -> tuple[int, dict[str, Path]]:
        """(version, controller -> the hub's own cgroup directory) to create server groups under.

        Worked out once per process: on cgroup2 the hub moves itself into a ``hub`` leaf at the first
        start, and later starts must keep using the group it was started in.
        """
        if proc not in _LAYOUTS:
            _LAYOUTS[proc] = ServerCgroup._find_layout(proc)
        return _LAYOUTS[proc]

    @staticmethod
    def _find_layout(proc: str) -> tuple[int, dict[str, Path]]:
        mounts = cgroup_mounts(_read(Path(proc) / "mountinfo"))
        own = process_cgroups(_read(Path(proc) / "cgroup"))
        v1 = {c: m for m in mounts if m.version == 1 for c in m.controllers if c in V1_REQUIRED + V1_OPTIONAL}
        if all(c in v1 for c in V1_REQUIRED):
            return 1, {c: m.directory_of(own.get(c, "/")) for c, m in v1.items()}
        unified = next((m for m in mounts if m.version == 2), None)
        if unified is not None:
            own_path = own.get("unified", "/")
            if own_path.rstrip("/").rsplit("/", 1)[-1] == HUB_LEAF:
                # the hub already in its leaf: moved there by an earlier start of this hub, or placed there by systemd
                # (DelegateSubgroup=hub in deploy/systemd/hpclab-hub.service); the servers go beside it
                own_path = own_path.rstrip("/").rsplit("/", 1)[0] or "/"
            base = unified.directory_of(own_path)
            available = set(_read(base / "cgroup.controllers").split())
            missing = [c for c in V2_CONTROLLERS if c not in available]
            if not missing:
                return 2, {"unified": base}
            raise CgroupUnavailable(f"cgroup2 at {base} lacks the controllers {', '.join(missing)}")
        missing = [c for c in V1_REQUIRED if c not in v1]
        raise CgroupUnavailable(f"no cgroup2 mount and no cgroup v1 hierarchy for {', '.join(missing)}")

    @classmethod
    def create(cls, name: str, limits: ServerLimits, proc: str = "/proc/self") -> ServerCgroup:
        """Make the server's group (replacing a stale empty one of the same name) and write its limits."""
        version, bases = cls.layout(proc)
        group = cls(version)
        try:
            if version == 1:
                group._create_v1(bases, name, limits)
            else:
                group._create_v2(bases["unified"], name, limits)
        except OSError as error:
            group.remove()
            raise CgroupUnavailable(f"cannot set up the server's cgroup: {error}") from None
        except CgroupUnavailable:
            group.remove()
            raise
        return group

    def _create_v1(self, bases: dict[str, Path], name: str, limits: ServerLimits) -> None:
        for controller, base in bases.items():
            parent = base / PARENT
            parent.mkdir(exist_ok=True)
            if controller == "cpuset":
                for key in ("cpuset.cpus", "cpuset.mems"):  # a v1 cpuset starts empty: inherit the hub's
                    if not _read(parent / key).strip():
                        _write(parent / key, _read(base / key).strip())
            if controller == "cpu" and limits.servers_cpu_shares:  # all servers against the hub, not one each
                _write(parent / "cpu.shares", str(limits.servers_cpu_shares))
            path = parent / name
            path.mkdir(exist_ok=True)
            self.paths[controller] = str(path)
        memory = Path(self.paths["memory"])
        if limits.memory:
            _write(memory / "memory.limit_in_bytes", str(limits.memory))
            if (memory / "memory.memsw.limit_in_bytes").exists():  # RAM + swap: no escape into swap
                _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory))
            else:
                self.notes.append("swap is not limited (the kernel has no swap accounting: swapaccount=1)")
        cpuset = Path(self.paths["cpuset"])
        _write(cpuset / "cpuset.cpus", ",".join(map(str, limits.cpu_ids)))
        _write(cpuset / "cpuset.mems", _read(cpuset.parent / "cpuset.mems").strip())
        if limits.pids:
            _write(Path(self.paths["pids"]) / "pids.max", str(limits.pids))
        if limits.denied_devices:
            if "devices" not in self.paths:
                raise CgroupUnavailable("GPUs need the cgroup v1 devices controller, which is not mounted")
            for major, minor in limits.denied_devices:
                _write(Path(self.paths["devices"]) / "devices.deny", f"c {major}:{minor} rwm")

    def _create_v2(self, base: Path, name: str, limits: ServerLimits) -> None:
        enable = " ".join(f"+{c}" for c in V2_CONTROLLERS)
        wanted = set(V2_CONTROLLERS)
        if not wanted <= set(_read(base / "cgroup.subtree_control").split()):
            procs = _read(base / "cgroup.procs").split()
            if procs and base != Path("/sys/fs/cgroup"):
                # no internal processes: the hub moves itself into a leaf before delegating controllers
                leaf = base / HUB_LEAF
                leaf.mkdir(exist_ok=True)
                for pid in procs:
                    try:
                        _write(leaf / "cgroup.procs", pid)
                    except OSError as error:
                        if error.errno != errno.ESRCH:
                            raise
            _write(base / "cgroup.subtree_control", enable)
        parent = base / PARENT
        parent.mkdir(exist_ok=True)
        if not wanted <= set(_read(parent / "cgroup.subtree_control").split()):
            _write(parent / "cgroup.subtree_control", enable)
        if limits.servers_cpu_shares:
            self._weigh_v2(base, parent, limits.servers_cpu_shares)
        path = parent / name
        path.mkdir(exist_ok=True)
        self.paths["unified"] = str(path)
        if limits.memory:
            _write(path / "memory.max", str(limits.memory))
            if (path / "memory.swap.max").exists():  # RAM + swap within the limit, as v1's memsw
                _write(path / "memory.swap.max", "0")
            else:
                self.notes.append("swap is not limited (no memory.swap.max: swapaccount=0 or no swap controller)")
        if (path / "memory.oom.group").exists():
            # the process over the limit dies, not the whole server (as on v1): the user sees one dead kernel
            # and keeps her session; set explicitly, whatever a parent's default
            _write(path / "memory.oom.group", "0")
        if limits.denied_devices or limits.allowed_devices:
            fence_devices_v2(path, limits)
        _write(path / "cpuset.cpus", ",".join(map(str, limits.cpu_ids)))
        if limits.pids:
            _write(path / "pids.max", str(limits.pids))

    def _weigh_v2(self, base: Path, parent: Path, shares: int) -> None:
        """cgroup2: the servers' parent group gets cpu.weight in proportion to ``shares`` (100 = the hub's)."""
        try:
            if "cpu" not in _read(base / "cgroup.subtree_control").split():
                _write(base / "cgroup.subtree_control", "+cpu")
            _write(parent / "cpu.weight", str(max(1, round(shares * 100 / 1024))))
        except OSError as error:
            self.notes.append(f"servers share the CPU with the hub at its priority (cgroup2 cpu controller: {error.strerror})")

    # --- membership --------------------------------------------------------------------------

    def attach(self, pid: int = 0) -> None:
        """Move ``pid`` (default: the calling process) into the group; run in the child before exec."""
        text = str(pid or os.getpid())
        for path in self.paths.values():
            _write(Path(path) / "cgroup.procs", text)

    def pids(self) -> set[int]:
        """Every process in the group now."""
        found: set[int] = set()
        for path in self.paths.values():
            found.update(int(p) for p in _read(Path(path) / "cgroup.procs").split())
        return found

    def contains(self, pid: int) -> bool:
        return pid in self.pids()

    def exists(self) -> bool:
        return bool(self.paths) and all(Path(p).is_dir() for p in self.paths.values())

    # --- the end -----------------------------------------------------------------------------

    def kill_all(self, timeout: float = 10) -> set[int]:
        """SIGKILL every process in the group (frozen first where v1's freezer is there: no fork escapes).

        Returns the processes still there after ``timeout`` (normally none).
        """
        deadline = time.monotonic() + timeout
        kill_file = Path(self.paths.get("unified", "")) / "cgroup.kill"
        if self.version == 2 and kill_file.exists():
            with contextlib.suppress(OSError):  # older kernels: the loop below kills one by one
                _write(kill_file, "1")
        freezer = Path(self.paths["freezer"]) / "freezer.state" if "freezer" in self.paths else None
        while True:
            left = self.pids()
            if not left or time.monotonic() > deadline:
                break
            if freezer is not None:
                _set_freezer(freezer, "FROZEN", deadline)
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if freezer is not None:
                _set_freezer(freezer, "THAWED", deadline)  # killed processes die once thawed
            time.sleep(0.05)
        return self.pids()

    def remove(self) -> None:
        """Remove the (empty) group directories; kept if processes remain."""
        for path in list(self.paths.values()):
            for _ in range(20):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as error:
                    if error.errno != errno.EBUSY:
                        break
                    time.sleep(0.05)

    def oom_kills(self) -> int:
        """How many processes the kernel has killed in this group for going over its memory limit."""
        if self.version == 1:
            text = _read(Path(self.paths.get("memory", "")) / "memory.oom_control")
        else:
            text = _read(Path(self.paths.get("unified", "")) / "memory.events")
        match = re.search(r"^oom_kill (\d+)$", text, re.MULTILINE)
        return int(match[1]) if match else 0

    def memory_in_use(self) -> int:
        """Bytes the group's processes hold now (v2's memory.current, v1's memory.usage_in_bytes); 0 if unreadable."""
        if self.version == 1:
            text = _read(Path(self.paths.get("memory", "")) / "memory.usage_in_bytes")
        else:
            text = _read(Path(self.paths.get("unified", "")) / "memory.current")
        return int(text) if text.strip().isdigit() else 0

    # --- state -------------------------------------------------------------------------------

    def as_state(self) -> dict:
        return {"version": self.version, "paths": dict(self.paths)}

    @classmethod
    def from_state(cls, state: dict) -> ServerCgroup | None:
        if not state or not state.get("paths"):
            return None
        return cls(int(state["version"]), dict(state["paths"]))


def fence_devices_v2(path: Path, limits: ServerLimits) -> int:
    """cgroup2: attach the device program that lets the group open only its own GPUs (returns its id)."""

    try:
        return fence(str(path), limits.allowed_devices, limits.denied_devices)
    except DeviceFenceError as error:
        raise CgroupUnavailable(f"GPUs cannot be fenced on cgroup2: {error}") from None


def _set_freezer(state_file: Path, state: str, deadline: float) -> None:
    try:
        _write(state_file, state)
    except OSError:
        return
    while _read(state_file).strip() not in (state, "") and time.monotonic() < deadline:
        time.sleep(0.01)


def device_numbers(path: str) -> tuple[int, int] | None:
    """(major, minor) of a character device node, or None if it is missing or not a device."""
    import stat

    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISCHR(info.st_mode):
        return None
    return os.major(info.st_rdev), os.minor(info.st_rdev)
