"""A sweep's finished points on disk, so an interrupted sweep resumes where it stopped."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..safe_output import atomic_output
from .fast import STAT_COLUMNS

_FORMAT = "hpclab.josephson.checkpoint/1"


def fingerprint(P: np.ndarray, solver: str, rtol: float, atol: float) -> str:
    """A digest of everything that decides the points' results: the parameter matrix, solver, tolerances."""
    digest = hashlib.sha256(np.ascontiguousarray(P, dtype=np.float64).tobytes())
    digest.update(json.dumps([solver, float(rtol), float(atol)]).encode())
    return digest.hexdigest()


def finished_points(path: str | os.PathLike[str]) -> int:
    """Points a checkpoint file holds as finished (0 when there is no file)."""
    if not Path(path).exists():
        return 0
    with np.load(path, allow_pickle=False) as data:
        return int(data["done"].sum())


@dataclass
class Checkpoint:
    """An .npz of (state, stats, done) for a grid; written atomically, so a kill mid-save keeps the last one."""

    path: Path
    key: str
    n_points: int

    @staticmethod
    def empty_arrays(n_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fresh (state, stats, done) arrays for ``n_points`` points, nothing done."""
        return (np.empty((n_points, 4)), np.empty((n_points, len(STAT_COLUMNS))), np.zeros(n_points, dtype=bool))

    @classmethod
    def open(cls, path: str | os.PathLike[str], P: np.ndarray, solver: str, rtol: float, atol: float) -> Checkpoint:
        """The checkpoint at ``path`` for this grid; a file there from another sweep is a ValueError."""
        target = Path(path)
        if target.suffix != ".npz":
            raise ValueError(f"checkpoint {target} must end in .npz")
        point = cls(target, fingerprint(P, solver, rtol, atol), len(P))
        if target.exists():
            meta = point._meta()
            if meta.get("key") != point.key:
                raise ValueError(
                    f"checkpoint {target} belongs to another sweep (other grid, solver or tolerances); "
                    "remove it or run that sweep"
                )
        return point

    def _meta(self) -> dict:
        try:
            with np.load(self.path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
        except Exception as exc:  # truncated, not an npz, no meta
            raise ValueError(f"checkpoint {self.path} cannot be read ({exc}); remove it to start again") from None
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{self.path} is not a sweep checkpoint")
        return meta

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(state, stats, done) as saved, or fresh arrays when nothing was saved yet."""
        if not self.path.exists():
            return self.empty_arrays(self.n_points)
        with np.load(self.path, allow_pickle=False) as data:
            return data["state"].copy(), data["stats"].copy(), data["done"].copy()

    def save(self, state: np.ndarray, stats: np.ndarray, done: np.ndarray) -> None:
        """Replace the file with these arrays (atomically)."""
        meta = {"format": _FORMAT, "key": self.key, "points": self.n_points, "done": int(done.sum())}
        with atomic_output(self.path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, state=state, stats=stats, done=done, meta=np.array(json.dumps(meta)))

    def remove(self) -> None:
        """Delete the file if it is there."""
        self.path.unlink(missing_ok=True)
