#!/usr/bin/env python
"""hpclab.volumes.apply: throughput (voxels/s) on 1 and 2 local workers, against the whole-volume call.

A smooth random volume (``--size``³ float32, zarr, zstd) is filtered by a 3-D Gaussian (sigma 2,
halo 8) three ways in the same run: the function on the whole array in memory (the reference, no
windows, no storage), ``apply`` with ``workers=1`` (windows in this process), and ``apply`` with
a local dask cluster of 2 processes (started before the timing; its start-up is reported apart). Parallel efficiency = speed-up / workers
(goal >= 80 % on 2 cores). Each phase waits for a quiet machine first and records others' CPU.

    .venv/bin/python benchmarks/volumes_apply.py             # 384³ (216 MiB), window 128
    .venv/bin/python benchmarks/volumes_apply.py --size 256 --window 64

Prints a summary and writes benchmarks/results/volumes_apply-<timestamp>.json (or --out).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from harness import CpuWatch, add_out_option, machine_info, wait_quiet, write_results


def gaussian(block: np.ndarray) -> np.ndarray:
    return ndi.gaussian_filter(block, 2.0)


def main() -> int:
    from hpclab import volumes

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=32, help="source chunk side (halo reads touch whole chunks)")
    parser.add_argument("--quiet", type=float, default=0.3)
    parser.add_argument("--settle", type=float, default=60.0)
    add_out_option(parser, "volumes_apply")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="volumes-bench-"))
    shape = (args.size,) * 3
    report = {"started": dt.datetime.now().isoformat(timespec="seconds"),
              "machine": machine_info("numpy", "scipy", "zarr", "dask", "distributed"),
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    try:
        src = volumes.create_volume(work / "src.zarr", shape, np.float32, chunks=(args.chunk,) * 3)
        rng = np.random.default_rng(0)
        for k in range(0, args.size, args.window):
            src[k:k + args.window] = rng.normal(size=(min(args.window, args.size - k), *shape[1:])).astype(np.float32)
        voxels = float(np.prod(shape))
        phases = {}

        wait_quiet(args.quiet, args.settle)
        data = src[:]
        watch = CpuWatch()
        start = time.perf_counter()
        whole = gaussian(data)
        phases["whole"] = {"seconds": time.perf_counter() - start, **watch.read()}
        from distributed import Client, LocalCluster

        start = time.perf_counter()
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster, set_as_default=False)
        report["cluster_start_s"] = time.perf_counter() - start
        for workers in (1, 2):
            wait_quiet(args.quiet, args.settle)
            watch = CpuWatch()
            start = time.perf_counter()
            out = volumes.apply(gaussian, work / "src.zarr", work / f"out{workers}.zarr", window=args.window, halo=8,
                                workers=workers if workers == 1 else None,
                                cluster=client if workers == 2 else None, progress=False)
            seconds = time.perf_counter() - start
            phases[f"apply_{workers}"] = {"seconds": seconds, **watch.read()}
            phases[f"apply_{workers}"]["max_abs_diff"] = float(np.abs(out[:] - whole).max())
        for name, phase in phases.items():
            phase["voxels_per_s"] = voxels / phase["seconds"]
        client.close()
        cluster.close()
        speedup = phases["apply_1"]["seconds"] / phases["apply_2"]["seconds"]
        report["phases"] = phases
        report["speedup_2"] = speedup
        report["efficiency_2"] = speedup / 2
        report["window_overhead_1"] = phases["apply_1"]["seconds"] / phases["whole"]["seconds"]
        for name, phase in phases.items():
            print(f"{name:8s} {phase['seconds']:7.2f} s  {phase['voxels_per_s'] / 1e6:7.2f} Mvoxel/s  "
                  f"(others used {phase.get('others_cores', 0):.2f} cores)")
        print(f"local cluster start-up (not in apply_2): {report['cluster_start_s']:.1f} s")
        print(f"2 workers: speed-up {speedup:.2f}x, efficiency {100 * speedup / 2:.0f} % (goal >= 80 %); "
              f"1 worker against the whole-volume call: {report['window_overhead_1']:.2f}x the time")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"results: {write_results('volumes_apply', report, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
