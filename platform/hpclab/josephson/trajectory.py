"""One simulated time series of the junction, and its plot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .params import JunctionParams, VoltageParams


@dataclass(frozen=True)
class Trajectory:
    """m(t), φ(t) and the bias I(t) on the time grid ``t``; ``m`` has shape (3, len(t))."""

    t: np.ndarray
    m: np.ndarray
    phi: np.ndarray
    current: np.ndarray
    params: JunctionParams | VoltageParams
    method: str
    nfev: int

    @property
    def m_z(self) -> np.ndarray:
        """The easy-axis component m_z(t)."""
        return self.m[2]

    @property
    def norm_error(self) -> float:
        """max over t of | |m| − 1 |: how far the solution left the unit sphere."""
        return float(np.max(np.abs(np.linalg.norm(self.m, axis=0) - 1.0)))

    @property
    def reversed(self) -> bool:
        """True when the moment ended reversed, m_z(t_end) < 0."""
        return bool(self.m[2, -1] < 0)

    def plot(self, ax: Any = None, *, current: bool = True, label: str | None = None) -> Any:
        """Plot m_z(t) (and the current pulse, as in the seed) on ``ax`` (new figure if None); return ax."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(8, 4.5))
        p = self.params
        if current and isinstance(p, JunctionParams):
            ax.plot(self.t, self.current, color="0.6", lw=1, label="current pulse I(t)")
        ax.plot(self.t, self.m_z, label=label or f"$m_z$ at G={p.G:g}, α={p.alpha:g}")
        ax.set_xlabel("t")
        ax.set_ylabel("$m_z(t)$")
        ax.legend(loc="best")
        return ax
