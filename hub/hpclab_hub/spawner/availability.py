"""What each profile can get right now on its backend: a live line for the form, or why it cannot start here.

Local backends answer from the hub's own pool (free cores and GPUs); SLURM backends from one
``sinfo --json`` and one ``scontrol show partition`` per form (partition up? GPUs in it?). A
profile that can never start here (a GPU profile on a server without GPUs, a partition that is
down or missing) is shown disabled with the reason, and refused if a forged form asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from hpclab_hub.config.model import Profile
from hpclab_hub.config.units import format_duration, format_memory, parse_duration
from hpclab_hub.backends.local.resources import ResourcePool

if TYPE_CHECKING:  # pragma: no cover
    from hpclab_hub.spawner.spawner import HPCLabSpawner


@dataclass(frozen=True)
class Availability:
    """One profile's live state: ``note`` (what is free now) and ``blocked`` (why it cannot start; '' if it can)."""

    note: str = ""
    blocked: str = ""


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def local_blocked(profile: Profile, pool: ResourcePool) -> str:
    """Why ``profile`` can never start on this local backend ('' if it can): more GPUs or memory than exist."""
    if profile.gpus > len(pool.gpu_ids):
        have = "no GPU" if not pool.gpu_ids else f"only {_plural(len(pool.gpu_ids), 'GPU')}"
        return f"This server has {have}; the profile needs {_plural(profile.gpus, 'GPU')}."
    if pool.memory is not None and profile.memory and profile.memory > pool.memory:
        return (f"This server shares out {format_memory(pool.memory)} of memory to servers; the profile needs "
                f"{format_memory(profile.memory)}.")
    return ""


def local_availability(profile: Profile, pool: ResourcePool) -> Availability:
    """Free cores and GPUs of a local backend's pool, or why the profile cannot start there."""
    blocked = local_blocked(profile, pool)
    if blocked:
        return Availability(blocked=blocked)
    load = pool.cpu_load()
    idle = sum(1 for count in load.values() if count == 0)
    note = f"This server: {idle} of {_plural(len(pool.cpu_ids), 'core')} idle"
    if pool.gpu_ids:
        note += f", {len(pool.free_gpus())} of {_plural(len(pool.gpu_ids), 'GPU')} free"
    if pool.memory is not None:
        note += f", {format_memory(max(0, pool.memory - pool.memory_in_use()))} of {format_memory(pool.memory)} memory free"
    if profile.gpus > len(pool.free_gpus()):
        note += " (all GPUs are in use now; try again later)"
    elif pool.memory is not None and profile.memory and pool.memory_in_use() + profile.memory > pool.memory:
        note += " (not enough memory free for this profile now; try again later)"
    return Availability(note=note + ".")


class ClusterState(NamedTuple):
    """A SLURM backend's partitions now: free cores and GPUs (sinfo), settings (scontrol), reserved cores."""

    states: dict
    settings: dict
    reserved: dict[str, dict[str, int]] = {}


def _reserved_text(held: dict[str, int]) -> str:
    """'; 1 core held by reservation course' (what jobs outside those reservations cannot use)."""
    if not held:
        return ""
    cores = sum(held.values())
    names = ", ".join(sorted(held))
    return f"; {_plural(cores, 'core')} held by reservation{'s' if len(held) > 1 else ''} {names}"


def slurm_availability(profile: Profile, partition: str | None, states: dict, settings: dict,
                       reserved: dict[str, dict[str, int]] | None = None) -> Availability:
    """A SLURM profile's partition now: free cores/GPUs, or why it cannot start (missing, down, no GPUs).

    Cores held by active reservations are not counted as free: a job outside them cannot use them.
    """
    if not partition:
        return Availability(note="Runs in the cluster's default partition.")
    state = states.get(partition)
    setting = settings.get(partition)
    if setting is None and state is None:
        return Availability(blocked=f"The cluster has no partition {partition!r}.")
    up = (setting or {}).get("State", "UP")
    if up != "UP":
        return Availability(blocked=f"Partition {partition} is {up.lower()} (the cluster's admins closed it).")
    if state is None or state.nodes == 0:
        return Availability(blocked=f"Partition {partition} has no nodes.")
    if profile.gpus and state.gpus_total == 0:
        return Availability(blocked=f"Partition {partition} has no GPUs; the profile needs {_plural(profile.gpus, 'GPU')}.")
    held = (reserved or {}).get(partition, {})
    free = max(0, state.cpus_free - sum(held.values()))
    gpus = f", {state.gpus_free} of {state.gpus_total} GPUs free" if state.gpus_total else ""
    return Availability(note=f"Partition {partition}: {_plural(state.nodes, 'node')}, {free} of {state.cpus_total} cores free{gpus} now"
                             f"{_reserved_text(held)}.")


def slurm_partition(profile: Profile, backend) -> str | None:
    """The partition a SLURM profile's job goes to: its own, else its backend's (None: the cluster's default)."""
    return (profile.slurm.partition if profile.slurm and profile.slurm.partition else None) or backend.partition


def partition_max_time(partition: str | None, settings: dict) -> tuple[str, int] | None:
    """(partition, its MaxTime in seconds) from ``scontrol show partition`` settings; None if unlimited or unknown.

    No partition means the cluster's default one (``Default=YES``).
    """
    if partition is None:
        partition = next((name for name, fields in settings.items() if fields.get("Default") == "YES"), None)
    max_time = (settings.get(partition or "") or {}).get("MaxTime", "UNLIMITED")
    try:
        return partition, parse_duration(max_time)
    except ValueError:  # UNLIMITED, INFINITE, NONE, or a shape this hub does not read: nothing to hold against
        return None


@dataclass(frozen=True)
class TimeCap:
    """The longest wall time the cluster lets a job run, and what sets it ("partition cpu's MaxTime")."""

    seconds: int
    source: str


def too_long_refusal(profile: Profile, cap: TimeCap | None) -> str:
    """Why ``profile``'s (chosen) wall time is above the cluster's cap ('' if it is not, or there is none).

    The message names ``time_limit`` and the limit, like a choice out of bounds.
    """
    if cap is None or not profile.time_limit or profile.time_limit <= cap.seconds:
        return ""
    hint = f"; choose at most {format_duration(cap.seconds)}" if profile.choices and profile.choices.time_limit else ""
    return f"time_limit: {format_duration(profile.time_limit)} is above {cap.source} {format_duration(cap.seconds)}{hint}"


def parse_qos_max_wall(text: str) -> dict[str, int]:
    """QoS name -> MaxWall in seconds, from ``sacctmgr -nP show qos format=name,maxwall`` (no limit: left out)."""
    limits = {}
    for line in text.splitlines():
        name, _, max_wall = line.strip().partition("|")
        try:
            if name and max_wall:
                limits[name] = parse_duration(max_wall)
        except ValueError:
            continue
    return limits


async def qos_max_wall(profile: Profile, backend) -> TimeCap | None:
    """The MaxWall of the QoS ``profile``'s job runs under; None without a QoS, a MaxWall, or an answer.

    Asked of the accounting (sacctmgr) only when the profile names a QoS; a cluster without
    accounting, or one that cannot answer, caps nothing (slurmctld enforces it, where it does).
    """
    from hpclab_hub.backends.slurm.client import SlurmClient, SlurmError

    qos = profile.slurm.qos if profile.slurm else None
    if not qos:
        return None
    client = SlurmClient.for_backend(backend)
    try:
        limits = parse_qos_max_wall(await client.run(["sacctmgr", "-nP", "show", "qos", qos, "format=name,maxwall"]))
    except (SlurmError, OSError):
        return None
    return TimeCap(limits[qos], f"QoS {qos}'s MaxWall") if qos in limits else None


async def cluster_time_cap(profile: Profile, backend, answer: ClusterState | str) -> TimeCap | None:
    """The tightest of the job's partition MaxTime and QoS MaxWall: what a start and every extension must fit.

    ``answer`` is ``cluster_state``'s; what the cluster cannot say caps nothing (sbatch and scontrol decide).
    """
    caps = []
    if not isinstance(answer, str):
        limit = partition_max_time(slurm_partition(profile, backend), answer[1])
        if limit is not None:
            caps.append(TimeCap(limit[1], f"partition {limit[0]}'s MaxTime"))
    qos = await qos_max_wall(profile, backend)
    if qos is not None:
        caps.append(qos)
    return min(caps, key=lambda cap: cap.seconds, default=None)


async def cluster_state(backend) -> ClusterState | str:
    """A SLURM backend's partitions (free, settings, reserved cores), or SLURM's message when it cannot say."""
    from hpclab_hub.backends.slurm.client import SlurmClient, SlurmError, partition_settings, reservation_lines, reserved_cores

    client = SlurmClient.for_backend(backend)
    try:
        states, settings = await client.partitions(), await partition_settings(client)
    except SlurmError as error:
        return error.message
    try:
        reserved = reserved_cores(await reservation_lines(client), settings)
    except SlurmError:  # reservations unknown: the free cores are sinfo's
        reserved = {}
    return ClusterState(states, settings, reserved)


def slurm_profile_availability(profile: Profile, backend, answer: ClusterState | str) -> Availability:
    """What the form says of a SLURM profile, from ``cluster_state``'s answer (the one rule for form and start).

    A cluster that cannot answer blocks nothing: the job is submitted and SLURM's own message decides.
    """
    if isinstance(answer, str):
        return Availability(note=f"Cluster state unavailable: {answer}")
    return slurm_availability(profile, slurm_partition(profile, backend), *answer)


async def form_availability(spawner: "HPCLabSpawner") -> dict[str, Availability]:
    """Availability of every profile on the form, each from its own backend (SLURM asked once per backend)."""
    deployment = spawner.deployment
    result: dict[str, Availability] = {}
    cluster_answers: dict[str, ClusterState | str] = {}
    for profile in deployment.profiles:
        backend = deployment.backends[profile.backend]
        if backend.type == "local":
            result[profile.slug] = local_availability(profile, spawner.pool(profile))
            continue
        if profile.backend not in cluster_answers:
            cluster_answers[profile.backend] = await spawner.cluster_state(profile.backend)
        result[profile.slug] = slurm_profile_availability(profile, backend, cluster_answers[profile.backend])
    return result
