"""hpclab.volumes.apply with ``window=None``: a resumed run reuses the window the target recorded, even when
the memory the window would be sized from has changed since the interrupted run."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from hpclab import volumes
from hpclab.volumes.apply import MARKERS, RECORD

SHAPE = (50, 61, 47)
HALO = 2


def median(block: np.ndarray) -> np.ndarray:
    """Reach: 2 voxels (5-voxel cube)."""
    return ndi.median_filter(block, size=5)


class MedianStoppingAfter:
    """The median filter, interrupted (as SIGTERM is under hpclab.interrupts) after ``n`` windows; counts calls."""

    def __init__(self, n: int | None) -> None:
        self.n, self.calls = n, 0

    def __call__(self, block: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.n is not None and self.calls > self.n:
            raise KeyboardInterrupt
        return median(block)


def test_a_resume_without_window_reuses_the_recorded_window_when_memory_changed(tmp_path):
    rng = np.random.default_rng(3)
    data = ndi.gaussian_filter(rng.normal(size=SHAPE), 1.5).astype(np.float32)
    source = tmp_path / "source.zarr"
    volumes.create_volume(source, SHAPE, np.float32, chunks=(16, 16, 16))[:] = data
    small, large = 2**20, 4 * 2**20  # 1 MiB sizes 16-voxel windows here, 4 MiB 32-voxel ones
    halo = (HALO,) * 3
    assert volumes.window_for_memory(SHAPE, small, halo, chunks=(16, 16, 16)) == (16, 16, 16)
    assert volumes.window_for_memory(SHAPE, large, halo, chunks=(16, 16, 16)) == (32, 32, 32)

    target = tmp_path / "r.zarr"
    with pytest.raises(KeyboardInterrupt):
        volumes.apply(MedianStoppingAfter(5), source, target, halo=HALO, workers=1, memory_per_worker=small,
                      progress=False)
    assert len(list((target / MARKERS).iterdir())) == 5

    again = MedianStoppingAfter(None)  # more memory now: alone it would size 32-voxel windows
    out = volumes.apply(again, source, target, halo=HALO, workers=1, memory_per_worker=large, progress=False)
    assert again.calls == len(volumes.plan_windows(SHAPE, (16,) * 3, halo)) - 5
    assert dict(out.attrs[RECORD])["window"] == [16, 16, 16] and dict(out.attrs[RECORD])["complete"] is True
    np.testing.assert_array_equal(out[:], median(data))

    finished = MedianStoppingAfter(None)  # finished, with yet another budget: nothing redone, no refusal
    volumes.apply(finished, source, target, halo=HALO, workers=1, memory_per_worker=2**24, progress=False)
    assert finished.calls == 0
    with pytest.raises(ValueError, match=r"window was \[16, 16, 16\], now \[32, 32, 32\]"):
        volumes.apply(finished, source, target, window=32, halo=HALO, workers=1, progress=False)
