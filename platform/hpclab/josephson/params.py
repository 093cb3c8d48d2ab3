"""Model parameters of the φ0 Josephson junction, validated on construction."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any


def _check_number(cls_name: str, name: str, value: Any) -> float:
    """``value`` as a finite float, else a TypeError/ValueError naming the field."""
    is_real = isinstance(value, (int, float)) or hasattr(value, "__float__")  # numpy scalars too
    if isinstance(value, bool) or isinstance(value, str) or not is_real:
        raise TypeError(f"{cls_name}.{name} must be a real number, got {value!r} ({type(value).__name__})")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{cls_name}.{name} must be a finite number, got {number!r}")
    return number


@dataclass(frozen=True)
class JunctionParams:
    """A current-biased φ0 junction: LLG magnet (G, r, alpha), RSJ phase (w), rectangular pulse.

    w = 1 and t_end = 60 are the seed's; it does not show its r, A_s, t_s and Δt, so r = 0.1,
    A_s = 1.5, t_s = 25, Δt = 5 are ours (a pulse well inside [0, t_end], amplitude above I_c).
    """

    G: float = 10.0
    r: float = 0.1
    alpha: float = 0.1
    w: float = 1.0
    A_s: float = 1.5
    t_s: float = 25.0
    delta_t: float = 5.0
    t_end: float = 60.0

    def __post_init__(self) -> None:
        name = type(self).__name__
        for f in fields(self):
            object.__setattr__(self, f.name, _check_number(name, f.name, getattr(self, f.name)))
        if self.G < 0:
            raise ValueError(f"{name}.G must be >= 0 (Josephson/anisotropy energy ratio), got {self.G}")
        if self.alpha < 0:
            raise ValueError(f"{name}.alpha must be >= 0: negative Gilbert damping pumps energy in, got {self.alpha}")
        if self.w <= 0:
            raise ValueError(f"{name}.w must be > 0 (it divides the phase equation), got {self.w}")
        if self.delta_t <= 0:
            raise ValueError(f"{name}.delta_t (pulse width Δt) must be > 0, got {self.delta_t}")
        if self.t_end <= 0:
            raise ValueError(f"{name}.t_end must be > 0, got {self.t_end}")
        if self.pulse_end <= 0 or self.pulse_start >= self.t_end:
            raise ValueError(
                f"{name}: the pulse [{self.pulse_start}, {self.pulse_end}] (t_s ± delta_t/2) lies outside "
                f"[0, t_end={self.t_end}]; move t_s or lengthen t_end"
            )

    @property
    def pulse_start(self) -> float:
        """Time the current pulse switches on, t_s − Δt/2."""
        return self.t_s - self.delta_t / 2

    @property
    def pulse_end(self) -> float:
        """Time the current pulse switches off, t_s + Δt/2."""
        return self.t_s + self.delta_t / 2

    def replace(self, **changes: float) -> JunctionParams:
        """A copy with some fields changed (validated again)."""
        return type(self)(**{**asdict(self), **changes})

    def as_dict(self) -> dict[str, float]:
        """The parameters as a plain dict (for JSON, .npz metadata)."""
        return asdict(self)


@dataclass(frozen=True)
class VoltageParams:
    """A voltage-biased φ0 junction (the seed's first variant): φ(t) = V·t is imposed, only m evolves."""

    G: float = 10.0
    r: float = 0.1
    alpha: float = 0.1
    V: float = 1.0
    t_end: float = 60.0
    m0: tuple[float, float, float] = (0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        name = type(self).__name__
        for f in fields(self):
            if f.name != "m0":
                object.__setattr__(self, f.name, _check_number(name, f.name, getattr(self, f.name)))
        if self.G < 0:
            raise ValueError(f"{name}.G must be >= 0, got {self.G}")
        if self.alpha < 0:
            raise ValueError(f"{name}.alpha must be >= 0: negative Gilbert damping pumps energy in, got {self.alpha}")
        if self.t_end <= 0:
            raise ValueError(f"{name}.t_end must be > 0, got {self.t_end}")
        if len(self.m0) != 3:
            raise ValueError(f"{name}.m0 must have 3 components, got {self.m0!r}")
        m0 = tuple(_check_number(name, f"m0[{i}]", v) for i, v in enumerate(self.m0))
        if abs(math.sqrt(sum(v * v for v in m0)) - 1) > 1e-12:
            raise ValueError(f"{name}.m0 must be a unit vector (|m| = 1), got {m0!r}")
        object.__setattr__(self, "m0", m0)

    def as_dict(self) -> dict[str, Any]:
        """The parameters as a plain dict."""
        return asdict(self)
