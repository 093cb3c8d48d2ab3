"""What a profile lets its user choose, each within bounds the admin sets (the ``choices:`` key of a profile).

A numeric choice (cores, memory, GPUs, wall time) is a range ``{min: 1, max: 8}`` or a list of allowed
values; the profile's own value is the default and must lie within. A name choice (partition,
account, QoS, reservation, GPU type) is a list of allowed names, or a word that lets the cluster
answer: ``associations`` (the user's SLURM accounts), ``active`` (reservations open to the user now),
``partition`` (the GPU types the chosen partition has).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from hpclab_hub.config.units import DurationSeconds, MemoryBytes

_NonNegative = Annotated[int, Field(ge=0, strict=True)]
_Positive = Annotated[int, Field(ge=1, strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class _Range(_Strict):
    """A closed range; min ≤ max."""

    @model_validator(mode="after")
    def _ordered(self):
        if self.min > self.max:  # type: ignore[attr-defined]
            raise ValueError(f"min ({self.min}) is above max ({self.max})")  # type: ignore[attr-defined]
        return self

    def allows(self, value: int) -> bool:
        return self.min <= value <= self.max  # type: ignore[attr-defined]


class CpuRange(_Range):
    min: _Positive = Field(description="Fewest cores.")
    max: _Positive = Field(description="Most cores.")


class GpuRange(_Range):
    min: _NonNegative = Field(0, description="Fewest GPUs.")
    max: _NonNegative = Field(description="Most GPUs.")


class MemoryRange(_Range):
    min: MemoryBytes = Field(description="Least memory (512M, 1G).")
    max: MemoryBytes = Field(description="Most memory.")


class TimeRange(_Range):
    min: DurationSeconds = Field(description="Shortest wall time.")
    max: DurationSeconds = Field(description="Longest wall time (also the most an extension may reach).")


NameList = Annotated[list[StrictStr], Field(min_length=1)]


class ProfileChoices(_Strict):
    """Keys a user may set on the form or in the REST API's user_options, each within its bounds."""

    cpus: CpuRange | Annotated[list[_Positive], Field(min_length=1)] | None = Field(
        None, description="Cores: {min, max} or a list."
    )
    memory: MemoryRange | Annotated[list[MemoryBytes], Field(min_length=1)] | None = Field(
        None, description="Memory: {min, max} or a list (4G, 8G)."
    )
    gpus: GpuRange | Annotated[list[_NonNegative], Field(min_length=1)] | None = Field(
        None, description="GPUs: {min, max} or a list."
    )
    time_limit: TimeRange | Annotated[list[DurationSeconds], Field(min_length=1)] | None = Field(
        None, description="Wall time: {min, max} or a list; its maximum bounds extensions too."
    )
    partition: NameList | None = Field(None, description="Partitions the user may pick (SLURM).")
    account: NameList | Literal["associations"] | None = Field(
        None, description="Accounts: a list, or 'associations' (the user's own, from sacctmgr; needs SLURM accounting)."
    )
    qos: NameList | None = Field(None, description="QoS names the user may pick (SLURM).")
    reservation: NameList | Literal["active"] | None = Field(
        None, description="Reservations: a list, or 'active' (those open to the user now, from scontrol)."
    )
    gpu_type: NameList | Literal["partition"] | None = Field(
        None, description="GPU types: a list, or 'partition' (the GRES types the chosen partition has)."
    )

    def offered(self) -> list[str]:
        """The keys a user may set, in form order."""
        return [key for key in type(self).model_fields if getattr(self, key) is not None]
