"""Share a machine's cores, memory and GPUs among local servers: cores spread without overlap, GPUs exclusive,
memory limits that never add up past the machine's."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hpclab_hub.config.model import Deployment, LocalBackend, Profile
from hpclab_hub.config.units import format_memory


class PoolFull(Exception):
    """The pool cannot give a start what its profile needs right now; the message says what is in use."""


class NoFreeGPU(PoolFull):
    """A GPU profile was requested but the pool cannot hand out enough GPUs."""


class NoMemoryLeft(PoolFull):
    """The start's memory limit does not fit in what the other servers' limits leave of the machine."""


@dataclass(frozen=True)
class Allocation:
    """What one server was given."""

    cpu_ids: tuple[int, ...]
    gpu_ids: tuple[str, ...] = ()
    memory: int = 0  # bytes of the server's memory limit that the pool counts (0: the profile has none)

    def as_state(self) -> dict[str, Any]:
        """JSON-friendly form stored in the spawner state (survives hub restarts)."""
        return {"cpu_ids": list(self.cpu_ids), "gpu_ids": list(self.gpu_ids), "memory": self.memory}

    @classmethod
    def from_state(cls, state: dict) -> Allocation:
        """Rebuild from ``as_state()`` output."""
        return cls(
            tuple(int(c) for c in state.get("cpu_ids", ())),
            tuple(str(g) for g in state.get("gpu_ids", ())),
            int(state.get("memory", 0)),
        )


@dataclass
class ResourcePool:
    """Cores and GPUs of one machine and who holds which; every change is synchronous (no await), so race-free."""

    cpu_ids: tuple[int, ...]
    gpu_ids: tuple[str, ...] = ()
    holders: dict[str, Allocation] = field(default_factory=dict)
    memory: int | None = None  # bytes the servers' memory limits may add up to; None = not counted

    def memory_in_use(self) -> int:
        """The memory limits of the servers holding a share, added up."""
        return sum(a.memory for a in self.holders.values())

    def cpu_load(self) -> Counter:
        """How many servers are pinned to each CPU."""
        load = Counter({cpu: 0 for cpu in self.cpu_ids})
        for allocation in self.holders.values():
            load.update(allocation.cpu_ids)
        return load

    def free_gpus(self) -> list[str]:
        """GPU ids nobody holds, in pool order."""
        taken = {g for a in self.holders.values() for g in a.gpu_ids}
        return [g for g in self.gpu_ids if g not in taken]

    def allocate(self, owner: str, cpus: int, gpus: int = 0, memory: int = 0) -> Allocation:
        """Give ``owner`` the least-used cores, free GPUs and ``memory`` bytes; raise NoFreeGPU rather than share a
        GPU, NoMemoryLeft rather than let the servers' memory limits add up past the machine's."""
        self.release(owner)
        if self.memory is not None and memory and self.memory_in_use() + memory > self.memory:
            used = self.memory_in_use()
            raise NoMemoryLeft(
                f"Not enough memory free on this server: this profile needs {format_memory(memory)}, "
                f"{format_memory(used)} of {format_memory(self.memory)} are held by {len(self.holders)} running "
                f"server{'' if len(self.holders) == 1 else 's'} ({format_memory(max(0, self.memory - used))} free). "
                "Try again later or pick a smaller profile."
            )
        free = self.free_gpus()
        if gpus > len(free):
            busy = len(self.gpu_ids) - len(free)
            raise NoFreeGPU(
                f"No free GPU: this profile needs {gpus}, {busy} of {len(self.gpu_ids)} GPUs on this server are in use."
                " Try again later or pick a CPU profile."
            )
        load = self.cpu_load()
        ranked = sorted(self.cpu_ids, key=lambda cpu: (load[cpu], cpu))
        chosen = tuple(sorted(ranked[: max(1, min(cpus, len(ranked)))]))
        allocation = Allocation(chosen, tuple(free[:gpus]), memory)
        self.holders[owner] = allocation
        return allocation

    def claim(self, owner: str, allocation: Allocation) -> None:
        """Record an allocation made before a hub restart (from spawner state)."""
        self.holders[owner] = allocation

    def release(self, owner: str) -> None:
        """Return what ``owner`` held to the pool (no-op if nothing)."""
        self.holders.pop(owner, None)


def detect_gpus() -> tuple[str, ...]:
    """GPU indices reported by nvidia-smi; empty where there is no NVIDIA driver."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return ()
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return ()
    return tuple(line.strip() for line in out.splitlines() if line.strip())


def hub_cpus() -> tuple[int, ...]:
    """CPUs the hub process itself may run on."""
    return tuple(sorted(os.sched_getaffinity(0)))


def machine_memory() -> int:
    """Bytes of physical memory of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def pool_memory(memory: str | int, reserved: int) -> int:
    """What a local backend's servers' memory limits may add up to: ``memory``, or for 'auto' the machine's less ``reserved``."""
    return max(0, machine_memory() - reserved) if memory == "auto" else int(memory)


_POOLS: dict[str, ResourcePool] = {}


def pool_for(name: str, cpus: str | list[int], gpus: str | list, memory: int | None = None) -> ResourcePool:
    """The hub-wide pool of the local backend ``name`` (one per backend, created on first use; ``memory`` follows the YAML)."""
    if name not in _POOLS:
        cpu_ids = hub_cpus() if cpus == "auto" else tuple(int(c) for c in cpus)
        gpu_ids = detect_gpus() if gpus == "auto" else tuple(str(g) for g in gpus)
        _POOLS[name] = ResourcePool(cpu_ids, gpu_ids)
    _POOLS[name].memory = memory
    return _POOLS[name]


def pool_of(deployment: Deployment, profile: Profile) -> ResourcePool:
    """The core/GPU/memory pool of the profile's local backend (one per backend, shared by its servers)."""
    backend = deployment.backends[profile.backend]
    assert isinstance(backend, LocalBackend)
    return pool_for(profile.backend, backend.cpus, backend.gpus, pool_memory(backend.memory, backend.memory_reserved))
