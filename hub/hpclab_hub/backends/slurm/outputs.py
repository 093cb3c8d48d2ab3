"""What SLURM's commands print, read: squeue, sinfo (text and JSON), scontrol, sbatch --test-only, reservations.

Pure functions of text or parsed JSON, for the layouts of Slurm 22.05 to 26.05 (tests/hub/backends/slurm/data holds
outputs recorded from each release); ``client.py`` runs the commands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hpclab.slurm import ACTIVE_STATES
from hpclab_hub.backends.slurm.errors import SlurmError


@dataclass(frozen=True)
class JobInfo:
    """One job as squeue reports it."""

    job_id: str
    state: str  # PENDING, RUNNING, COMPLETED, CANCELLED, TIMEOUT, FAILED, NODE_FAIL, OUT_OF_MEMORY, ...
    reason: str  # pending reason or "None"
    node: str  # batch host ("" while pending)
    user: str
    name: str
    comment: str

    @property
    def active(self) -> bool:
        """Still queued or running (the server may yet be, or is, alive)."""
        return self.state in ACTIVE_STATES


_SQUEUE_FORMAT = "%i|%T|%r|%B|%u|%j|%k"


def parse_squeue(text: str) -> dict[str, JobInfo]:
    """Jobs from ``squeue -h -o '%i|%T|%r|%B|%u|%j|%k'`` output, by job id."""
    jobs = {}
    for line in text.splitlines():
        parts = line.strip().split("|", 6)
        if len(parts) != 7:
            continue
        job_id, state, reason, node, user, name, comment = parts
        node = "" if node in ("n/a", "(null)") else node
        comment = "" if comment == "(null)" else comment
        jobs[job_id] = JobInfo(job_id, state, reason, node, user, name, comment)
    return jobs


def parse_start_times(text: str) -> dict[str, str]:
    """Expected start times from ``squeue --start -h -o '%i|%S'`` (only known ones)."""
    starts = {}
    for line in text.splitlines():
        job_id, _, start = line.strip().partition("|")
        if start and start not in ("N/A", "(null)", "Unknown"):
            starts[job_id] = start
    return starts


@dataclass(frozen=True)
class PartitionState:
    """What a partition has free now (summed over its nodes that are up)."""

    name: str
    nodes: int
    cpus_total: int
    cpus_free: int
    gpus_total: int
    gpus_free: int


def _gres_count(gres: str) -> int:
    """GPUs in a GRES string such as ``gpu:2``, ``gpu:a100:4(S:0-1)`` or ``gpu:1(IDX:0),foo:1``."""
    total = 0
    for part in gres.split(","):
        fields = part.split("(")[0].split(":")
        if fields[0] == "gpu" and len(fields) >= 2 and fields[-1].isdigit():
            total += int(fields[-1])
    return total


@dataclass(frozen=True)
class NodeGroup:
    """One node (or a group of alike nodes) as seen in one partition, the same whatever layout sinfo wrote.

    ``sinfo --json`` of Slurm 22.05 (openapi v0.0.38) lists ``nodes`` (one per node, its partitions in a
    list, the state a word); since 23.02 the data_parser plugins write ``sinfo``: records per partition and
    node state, with summed ``cpus`` counts, ``gres.total``/``gres.used`` per node and the state as a list.
    """

    partition: str
    nodes: int
    cpus: int  # per node (the largest)
    cpus_total: int  # all nodes of the group
    cpus_free: int  # idle cores on nodes that are up (0 on down, drained, failing or maintained nodes)
    memory_mb: int  # per node (the largest)
    gres: str  # per node, e.g. gpu:a100:4(S:0-1)
    gres_used: str  # per node, e.g. gpu:a100:1(IDX:0)
    state: tuple[str, ...]  # lower case: ("idle", "reserved")

    @property
    def usable(self) -> bool:
        return _usable(self.state)


def _usable(state: tuple[str, ...]) -> bool:
    """A node in this state takes jobs (not down, drained, failing or in maintenance)."""
    return not any(word in flag for flag in state for word in ("down", "drain", "fail", "maint"))


def _number(value: Any) -> int:
    """An integer as either layout writes it: plain, or ``{"set": true, "infinite": false, "number": N}`` (0 if unset)."""
    if isinstance(value, dict):
        return int(value.get("number", 0)) if value.get("set", True) and not value.get("infinite") else 0
    return int(value or 0)


def _states(value: Any) -> tuple[str, ...]:
    """A node or job state as a tuple of lower-case flags: ``"idle+drain"`` (22.05), ``["IDLE", "DRAIN"]`` (23.02+)."""
    words = value if isinstance(value, list) else re.split(r"[+ ]", str(value or ""))
    return tuple(str(word).lower() for word in words if word)


def sinfo_groups(data: dict[str, Any]) -> list[NodeGroup]:
    """Every node of ``sinfo --json`` per partition, by the layout the answer has (not by Slurm's version)."""
    groups = []
    if isinstance(data.get("sinfo"), list):  # data_parser (23.02+): one record per partition and node state
        for record in data["sinfo"]:
            partition = (record.get("partition") or {}).get("name")
            if not partition:
                continue
            cpus, gres = record.get("cpus") or {}, record.get("gres") or {}
            count = _number((record.get("nodes") or {}).get("total", 1)) or 1
            state = _states((record.get("node") or {}).get("state", []))
            free = _number(cpus.get("idle", 0)) if _usable(state) else 0
            groups.append(
                NodeGroup(
                    partition,
                    count,
                    _number(cpus.get("maximum", 0)),
                    _number(cpus.get("total", 0)),
                    free,
                    _number((record.get("memory") or {}).get("maximum", 0)),
                    str(gres.get("total") or ""),
                    str(gres.get("used") or ""),
                    state,
                )
            )
        return groups
    if isinstance(data.get("nodes"), list):  # Slurm 22.05: one entry per node, its partitions listed
        for node in data["nodes"]:
            cpus, alloc = _number(node.get("cpus", 0)), _number(node.get("alloc_cpus", 0))
            state = _states(node.get("state", "")) + _states(node.get("state_flags", []))  # drain is a flag
            free = cpus - alloc if _usable(state) else 0
            for partition in node.get("partitions") or []:
                groups.append(
                    NodeGroup(
                        partition,
                        1,
                        cpus,
                        cpus,
                        free,
                        _number(node.get("real_memory", 0)),
                        str(node.get("gres") or ""),
                        str(node.get("gres_used") or ""),
                        state,
                    )
                )
        return groups
    raise ValueError(
        f"sinfo --json has neither 'sinfo' records (Slurm 23.02 and later) nor 'nodes' (22.05): keys {sorted(data)[:8]}"
    )


def gpu_types(gres: str) -> set[str]:
    """GPU types of a GRES string (``gpu:a100:4(S:0-1),gpu:v100:2`` → a100, v100; untyped ``gpu:2`` → none)."""
    kinds = set()
    for part in gres.split(","):
        fields = part.split("(")[0].split(":")
        if fields[0] == "gpu" and len(fields) == 3:
            kinds.add(fields[1])
    return kinds


def parse_sinfo_json(data: dict[str, Any]) -> dict[str, PartitionState]:
    """Free cores and GPUs per partition from ``sinfo --json`` (either layout, see :class:`NodeGroup`)."""
    totals: dict[str, list[int]] = {}
    for group in sinfo_groups(data):
        gpus = _gres_count(group.gres) * group.nodes
        used = _gres_count(group.gres_used) * group.nodes
        row = totals.setdefault(group.partition, [0, 0, 0, 0, 0])
        row[0] += group.nodes
        row[1] += group.cpus_total
        row[2] += group.cpus_free
        row[3] += gpus
        row[4] += (gpus - used) if group.usable else 0
    return {name: PartitionState(name, *row) for name, row in totals.items()}


@dataclass(frozen=True)
class QueuedJob:
    """One job of ``squeue --json`` (either layout): what JobInfo holds, and the times SLURM gives."""

    info: JobInfo
    start: int  # epoch seconds: the start (running) or the expected start (pending); 0 if unknown
    end: int  # epoch seconds: the end by the time limit; 0 if unknown
    time_limit: int  # minutes; 0 if unlimited or unknown


def parse_squeue_json(data: dict[str, Any]) -> dict[str, QueuedJob]:
    """Jobs of ``squeue --json`` by id, by the layout found: 22.05 writes the state as a word and times as
    numbers; the data_parser plugins (23.02+) write the state as a list of flags (the base state first)
    and times as ``{"set", "infinite", "number"}``."""
    jobs = {}
    for job in data.get("jobs", []):
        state = _states(job.get("job_state", ""))
        job_id = str(job.get("job_id"))
        node = str(job.get("batch_host") or "")
        info = JobInfo(
            job_id,
            state[0].upper() if state else "",
            str(job.get("state_reason") or ""),
            "" if node in ("n/a", "(null)") else node,
            str(job.get("user_name") or ""),
            str(job.get("name") or ""),
            str(job.get("comment") or ""),
        )
        jobs[job_id] = QueuedJob(
            info, _number(job.get("start_time", 0)), _number(job.get("end_time", 0)), _number(job.get("time_limit", 0))
        )
    return jobs


def parse_test_only(out: str) -> str:
    """The start time in ``sbatch --test-only``'s answer (``sbatch: Job 11 to start at 2026-12-08T15:00:45 using ...``;
    26.05 writes a stray word after the time, which is not read)."""
    match = re.search(r"to start at (\S+)", out)
    if match is None:
        raise SlurmError(f"sbatch --test-only gave no start time: {out.strip()[:200]!r}", "sbatch")
    return match.group(1)


def parse_partition_lines(text: str) -> dict[str, dict[str, str]]:
    """``scontrol show partition -o`` (one partition per line of Key=Value pairs) as dicts by name."""
    partitions = {}
    for line in text.splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if "PartitionName" in fields:
            partitions[fields["PartitionName"]] = fields
    return partitions


def parse_reservations(text: str, user: str) -> list[str]:
    """Names of the active reservations ``user`` may use, from ``scontrol show reservation -o``.

    A reservation with a Users list is open to those users (``-name`` excludes one); one without a
    Users list is left out here (it is for accounts, which this hub cannot check without accounting).
    """
    names = []
    for line in text.splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if fields.get("State") != "ACTIVE" or "ReservationName" not in fields:
            continue
        users = [u for u in fields.get("Users", "").split(",") if u and u != "(null)"]
        if user in users and f"-{user}" not in users:
            names.append(fields["ReservationName"])
    return names


def parse_node_address(text: str, node: str) -> str:
    """The address SLURM reaches ``node`` at (``NodeAddr`` of ``scontrol show node -o``); the name when none is given."""
    match = re.search(r"(?:^|\s)NodeAddr=(\S+)", text)
    address = match.group(1) if match else ""
    return address if address and address != "(null)" else node


def expand_hostlist(hostlist: str) -> set[str]:
    """Node names of a SLURM hostlist (``node[01-03,07],gpu1`` → node01, node02, node03, node07, gpu1).

    One bracket per name, as slurm.conf and scontrol write them; "(null)" is no node.
    """
    names: set[str] = set()
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", hostlist or ""):
        match = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", part)
        if match is None:
            if part not in ("(null)", ""):
                names.add(part)
            continue
        prefix, ranges, suffix = match.groups()
        for item in ranges.split(","):
            low, _, high = item.partition("-")
            for number in range(int(low), int(high or low) + 1):
                names.add(f"{prefix}{number:0{len(low)}d}{suffix}")
    return names


def reserved_cores(reservations: str, settings: dict[str, dict[str, str]]) -> dict[str, dict[str, int]]:
    """Cores each partition has held by active reservations: partition -> {reservation: cores}.

    From ``scontrol show reservation -o`` and the partitions' settings: a reservation holds cores
    on its nodes, so in every partition that shares one of them (``TRES=cpu=N``, else ``CoreCnt``).
    """
    held: dict[str, dict[str, int]] = {}
    nodes_of = {name: expand_hostlist(fields.get("Nodes", "")) for name, fields in settings.items()}
    for line in reservations.splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if fields.get("State") != "ACTIVE" or "ReservationName" not in fields:
            continue
        tres = re.search(r"(?:^|,)cpu=(\d+)", fields.get("TRES", ""))
        cores = int(tres.group(1)) if tres else int(fields["CoreCnt"]) if fields.get("CoreCnt", "").isdigit() else 0
        nodes = expand_hostlist(fields.get("Nodes", ""))
        for partition, members in nodes_of.items():
            if cores and nodes & members:
                held.setdefault(partition, {})[fields["ReservationName"]] = cores
    return held


def parse_gpu_types(data: dict[str, Any]) -> dict[str, list[str]]:
    """Typed GPU GRES per partition (``gpu:a100:4`` → a100) from ``sinfo --json`` (either layout)."""
    types: dict[str, set[str]] = {}
    for group in sinfo_groups(data):
        types.setdefault(group.partition, set()).update(gpu_types(group.gres))
    return {name: sorted(kinds) for name, kinds in types.items()}
