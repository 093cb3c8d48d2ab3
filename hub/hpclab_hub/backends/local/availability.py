"""What a profile can get now on a local backend: free cores, GPUs and memory of the hub's pool, or why it never can."""

from __future__ import annotations

from hpclab_hub.backends import Availability, plural
from hpclab_hub.backends.local.resources import ResourcePool
from hpclab_hub.config.model import Profile
from hpclab_hub.config.units import format_memory


def local_blocked(profile: Profile, pool: ResourcePool) -> str:
    """Why ``profile`` can never start on this local backend ('' if it can): more GPUs or memory than exist."""
    if profile.gpus > len(pool.gpu_ids):
        have = "no GPU" if not pool.gpu_ids else f"only {plural(len(pool.gpu_ids), 'GPU')}"
        return f"This server has {have}; the profile needs {plural(profile.gpus, 'GPU')}."
    if pool.memory is not None and profile.memory and profile.memory > pool.memory:
        return (
            f"This server shares out {format_memory(pool.memory)} of memory to servers; the profile needs "
            f"{format_memory(profile.memory)}."
        )
    return ""


def local_availability(profile: Profile, pool: ResourcePool) -> Availability:
    """Free cores and GPUs of a local backend's pool, or why the profile cannot start there."""
    blocked = local_blocked(profile, pool)
    if blocked:
        return Availability(blocked=blocked)
    load = pool.cpu_load()
    idle = sum(1 for count in load.values() if count == 0)
    note = f"This server: {idle} of {plural(len(pool.cpu_ids), 'core')} idle"
    if pool.gpu_ids:
        note += f", {len(pool.free_gpus())} of {plural(len(pool.gpu_ids), 'GPU')} free"
    if pool.memory is not None:
        note += f", {format_memory(max(0, pool.memory - pool.memory_in_use()))} of {format_memory(pool.memory)} memory free"
    if profile.gpus > len(pool.free_gpus()):
        note += " (all GPUs are in use now; try again later)"
    elif pool.memory is not None and profile.memory and pool.memory_in_use() + profile.memory > pool.memory:
        note += " (not enough memory free for this profile now; try again later)"
    return Availability(note=note + ".")
