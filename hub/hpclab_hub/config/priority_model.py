"""The deploy YAML's ``priorities`` section: which groups go first when GPUs or memory are short.

On a local backend the hub keeps the line itself (backends/local/waiting_line.py): a start that finds no
free GPU, or not enough memory, waits up to ``wait`` and is served highest priority first, then first
come. On SLURM the hub builds no second scheduler: a group's priority is what SLURM does with the
QoS (or account) its members' jobs are submitted with, ``slurm_qos`` (``slurm_account``) below.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import Field, StrictStr

from hpclab_hub.config.fields import Int, Name, Strict
from hpclab_hub.config.units import DurationSeconds


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
