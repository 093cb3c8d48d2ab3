"""``hpclab-hub check --live``: does the YAML fit the running cluster (partitions, GRES, limits)?"""

from __future__ import annotations

import asyncio

from hpclab_hub.backends.slurm.availability import partition_max_time
from hpclab_hub.backends.slurm.client import SlurmClient, partition_settings
from hpclab_hub.backends.slurm.errors import SlurmError
from hpclab_hub.backends.slurm.outputs import _gres_count, gpu_types, sinfo_groups
from hpclab_hub.config.errors import ConfigIssue
from hpclab_hub.config.model import Deployment, Profile, SlurmBackend
from hpclab_hub.config.units import format_duration, format_memory, parse_duration


def _node_capacity(sinfo: dict) -> dict[str, dict]:
    """Per partition: the largest node's cores, memory (bytes), GPUs, and the GPU types present."""
    caps: dict[str, dict] = {}
    for group in sinfo_groups(sinfo):
        cap = caps.setdefault(group.partition, {"cpus": 0, "memory": 0, "gpus": 0, "gpu_types": set()})
        cap["cpus"] = max(cap["cpus"], group.cpus)
        cap["memory"] = max(cap["memory"], group.memory_mb * 2**20)
        cap["gpus"] = max(cap["gpus"], _gres_count(group.gres))
        cap["gpu_types"] |= gpu_types(group.gres)
    return caps


async def _cluster_view(backend: SlurmBackend) -> tuple[dict[str, dict[str, str]], dict[str, dict]]:
    client = SlurmClient.for_backend(backend)
    settings = await partition_settings(client)
    capacity = _node_capacity(await client.sinfo())
    return settings, capacity


def time_choice_warnings(profile: Profile, partitions: list[str | None], settings: dict[str, dict[str, str]]) -> list[str]:
    """Where a profile's time_limit choice reaches past the MaxTime of a partition its user may pick.

    Not an error (the user can pick a shorter time there), but such starts are refused, so the
    admin is told. ``None`` in ``partitions`` is the cluster's default partition.
    """
    bound = profile.choices.time_limit if profile.choices else None
    if bound is None:
        return []
    longest = max(bound) if isinstance(bound, list) else bound.max
    warnings = []
    for name in dict.fromkeys(partitions):
        limit = partition_max_time(name, settings)
        if limit is not None and longest > limit[1]:
            warnings.append(
                f"up to {format_duration(longest)} may be chosen, but partition {limit[0]}'s MaxTime is "
                f"{format_duration(limit[1])}: longer requests there are refused at start"
            )
    return warnings


def live_report(deployment: Deployment) -> tuple[list[ConfigIssue], list[ConfigIssue]]:
    """(issues, warnings) of every SLURM profile checked against its cluster, with key paths (lines added by the
    caller): what does not fit, and what fits but deserves a look (see ``time_choice_warnings``)."""
    issues: list[ConfigIssue] = []
    warnings: list[ConfigIssue] = []
    views: dict[str, tuple] = {}
    for name, backend in deployment.backends.items():
        if backend.type != "slurm":
            continue
        try:
            views[name] = asyncio.run(_cluster_view(backend))
        except SlurmError as error:
            issues.append(ConfigIssue(("backends", name), f"SLURM did not answer: {error.message}"))
    for i, profile in enumerate(deployment.profiles):
        if profile.backend not in views:
            continue
        settings, capacity = views[profile.backend]
        backend = deployment.backends[profile.backend]
        assert isinstance(backend, SlurmBackend)  # views holds SLURM backends only
        slurm = profile.slurm
        partition = (slurm.partition if slurm and slurm.partition else None) or backend.partition
        where = ("profiles", i, "slurm", "partition") if slurm and slurm.partition else ("profiles", i)
        if partition is None:
            partition = next((p for p, s in settings.items() if s.get("Default") == "YES"), None)
        selectable: list[str | None] = (
            list(profile.choices.partition) if profile.choices and profile.choices.partition else [partition]
        )
        warnings += [
            ConfigIssue(("profiles", i, "choices", "time_limit"), text)
            for text in time_choice_warnings(profile, selectable, settings)
        ]
        if partition not in settings:
            known = ", ".join(sorted(settings)) or "none"
            issues.append(ConfigIssue(where, f"partition {partition!r} does not exist on the cluster (partitions: {known})"))
            continue
        cap = capacity.get(partition, {"cpus": 0, "memory": 0, "gpus": 0, "gpu_types": set()})
        if profile.cpus > cap["cpus"]:
            issues.append(
                ConfigIssue(
                    ("profiles", i, "cpus"),
                    f"{profile.cpus} cores, but the largest node in partition {partition} has {cap['cpus']}",
                )
            )
        if profile.memory and profile.memory > cap["memory"]:
            issues.append(
                ConfigIssue(
                    ("profiles", i, "memory"),
                    f"{format_memory(profile.memory)}, but the largest node in partition {partition} "
                    f"has {format_memory(cap['memory'])}",
                )
            )
        if profile.gpus > cap["gpus"]:
            issues.append(
                ConfigIssue(
                    ("profiles", i, "gpus"),
                    f"{profile.gpus} GPUs, but no node in partition {partition} has more than {cap['gpus']}",
                )
            )
        if slurm and slurm.gpu_type and slurm.gpu_type not in cap["gpu_types"]:
            have = ", ".join(sorted(cap["gpu_types"])) or "untyped GPUs only"
            issues.append(
                ConfigIssue(
                    ("profiles", i, "slurm", "gpu_type"), f"no GPUs of type {slurm.gpu_type!r} in partition {partition} ({have})"
                )
            )
        max_time = settings[partition].get("MaxTime", "UNLIMITED")
        if profile.time_limit and max_time not in ("UNLIMITED", "NONE"):
            limit = parse_duration(max_time)
            if profile.time_limit > limit:
                issues.append(
                    ConfigIssue(
                        ("profiles", i, "time_limit"),
                        f"{format_duration(profile.time_limit)} exceeds partition {partition}'s MaxTime {max_time}",
                    )
                )
    return issues, warnings
