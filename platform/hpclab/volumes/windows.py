"""Windows over a volume: an interior each worker writes and a halo around it that the function may read.

Windows tile the volume without overlap; each reads its interior plus ``halo`` voxels on every side,
clipped at the volume's edges, so the function sees the volume's true boundary there exactly as a
whole-volume call does. Windows are whole multiples of the target's chunks, so two workers never
write the same chunk.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """One window: its grid index, the interior it writes, the block it reads, where the interior sits in it."""

    index: tuple[int, ...]
    interior: tuple[slice, ...]
    padded: tuple[slice, ...]
    crop: tuple[slice, ...]

    @property
    def key(self) -> str:
        """A name for the window ("2-0-1"), used for its done marker."""
        return "-".join(map(str, self.index))

    @property
    def padded_shape(self) -> tuple[int, ...]:
        """Shape of the block the function gets."""
        return tuple(s.stop - s.start for s in self.padded)


def per_axis(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    """``value`` repeated per axis (an int) or checked to have ``ndim`` entries."""
    # numbers.Integral: NumPy's integers too
    values = (int(value),) * ndim if isinstance(value, (int, numbers.Integral)) else tuple(int(v) for v in value)
    if len(values) != ndim:
        raise ValueError(f"{name} needs {ndim} values (one per axis), got {len(values)}")
    return values


def plan_windows(shape: Sequence[int], window: Sequence[int], halo: Sequence[int]) -> list[Window]:
    """Every window of ``window`` voxels (the last one per axis smaller) with ``halo`` voxels around it."""
    if any(w < 1 for w in window) or any(h < 0 for h in halo):
        raise ValueError(f"windows need sizes >= 1 and halos >= 0, got window={tuple(window)}, halo={tuple(halo)}")
    axes = []
    for n, w, h in zip(shape, window, halo, strict=True):
        spans = []
        for k, start in enumerate(range(0, n, w)):
            stop = min(start + w, n)
            lo, hi = max(0, start - h), min(n, stop + h)
            spans.append((k, slice(start, stop), slice(lo, hi), slice(start - lo, stop - lo)))
        axes.append(spans)
    return [
        Window(tuple(a[0] for a in combo), tuple(a[1] for a in combo), tuple(a[2] for a in combo), tuple(a[3] for a in combo))
        for combo in itertools.product(*axes)
    ]


#: bytes of working memory a typical function needs per input voxel, in units of the block's float64
#: size: the block as float64, the output, and two temporaries (a filter's intermediate, a copy)
WORKING_COPIES = 4


def window_for_memory(
    shape: Sequence[int],
    budget_bytes: int,
    halo: Sequence[int],
    *,
    chunks: Sequence[int] | None = None,
    bytes_per_voxel: float | None = None,
) -> tuple[int, ...]:
    """The largest cubic window whose padded block fits in ``budget_bytes`` at ``bytes_per_voxel`` of working
    memory (a model's figure; default :data:`WORKING_COPIES` float64 copies).

    Rounded down to whole chunks (when ``chunks`` is given) and clipped to the volume; at least one
    chunk (or 8 voxels) per axis, even when that is above the budget: the caller sees the sizes.
    """
    side = int((budget_bytes / (bytes_per_voxel or WORKING_COPIES * 8)) ** (1 / 3))
    window = []
    for axis, (n, h) in enumerate(zip(shape, halo, strict=True)):
        w = max(side - 2 * h, 1)
        step = int(chunks[axis]) if chunks is not None else 8
        w = max(step, (w // step) * step)
        window.append(min(w, math.ceil(n / step) * step))
    return tuple(window)
