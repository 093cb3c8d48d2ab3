#!/usr/bin/env python
"""What each lab feature adds to a server's start: spawn-to-ready of one hub's profiles, alike but for lab_features.

One ``hpclab-hub run`` (benchmarks/configs/hpclab-local.yaml, local backend) with a profile per feature of
hpclab.lab_features (``lab_features: [<name>]``), one with none (``none``) and one with all (``all``). Each round starts
and stops the admin's server once per profile, the order rotated every round to spread machine noise; a start is
timed from POST /hub/api/users/admin/server until ``ready`` (as benchmarks/spawn_ready.py does), after waiting for a
quiet machine. The table gives each profile's median and its difference from ``none``.

    .venv/bin/python benchmarks/lab_features_start.py --repeat 5

Writes benchmarks/results/lab_features_start-<timestamp>.json (or --out).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import (ADMIN_PASSWORD, Api, exit_on_signals, hpclab_hub, ignore_signals, machine_info, print_table,
                     stop_hubs, summary, wait_quiet, write_results)

from hpclab.lab_features import LAB_FEATURES

USER = "admin"


def profiles() -> dict[str, list[str]]:
    """Profile slug -> its lab_features: none, one per feature, all."""
    found: dict[str, list[str]] = {"none": []}
    found.update({name: [name] for name in LAB_FEATURES})
    found["all"] = list(LAB_FEATURES)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="measured starts per profile (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first (default 1)")
    parser.add_argument("--quiet", type=float, default=0.5, metavar="CORES", help="wait for others below this many cores")
    parser.add_argument("--settle", type=float, default=20, metavar="S", help="...but at most this long (default 20)")
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    exit_on_signals()
    features = profiles()
    slugs = list(features)
    tmp = Path(tempfile.mkdtemp(prefix="lab_features_start-"))
    settings = {"profiles": [{"slug": slug, "display_name": slug, "backend": "local",
                              "cpus": 1, "memory": "3G", "lab_features": names, "default": slug == "none"}
                             for slug, names in features.items()]}
    hub = hpclab_hub("ours", tmp / "ours", "hpclab-local.yaml", settings)
    runs: dict[str, list[float]] = {slug: [] for slug in slugs}
    failed = False
    try:
        hub.start(timeout=90)
        api = Api.login(hub, USER, ADMIN_PASSWORD, "lab_features_start benchmark")
        for round_no in range(args.warmup + args.repeat):
            shift = round_no % len(slugs)
            for slug in slugs[shift:] + slugs[:shift]:
                if args.settle > 0:
                    wait_quiet(args.quiet, args.settle)
                run = api.spawn({"profile": slug}, 0.1, args.timeout)
                api.stop(0.1, args.timeout)
                if round_no >= args.warmup:
                    runs[slug].append(run["ready_s"])
                print(f"round {round_no + 1 - args.warmup} {slug}: ready in {run['ready_s']:.2f} s", flush=True)
                time.sleep(0.5)
    except Exception as exc:
        failed = True
        print(f"lab_features_start: stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        ignore_signals()
        for problem in stop_hubs({"ours": hub}):
            print(f"lab_features_start: clean-up: {problem}", file=sys.stderr)
        if failed:
            print(f"hub log kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if failed:
        return 1
    base = statistics.median(runs["none"])
    results: dict[str, Any] = {
        "description": "seconds from POST /hub/api/users/admin/server to ready, per profile "
                       "(the profiles differ in lab_features only)",
        "repeat": args.repeat, "warmup": args.warmup, "machine": machine_info("jupyterhub", "jupyterlab", "jupyter_server"),
        "lab_features": features, "raw": runs, "summary": {slug: summary(v) for slug, v in runs.items()},
        "added_s": {slug: round(statistics.median(v) - base, 3) for slug, v in runs.items()},
    }
    path = write_results("lab_features_start", results, args.out)
    print_table(runs, reference="none", extra={slug: {"added s": results["added_s"][slug]} for slug in slugs})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
