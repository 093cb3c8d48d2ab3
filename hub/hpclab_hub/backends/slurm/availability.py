"""What a profile can get now on a SLURM backend, and the cluster's cap on its wall time.

One ``sinfo --json`` and one ``scontrol show partition`` per form (partition up? GPUs in it? cores
held by reservations?); the partition's MaxTime and the QoS's MaxWall cap a job's wall time. A
cluster that cannot answer blocks nothing: sbatch's own message decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from hpclab_hub.backends import Availability, plural
from hpclab_hub.backends.slurm.client import SlurmClient, partition_settings, reservation_lines
from hpclab_hub.backends.slurm.errors import SlurmError
from hpclab_hub.backends.slurm.outputs import reserved_cores
from hpclab_hub.config.model import Profile
from hpclab_hub.config.units import format_duration, parse_duration


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
    return f"; {plural(cores, 'core')} held by reservation{'s' if len(held) > 1 else ''} {names}"


def slurm_availability(
    profile: Profile, partition: str | None, states: dict, settings: dict, reserved: dict[str, dict[str, int]] | None = None
) -> Availability:
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
        return Availability(blocked=f"Partition {partition} has no GPUs; the profile needs {plural(profile.gpus, 'GPU')}.")
    held = (reserved or {}).get(partition, {})
    free = max(0, state.cpus_free - sum(held.values()))
    gpus = f", {state.gpus_free} of {state.gpus_total} GPUs free" if state.gpus_total else ""
    return Availability(
        note=f"Partition {partition}: {plural(state.nodes, 'node')}, {free} of {state.cpus_total} cores free{gpus} now"
        f"{_reserved_text(held)}."
    )


def slurm_partition(profile: Profile, backend) -> str | None:
    """The partition a SLURM profile's job goes to: its own, else its backend's (None: the cluster's default)."""
    return (profile.slurm.partition if profile.slurm and profile.slurm.partition else None) or backend.partition


def partition_max_time(partition: str | None, settings: dict) -> tuple[str, int] | None:
    """(partition, its MaxTime in seconds) from ``scontrol show partition`` settings; None if unlimited or unknown.

    No partition means the cluster's default one (``Default=YES``).
    """
    if partition is None:
        partition = next((name for name, fields in settings.items() if fields.get("Default") == "YES"), None)
        if partition is None:  # none named and none is the default: nothing to hold against
            return None
    max_time = (settings.get(partition) or {}).get("MaxTime", "UNLIMITED")
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
