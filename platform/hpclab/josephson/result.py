"""The result of a parameter sweep: labelled arrays, a one-line summary, a plot, .npz save and load."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_FORMAT = "hpclab.josephson.sweep/1"
_STATE_NAMES = ("m_x", "m_y", "m_z", "phi")


@dataclass(frozen=True)
class SweepResult:
    """Final states over a parameter grid. Arrays are shaped like the grid (``shape``), axes in order.

    ``state[..., k]`` is (m_x, m_y, m_z, φ)(t_end); ``stats`` holds per-point solver counters
    (steps, rejected, rhs_calls: NaN where the solver does not report them; norm_defect).
    """

    axes: dict[str, np.ndarray]
    fixed: dict[str, float]
    state: np.ndarray
    stats: dict[str, np.ndarray]
    solver: str
    rtol: float
    atol: float
    seconds: float
    n_jobs: int = 1
    backend: str = "serial"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        """Number of values along each axis."""
        return self.state.shape[:-1]

    @property
    def size(self) -> int:
        """Number of grid points."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def mz_final(self) -> np.ndarray:
        """m_z(t_end) on the grid."""
        return self.state[..., 2]

    @property
    def reversed(self) -> np.ndarray:
        """Boolean mask of reversed points, m_z(t_end) < 0."""
        return self.mz_final < 0

    def agreement(self, other: SweepResult) -> float:
        """Fraction of grid points whose reversed/not-reversed verdict equals ``other``'s (same grid)."""
        if self.shape != other.shape or any(
            a != b or not np.array_equal(self.axes[a], other.axes[b]) for a, b in zip(self.axes, other.axes, strict=True)
        ):
            raise ValueError("agreement() needs two sweeps over the same grid")
        return float(np.mean(self.reversed == other.reversed))

    def summary(self) -> str:
        """One line: points, reversed count, seconds, solver."""
        axes = " x ".join(f"{name} {len(v)}" for name, v in self.axes.items()) or "one point"
        return (
            f"{self.size} points ({axes}), {int(self.reversed.sum())} reversed, {self.seconds:.2f} s "
            f"[{self.solver} rtol={self.rtol:g}, {self.backend} n_jobs={self.n_jobs}]"
        )

    def __repr__(self) -> str:
        return f"SweepResult({self.summary()})"

    def plot(self, ax: Any = None, *, quantity: str = "reversed") -> Any:
        """Draw the map of ``quantity`` ("reversed" or "mz_final") over the first two axes; return ax.

        Like the seed's figure: first axis (G) horizontal, second (α) vertical; a 1-axis sweep is a line.
        """
        import matplotlib.pyplot as plt

        if quantity not in ("reversed", "mz_final"):
            raise ValueError(f"quantity must be 'reversed' or 'mz_final', got {quantity!r}")
        values = self.reversed.astype(float) if quantity == "reversed" else self.mz_final
        names = list(self.axes)
        if ax is None:
            _, ax = plt.subplots(figsize=(6.5, 5))
        if len(names) == 1:
            ax.plot(self.axes[names[0]], values, marker=".")
            ax.set_xlabel(names[0])
            ax.set_ylabel("reversed" if quantity == "reversed" else "$m_z(t_{end})$")
            return ax
        if len(names) != 2:
            raise ValueError(f"plot() draws 1 or 2 axes; this sweep has {len(names)} ({', '.join(names)})")
        x, y = self.axes[names[0]], self.axes[names[1]]
        if quantity == "reversed":
            mesh = ax.pcolormesh(x, y, values.T, cmap="Blues", vmin=0, vmax=1, shading="nearest")
            title = "magnetic moment reversed ($m_z(t_{end}) < 0$)"
        else:
            mesh = ax.pcolormesh(x, y, values.T, cmap="RdBu", vmin=-1, vmax=1, shading="nearest")
            ax.figure.colorbar(mesh, ax=ax, label="$m_z(t_{end})$")
            title = "$m_z(t_{end})$"
        ax.set_xlabel(names[0])
        ax.set_ylabel("α" if names[1] == "alpha" else names[1])
        fixed = ", ".join(f"{k}={v:g}" for k, v in self.fixed.items())
        ax.set_title(f"{title}\n{fixed}", fontsize=9)
        return ax

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write an .npz: one array per axis name, mz_final, reversed, state, stats_*, and JSON ``meta``.

        The file is written beside ``path`` and renamed onto it: an interrupted save leaves the old file.
        """
        from ..safe_output import atomic_output

        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"save() writes .npz files; got {path.name!r}")
        clash = set(self.axes) & {"mz_final", "reversed", "state", "meta", "axes"}
        if clash:
            raise ValueError(f"axis names clash with stored arrays: {sorted(clash)}")
        meta = {
            "format": _FORMAT,
            "axes": list(self.axes),
            "fixed": self.fixed,
            "solver": self.solver,
            "rtol": self.rtol,
            "atol": self.atol,
            "seconds": self.seconds,
            "n_jobs": self.n_jobs,
            "backend": self.backend,
            "state_names": list(_STATE_NAMES),
            "extra": self.meta,
        }
        arrays: dict[str, Any] = {name: values for name, values in self.axes.items()}  # Any: np.savez's other keywords
        arrays.update({f"stats_{k}": v for k, v in self.stats.items()})
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp, tmp.open("wb") as fh:
            np.savez_compressed(
                fh, mz_final=self.mz_final, reversed=self.reversed, state=self.state, meta=np.array(json.dumps(meta)), **arrays
            )
        return path


def load_sweep(path: str | os.PathLike[str]) -> SweepResult:
    """Read a SweepResult written by ``SweepResult.save``."""
    with np.load(Path(path), allow_pickle=False) as data:
        if "meta" not in data.files:
            raise ValueError(f"{path}: not a josephson sweep file (no 'meta' entry)")
        meta = json.loads(str(data["meta"]))
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{path}: unknown format {meta.get('format')!r}, expected {_FORMAT!r}")
        axes = {name: data[name] for name in meta["axes"]}
        stats = {f[len("stats_") :]: data[f] for f in data.files if f.startswith("stats_")}
        return SweepResult(
            axes=axes,
            fixed=meta["fixed"],
            state=data["state"],
            stats=stats,
            solver=meta["solver"],
            rtol=meta["rtol"],
            atol=meta["atol"],
            seconds=meta["seconds"],
            n_jobs=meta["n_jobs"],
            backend=meta["backend"],
            meta=meta.get("extra", {}),
        )
