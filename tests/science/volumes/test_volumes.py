"""hpclab.volumes.apply: windowed results equal whole-volume results (edges, corners, odd shapes),
interrupted runs resume, local and SLURM dask workers, and a worker's memory stays within its budget."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from hpclab import volumes
from hpclab.volumes.apply import MARKERS, RECORD

#: a shape that no window size used here divides
SHAPE = (50, 61, 47)


def gaussian(block: np.ndarray) -> np.ndarray:
    """Reach: truncate 4 x sigma 2 = 8 voxels."""
    return ndi.gaussian_filter(block.astype(np.float32), 2.0)


def median(block: np.ndarray) -> np.ndarray:
    """Reach: 2 voxels (5-voxel cube)."""
    return ndi.median_filter(block, size=5)


def local_maxima(block: np.ndarray) -> np.ndarray:
    """A labelling step that needs its neighbourhood: 1 where a voxel is the largest of its 7-voxel cube."""
    return (ndi.maximum_filter(block, size=7, mode="nearest") == block).astype(np.uint8)


FUNCTIONS = {"gaussian": (gaussian, 8, np.float32), "median": (median, 2, np.float32),
             "local_maxima": (local_maxima, 3, np.uint8)}


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A smooth random volume (blobs, so maxima and medians mean something) stored in zarr."""
    rng = np.random.default_rng(7)
    data = ndi.gaussian_filter(rng.normal(size=SHAPE), 1.5).astype(np.float32)
    path = tmp_path_factory.mktemp("vol") / "source.zarr"
    volumes.create_volume(path, SHAPE, np.float32, chunks=(16, 16, 16))[:] = data
    return path, data


@pytest.mark.parametrize("window", [(16, 16, 16), (20, 13, 9), (64, 64, 64)])
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_windowed_result_equals_the_whole_volume_result(volume, tmp_path, name, window):
    func, reach, dtype = FUNCTIONS[name]
    path, data = volume
    out = volumes.apply(func, path, tmp_path / "out.zarr", window=window, halo=reach, workers=1, dtype=dtype,
                        progress=False)
    whole = func(data)
    got = out[:]
    assert got.dtype == dtype and got.shape == SHAPE
    np.testing.assert_allclose(got, whole, rtol=0, atol=1e-6)
    for corner in [(0, 0, 0), (-1, -1, -1), (0, -1, 0), (-1, 0, -1)]:  # the volume's corners
        assert got[corner] == pytest.approx(whole[corner], abs=1e-6)


def test_the_halo_is_what_makes_it_exact(volume, tmp_path):
    path, data = volume
    short = volumes.apply(local_maxima, path, tmp_path / "short.zarr", window=16, halo=0, workers=1,
                          dtype=np.uint8, progress=False)
    assert np.count_nonzero(short[:] != local_maxima(data)) > 0  # maxima invented at window borders


def test_source_may_be_a_numpy_array_and_the_record_says_how_the_target_was_made(volume, tmp_path):
    _, data = volume
    out = volumes.apply(median, data, tmp_path / "m.zarr", window=24, halo=2, workers=1, progress=False)
    np.testing.assert_array_equal(out[:], median(data))
    record = dict(out.attrs[RECORD])
    assert record["window"] == [24, 24, 24] and record["halo"] == [2, 2, 2] and record["complete"] is True
    assert out.chunks == (24, 24, 24) and not (tmp_path / "m.zarr" / MARKERS).exists()
    assert type(out.compressors[0]).__name__ == "BloscCodec" and out.compressors[0].cname.value == "zstd"


class MedianStoppingAfter:
    """The median filter, interrupted (as SIGTERM is under hpclab.interrupts) after ``n`` windows; counts calls."""

    def __init__(self, n: int | None) -> None:
        self.n, self.calls = n, 0

    def __call__(self, block: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.n is not None and self.calls > self.n:
            raise KeyboardInterrupt
        return median(block)


def test_an_interrupted_run_resumes_where_it_stopped(volume, tmp_path):
    path, data = volume
    target = tmp_path / "r.zarr"
    with pytest.raises(KeyboardInterrupt):
        volumes.apply(MedianStoppingAfter(5), path, target, window=16, halo=2, workers=1, progress=False)
    assert len(list((target / MARKERS).iterdir())) == 5

    total = len(volumes.plan_windows(SHAPE, (16,) * 3, (2,) * 3))
    again = MedianStoppingAfter(None)
    out = volumes.apply(again, path, target, window=16, halo=2, workers=1, progress=False)
    assert again.calls == total - 5
    np.testing.assert_array_equal(out[:], median(data))
    with pytest.raises(ValueError, match=r"window was \[16, 16, 16\], now \[32, 32, 32\]"):
        volumes.apply(again, path, target, window=32, halo=2, workers=1, progress=False)
    with pytest.raises(ValueError, match="not a whole number of the target's chunks"):
        volumes.apply(again, path, target, window=24, halo=2, workers=1, progress=False)
    finished = MedianStoppingAfter(None)
    volumes.apply(finished, path, target, window=16, halo=2, workers=1, progress=False)
    assert finished.calls == 0  # complete: nothing redone


def test_a_resume_without_window_reuses_the_recorded_window_when_memory_changed(volume, tmp_path):
    """window=None: a resumed run keeps the window the target recorded, though the memory it would be
    sized from has changed since the interrupted run."""
    source, data = volume
    small, large = 2**20, 4 * 2**20  # 1 MiB sizes 16-voxel windows here, 4 MiB 32-voxel ones
    halo = (2,) * 3
    assert volumes.window_for_memory(SHAPE, small, halo, chunks=(16, 16, 16)) == (16, 16, 16)
    assert volumes.window_for_memory(SHAPE, large, halo, chunks=(16, 16, 16)) == (32, 32, 32)

    target = tmp_path / "r.zarr"
    with pytest.raises(KeyboardInterrupt):
        volumes.apply(MedianStoppingAfter(5), source, target, halo=2, workers=1, memory_per_worker=small,
                      progress=False)
    assert len(list((target / MARKERS).iterdir())) == 5

    again = MedianStoppingAfter(None)  # more memory now: alone it would size 32-voxel windows
    out = volumes.apply(again, source, target, halo=2, workers=1, memory_per_worker=large, progress=False)
    assert again.calls == len(volumes.plan_windows(SHAPE, (16,) * 3, halo)) - 5
    assert dict(out.attrs[RECORD])["window"] == [16, 16, 16] and dict(out.attrs[RECORD])["complete"] is True
    np.testing.assert_array_equal(out[:], median(data))

    finished = MedianStoppingAfter(None)  # finished, with yet another budget: nothing redone, no refusal
    volumes.apply(finished, source, target, halo=2, workers=1, memory_per_worker=2**24, progress=False)
    assert finished.calls == 0
    with pytest.raises(ValueError, match=r"window was \[16, 16, 16\], now \[32, 32, 32\]"):
        volumes.apply(finished, source, target, window=32, halo=2, workers=1, progress=False)


def test_two_local_dask_workers_give_the_same_result(volume, tmp_path):
    path, data = volume
    out = volumes.apply(gaussian, path, tmp_path / "g.zarr", window=(32, 16, 16), halo=8, workers=2,
                        dtype=np.float32, progress=False)
    np.testing.assert_allclose(out[:], gaussian(data), rtol=0, atol=1e-6)


def test_windows_are_sized_from_the_memory_budget():
    assert volumes.window_for_memory((500, 500, 500), 16 * 2**20, (4, 4, 4), chunks=(32, 32, 32)) == (64, 64, 64)
    assert volumes.window_for_memory((40, 500, 500), 16 * 2**20, (4, 4, 4), chunks=(32, 32, 32)) == (64, 64, 64)
    small = volumes.window_for_memory((500, 500, 500), 2**20, (0, 0, 0))
    assert all(w % 8 == 0 for w in small) and np.prod(small) * 8 * 4 <= 2**20


def test_a_worker_stays_within_its_memory_budget_on_a_larger_volume(tmp_path):
    """64 MiB of float32 processed with a 16 MiB budget: the process's peak RSS grows by < 2 x budget."""
    budget = 16 * 2**20
    big = volumes.create_volume(tmp_path / "big.zarr", (256, 256, 256), np.float32, chunks=(32, 32, 32),
                                compression="none")
    for k in range(0, 256, 32):
        big[k:k + 32] = np.random.default_rng(k).normal(size=(32, 256, 256)).astype(np.float32)
    script = textwrap.dedent(f"""
        import json, resource
        import numpy as np
        from scipy import ndimage as ndi
        from hpclab import volumes
        f = lambda b: ndi.gaussian_filter(b, 1.0)
        volumes.apply(f, np.zeros((20, 20, 20), np.float32), {str(tmp_path / 'warm.zarr')!r}, window=8, halo=4,
                      workers=1, progress=False)  # imports and first allocations out of the way
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out = volumes.apply(f, {str(tmp_path / 'big.zarr')!r}, {str(tmp_path / 'smooth.zarr')!r}, halo=4,
                            workers=1, memory_per_worker={budget}, progress=False)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({{"grew": after - before, "window": list(out.attrs["hpclab_apply"]["window"])}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    assert measured["window"] == [64, 64, 64]
    assert measured["grew"] < 2 * budget, f"peak RSS grew by {measured['grew'] / 2**20:.1f} MiB"


def test_slurm_workers_across_two_jobs(volume, slurm_cluster, tmp_path, monkeypatch):
    """dask-jobqueue: two workers, each a SLURM job on the real dev cluster, share the windows.

    The function is scipy's own (importable on the workers, unlike one defined in this test module).
    """
    import functools

    from distributed import Client

    from hpclab.dask_cluster import slurm_cluster as make_slurm_cluster, wait_for_workers

    path, data = volume
    monkeypatch.setenv("SLURM_CONF", slurm_cluster)
    cluster = make_slurm_cluster(jobs=2, cores=1, memory="1GiB", walltime="00:10:00", queue="cpu",
                                 log_directory=str(tmp_path), local_directory=str(tmp_path),
                                 scheduler_options={"host": "127.0.0.1"})
    try:
        assert cluster.scheduler_address.startswith("tls://")  # the jobs join with the key in the shared home
        client = Client(cluster, set_as_default=False)
        wait_for_workers(client, 2, timeout=120)
        jobs = set(client.run(lambda: os.environ.get("SLURM_JOB_ID")).values())
        assert len(jobs) == 2 and None not in jobs
        zarr_threads = client.run(lambda: __import__("zarr").config.get("threading.max_workers"))
        assert set(zarr_threads.values()) == {1}  # one core per job: one zarr decode thread
        filt = functools.partial(ndi.median_filter, size=5)
        out = volumes.apply(filt, path, tmp_path / "slurm.zarr", window=16, halo=2, cluster=client, progress=False)
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
        client.close()
    finally:
        cluster.close()
    np.testing.assert_array_equal(out[:], median(data))
    assert len(executed) == 2 and all(n > 0 for n in executed.values()), executed


def test_a_new_target_keeps_the_source_chunks_where_they_divide_the_window(volume, tmp_path):
    path, data = volume  # source chunks 16
    kept = volumes.apply(median, path, tmp_path / "k.zarr", window=32, halo=2, workers=1, progress=False)
    assert kept.chunks == (16, 16, 16)
    np.testing.assert_array_equal(kept[:], median(data))
    own = volumes.apply(median, path, tmp_path / "o.zarr", window=24, halo=2, workers=1, progress=False)
    assert own.chunks == (24, 24, 24)  # 16 does not divide 24: two windows would share a chunk


def test_local_workers_keep_to_their_cores():
    """A one-thread worker decodes with one zarr thread (zarr's default pool of ten oversubscribes the cores)."""
    from distributed import Client

    from hpclab.dask_cluster import local_cluster

    with local_cluster(2, memory_limit="512MiB") as cluster, Client(cluster, set_as_default=False) as client:
        seen = client.run(lambda: __import__("zarr").config.get("threading.max_workers"))
        limits = {w["memory_limit"] for w in client.scheduler_info()["workers"].values()}
    assert list(seen.values()) == [1, 1]
    assert limits == {512 * 2**20}


def test_a_cluster_without_workers_is_an_error_not_a_wait(volume, tmp_path, monkeypatch):
    from distributed import Client, LocalCluster

    apply_module = importlib.import_module("hpclab.volumes.apply")  # the module (the package exports the function)

    monkeypatch.setattr(apply_module, "STUCK_S", 2.0)
    path, _ = volume
    with LocalCluster(n_workers=0, dashboard_address=None) as cluster, Client(cluster, set_as_default=False) as client:
        with pytest.raises(RuntimeError, match=r"no dask workers for 2 s with 48 windows left"):
            volumes.apply(median, path, tmp_path / "none.zarr", window=16, halo=2, cluster=client, progress=False)


def test_workers_paused_by_dask_for_memory_are_an_error_not_a_wait(volume, tmp_path, monkeypatch):
    """dask pauses a worker above 80 % of its memory limit; with every worker paused nothing would ever run."""
    import time

    from distributed import Client

    from hpclab.dask_cluster import local_cluster
    apply_module = importlib.import_module("hpclab.volumes.apply")  # the module (the package exports the function)

    monkeypatch.setattr(apply_module, "STUCK_S", 2.0)
    path, _ = volume
    def ballast(dask_worker) -> None:  # fill the worker to 88 % of its limit: dask pauses it (above 80 %)
        import psutil

        held = psutil.Process().memory_info().rss
        dask_worker.hpclab_ballast = np.ones(int(0.88 * dask_worker.memory_manager.memory_limit) - held, np.uint8)

    with local_cluster(1, memory_limit="600MiB") as cluster, Client(cluster, set_as_default=False) as client:
        client.run(ballast)
        deadline = time.monotonic() + 30
        while {w["status"] for w in client.scheduler_info()["workers"].values()} != {"paused"}:
            assert time.monotonic() < deadline, "the scheduler never saw the worker paused"
            time.sleep(0.1)
        with pytest.raises(RuntimeError, match=r"every dask worker \(1\) has been paused for 2 s.*smaller window"):
            volumes.apply(median, path, tmp_path / "paused.zarr", window=16, halo=2, cluster=client, progress=False)
