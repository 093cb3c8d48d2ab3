"""The deploy YAML's ``priorities`` section: which groups go first when GPUs or memory are short.

On a local backend the hub keeps the line itself (backends/local/waiting_line.py): a start that finds no
free GPU, or not enough memory, waits up to ``wait`` and is served highest priority first, then first
come. On SLURM the hub builds no second scheduler: a group's priority is what SLURM does with the
QoS (or account) its members' jobs are submitted with, ``slurm_qos`` (``slurm_account``) below.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from pydantic import Field, StrictStr

from hpclab_hub.config.fields import Int, Name, Strict
from hpclab_hub.config.units import DurationSeconds


class ReclaimSettings(Strict):
    """Taking GPUs back from servers that hold one and barely use it, while a start waits for a GPU (local backends)."""

    enabled: bool = Field(False, description="Reclaim GPUs of servers with low measured use while a start waits for one.")
    window: DurationSeconds = Field(
        "05:00", validate_default=True, description="How long a server's use is measured before it may be warned."
    )
    below: Annotated[float, Field(gt=0, le=1)] = Field(
        0.05,
        description="Low use: fewer cores busy on average than this fraction of the server's cores (CPU time of its cgroup).",
    )
    grace: DurationSeconds = Field(
        "02:00",
        validate_default=True,
        description="Time between the warning (notebooks saved, the new end shown in JupyterLab) and the stop.",
    )
    gpu_below: Annotated[float, Field(gt=0, le=1)] = Field(
        0.05,
        description="Low use where NVML measures the held GPUs (an NVIDIA driver is present): busy less than this "
        "fraction of the time on average; elsewhere `below` applies to CPU use.",
    )


class PrioritySettings(Strict):
    """Priorities in the line for scarce resources: per group, and what they become on SLURM."""

    groups: dict[Name, Int] = Field(
        default_factory=dict,
        description="Group -> priority (higher goes first; a person in several groups has the highest of theirs; "
        "everyone else 0). On a local backend the line of starts waiting for a GPU or memory is served in this order, "
        "then first come.",
    )
    wait: DurationSeconds | None = Field(
        None,
        description="How long a start on a local backend waits in line for a GPU or memory before it is refused "
        "(always ending before the profile's spawn_timeout); none = refused at once with what is in use, as without priorities.",
    )
    reclaim: ReclaimSettings = Field(
        default_factory=dict, validate_default=True, description="Reclaim under pressure, by measured use (local backends)."
    )
    slurm_qos: dict[Name, StrictStr] = Field(
        default_factory=dict,
        description="Group -> the QoS its members' SLURM jobs are submitted with (--qos), where the profile names none: "
        "SLURM's own priority and preemption of that QoS order them. The highest-priority group with an entry wins.",
    )
    slurm_account: dict[Name, StrictStr] = Field(
        default_factory=dict,
        description="Group -> the account its members' SLURM jobs are charged to (--account), where the profile names none "
        "(fair share by account). The highest-priority group with an entry wins.",
    )

    def priority_of(self, groups: Iterable[str]) -> int:
        """A person's priority: the highest of their groups' (0 without any)."""
        return max((self.groups[g] for g in groups if g in self.groups), default=0)

    def _by_priority(self, table: dict[str, str], groups: Iterable[str]) -> str | None:
        mine = sorted((g for g in groups if g in table), key=lambda g: (-self.groups.get(g, 0), g))
        return table[mine[0]] if mine else None

    def qos_for(self, groups: Iterable[str]) -> str | None:
        """The QoS a person's SLURM jobs get from their groups (None: the profile's or backend's own)."""
        return self._by_priority(self.slurm_qos, groups)

    def account_for(self, groups: Iterable[str]) -> str | None:
        """The account a person's SLURM jobs get from their groups (None: the profile's or backend's own)."""
        return self._by_priority(self.slurm_account, groups)
