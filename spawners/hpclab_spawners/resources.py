"""Share a machine's cores and GPUs among local servers: cores spread without overlap, GPUs exclusive."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field


class NoFreeGPU(Exception):
    """A GPU profile was requested but the pool cannot hand out enough GPUs."""


@dataclass(frozen=True)
class Allocation:
    """What one server was given."""

    cpu_ids: tuple[int, ...]
    gpu_ids: tuple[str, ...] = ()

    def as_state(self) -> dict[str, list]:
        """JSON-friendly form stored in the spawner state (survives hub restarts)."""
        return {"cpu_ids": list(self.cpu_ids), "gpu_ids": list(self.gpu_ids)}

    @classmethod
    def from_state(cls, state: dict) -> "Allocation":
        """Rebuild from ``as_state()`` output."""
        return cls(tuple(int(c) for c in state.get("cpu_ids", ())), tuple(str(g) for g in state.get("gpu_ids", ())))


@dataclass
class ResourcePool:
    """Cores and GPUs of one machine and who holds which; every change is synchronous (no await), so race-free."""

    cpu_ids: tuple[int, ...]
    gpu_ids: tuple[str, ...] = ()
    holders: dict[str, Allocation] = field(default_factory=dict)

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

    def allocate(self, owner: str, cpus: int, gpus: int = 0) -> Allocation:
        """Give ``owner`` the least-used cores and free GPUs; raise NoFreeGPU rather than share a GPU."""
        self.release(owner)
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
        allocation = Allocation(chosen, tuple(free[:gpus]))
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


_POOLS: dict[str, ResourcePool] = {}


def pool_for(name: str, cpus: str | list[int], gpus: str | list) -> ResourcePool:
    """The hub-wide pool of the local backend ``name`` (one per backend, created on first use)."""
    if name not in _POOLS:
        cpu_ids = hub_cpus() if cpus == "auto" else tuple(int(c) for c in cpus)
        gpu_ids = detect_gpus() if gpus == "auto" else tuple(str(g) for g in gpus)
        _POOLS[name] = ResourcePool(cpu_ids, gpu_ids)
    return _POOLS[name]
