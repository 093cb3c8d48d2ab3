#!/usr/bin/env python
"""hpclab.volumes.apply: throughput (voxels/s) on 1 and 2 local workers, against the whole-volume call.

A smooth random volume (``--size``³ float32, zarr, zstd) is filtered by a 3-D Gaussian (sigma 2,
halo 8) three ways in the same run: the function on the whole array in memory (the reference, no
windows, no storage), ``apply`` with ``workers=1`` (windows in this process), and ``apply`` with
local dask clusters of 1 and of 2 worker processes (each started before its timing; start-up
reported apart). Parallel efficiency = time on 1 worker process / (2 x time on 2): the same engine
and code path, only the number of workers differs (goal >= 80 % on 2 cores). Each phase waits for
a quiet machine first and records others' CPU; ``--repeat`` rounds, medians reported.

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
    parser.add_argument("--repeat", type=int, default=3, help="rounds of all phases; medians are reported")
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

        data = src[:]
        from distributed import Client

        from hpclab.dask_cluster import local_cluster

        runs: dict[str, list[dict]] = {name: [] for name in ("whole", "apply_1", "cluster_1", "cluster_2")}
        whole = None

        def timed(name: str, target: Path, **where) -> None:
            nonlocal whole
            wait_quiet(args.quiet, args.settle)
            watch = CpuWatch()
            start = time.perf_counter()
            if name == "whole":
                whole = gaussian(data)
            else:
                out = volumes.apply(gaussian, work / "src.zarr", target, window=args.window, halo=8,
                                    progress=False, **where)
            run = {"seconds": time.perf_counter() - start, **watch.read()}
            if name != "whole":
                run["max_abs_diff"] = float(np.abs(out[:] - whole).max())
                shutil.rmtree(target)
            runs[name].append(run)

        for _ in range(args.repeat):  # rounds interleave the phases: a slow spell hits all of them
            timed("whole", work / "whole")
            timed("apply_1", work / "apply_1.zarr", workers=1)  # in this process, no dask
            for workers in (1, 2):  # the same engine with 1 and 2 worker processes: the scaling figure
                start = time.perf_counter()
                cluster = local_cluster(workers)  # one task thread and one zarr thread per worker
                client = Client(cluster, set_as_default=False)
                report.setdefault(f"cluster_{workers}_start_s", []).append(time.perf_counter() - start)
                timed(f"cluster_{workers}", work / f"cluster_{workers}.zarr", cluster=client)
                client.close()
                cluster.close()
        phases = {}
        for name, done in runs.items():
            seconds = sorted(r["seconds"] for r in done)
            median = seconds[len(seconds) // 2]
            phases[name] = {"seconds": median, "min_s": seconds[0], "max_s": seconds[-1], "voxels_per_s": voxels / median,
                            "runs": done}
        speedup = phases["cluster_1"]["seconds"] / phases["cluster_2"]["seconds"]
        report["phases"] = phases
        report["speedup_2"] = speedup
        report["efficiency_2"] = speedup / 2
        report["efficiency_2_per_round"] = [a["seconds"] / b["seconds"] / 2 for a, b in zip(runs["cluster_1"], runs["cluster_2"])]
        report["window_overhead_1"] = phases["apply_1"]["seconds"] / phases["whole"]["seconds"]
        print(f"median of {args.repeat} rounds (min..max):")
        for name, phase in phases.items():
            cpu = sorted(r["own_cpu_s"] for r in phase["runs"])[len(phase["runs"]) // 2]
            print(f"{name:9s} {phase['seconds']:7.2f} s ({phase['min_s']:.2f}..{phase['max_s']:.2f})  "
                  f"{phase['voxels_per_s'] / 1e6:7.2f} Mvoxel/s  {cpu:6.2f} CPU-s")
        print(f"2 worker processes against 1: speed-up {speedup:.2f}x, efficiency {100 * speedup / 2:.0f} % (goal >= 80 %; "
              f"per round {', '.join(f'{100 * e:.0f} %' for e in report['efficiency_2_per_round'])}); "
              f"1 worker against the whole-volume call: {report['window_overhead_1']:.2f}x the time")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"results: {write_results('volumes_apply', report, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
