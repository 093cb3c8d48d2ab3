"""Parameter grids for sweeps: which keyword is an axis, which is fixed, and the flat point matrix."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .fast import PARAM_COLUMNS
from .params import JunctionParams

_NAMES = tuple(f.name for f in fields(JunctionParams))
assert _NAMES == PARAM_COLUMNS, "fast.PARAM_COLUMNS must follow JunctionParams' field order"


@dataclass(frozen=True)
class Grid:
    """A rectangular grid over some JunctionParams fields (``axes``, in order), the others ``fixed``."""

    axes: dict[str, np.ndarray]
    fixed: dict[str, float]

    @property
    def shape(self) -> tuple[int, ...]:
        """Number of values along each axis."""
        return tuple(len(v) for v in self.axes.values())

    @property
    def size(self) -> int:
        """Number of grid points."""
        return int(np.prod(self.shape, dtype=np.int64))

    def matrix(self) -> np.ndarray:
        """The (size, 8) float matrix of all points, C order over the axes, columns PARAM_COLUMNS."""
        P = np.empty((self.size, len(_NAMES)))
        mesh = np.meshgrid(*self.axes.values(), indexing="ij") if self.axes else []
        by_name = dict(zip(self.axes, mesh, strict=True))
        for col, name in enumerate(_NAMES):
            P[:, col] = by_name[name].ravel() if name in by_name else self.fixed[name]
        return P


def make_grid(**values: Any) -> Grid:
    """Split keyword values into axes (1-D sequences) and fixed scalars; defaults fill the rest.

    Every value is checked the way JunctionParams checks it, so a bad one fails before any work starts.
    """
    unknown = sorted(set(values) - set(_NAMES))
    if unknown:
        raise TypeError(f"unknown junction parameter(s) {', '.join(unknown)}; valid names: {', '.join(_NAMES)}")
    axes: dict[str, np.ndarray] = {}
    fixed: dict[str, float] = {}
    for name, value in values.items():
        if np.ndim(value) == 0:
            fixed[name] = value
            continue
        arr = np.asarray(value)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"axis {name} must be a non-empty 1-D sequence, got shape {arr.shape}")
        if arr.dtype.kind not in "iuf":
            raise TypeError(f"axis {name} must hold real numbers, got dtype {arr.dtype}")
        axes[name] = arr.astype(np.float64)
    base = JunctionParams(**fixed)  # validates the fixed values (and the pulse window if no axis moves it)
    fixed = base.as_dict()
    for name in axes:
        fixed.pop(name)
    for name, arr in axes.items():
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ValueError(f"axis {name} must hold finite numbers, got {float(arr[bad][0])!r} at index {int(np.argmax(bad))}")
        for v in (arr.min(), arr.max()):
            _check_alone(base, name, float(v))
    grid = Grid(axes, fixed)
    _check_pulse_window(grid)
    return grid


def _check_alone(base: JunctionParams, name: str, value: float) -> None:
    """Validate one axis value with the other fields at their base values (range checks per field)."""
    try:
        base.replace(**{name: value})
    except ValueError as err:
        if "pulse" in str(err) and name in ("t_s", "delta_t", "t_end"):
            return  # pulse window depends on several fields: checked on the whole grid
        raise ValueError(f"axis {name}: {err}") from None


def _check_pulse_window(grid: Grid) -> None:
    """Every point's pulse [t_s − Δt/2, t_s + Δt/2] must overlap [0, t_end]."""
    moving = {"t_s", "delta_t", "t_end"} & set(grid.axes)
    if not moving:
        return
    P = grid.matrix()
    t_s, delta_t, t_end = (P[:, _NAMES.index(n)] for n in ("t_s", "delta_t", "t_end"))
    bad = (t_s + delta_t / 2 <= 0) | (t_s - delta_t / 2 >= t_end)
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(
            f"the pulse lies outside [0, t_end] at t_s={t_s[k]}, delta_t={delta_t[k]}, t_end={t_end[k]}; "
            "narrow the axes over " + ", ".join(sorted(moving))
        )
