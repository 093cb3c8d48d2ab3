"""Training throughput of ResNet-50 (images/s) on synthetic 224x224 data at 1..N processes.

Runs the real training path (``hpclab.training``: the same loop, data sharding and gradient allreduce as
a user's run) with synthetic tensors that live on the device, so the number is the model + optimizer +
communication, not a file system. On a GPU: bf16 autocast + channels_last (``--compile`` adds
torch.compile), one process per GPU. On the CPU: fp32, cores split among the processes.

  .venv-dl/bin/python benchmarks/resnet_throughput.py                       # GPU: 1..all GPUs; CPU: 1, 2
  .venv-dl/bin/python benchmarks/resnet_throughput.py --procs 1,2,4,8 --backend horovod --compile
  .venv-dl/bin/python benchmarks/resnet_throughput.py --arch resnet18 --image-size 64   # a quick CPU run

Writes benchmarks/results/resnet_throughput.json and prints a Markdown table (images/s, per process,
scaling efficiency = images/s at N / (N x images/s at 1)).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hpclab.training import TrainConfig, TrainingError, launch_local  # the project's venvs install hpclab (editable)

REPO = Path(__file__).resolve().parents[1]


def _dl_python() -> str:
    """This interpreter when it has torch, else the repo's deep-learning venv."""
    try:
        import torch  # noqa: F401
        return sys.executable
    except ImportError:
        return str(REPO / ".venv-dl" / "bin" / "python")


def _probe(python: str) -> dict:
    code = ("import json, os, torch; c = torch.cuda.is_available(); print(json.dumps({'cuda': c, "
            "'gpus': torch.cuda.device_count() if c else 0, 'gpu': torch.cuda.get_device_name(0) if c else None, "
            "'torch': torch.__version__, 'cores': len(os.sched_getaffinity(0))}))")
    return json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=None, help="per process (default: 256 on GPU, 8 on CPU)")
    parser.add_argument("--procs", default=None, help="comma-separated process counts (default: GPU 1..all, CPU 1,2)")
    parser.add_argument("--backend", choices=("ddp", "horovod"), default="ddp", help="for more than one process")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: GPU 50, CPU 3)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="untimed steps first (default: GPU 15, CPU 1)")
    parser.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"))
    parser.add_argument("--channels-last", default="auto", choices=("auto", "true", "false"))
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--python", default=None, help="interpreter with torch (default: this one or .venv-dl)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "resnet_throughput.json"))
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args(argv)

    python = args.python or _dl_python()
    probe = _probe(python)
    gpu = probe["cuda"]
    batch = args.batch_size or (256 if gpu else 8)
    steps = args.steps or (50 if gpu else 3)
    warmup = args.warmup_steps if args.warmup_steps is not None else (15 if gpu else 1)
    if args.procs:
        procs = [int(p) for p in args.procs.split(",")]
    else:
        procs = list(range(1, probe["gpus"] + 1)) if gpu else [1, 2]
    where = probe["gpu"] or f"CPU, {probe['cores']} cores"
    print(f"{args.arch} {args.image_size}x{args.image_size}, batch {batch}/process, {steps} timed steps after "
          f"{warmup}; {where}; torch {probe['torch']}", flush=True)

    load_before = os.getloadavg()[0]      # other work on the machine skews CPU numbers: recorded with them
    rows = []
    for n in procs:
        backend = "none" if n == 1 else args.backend
        with tempfile.TemporaryDirectory(prefix="hpclab-bench-") as tmp:
            cfg = TrainConfig(data="synthetic", arch=args.arch, image_size=args.image_size, num_classes=1000,
                              batch_size=batch, synthetic_size=batch * 2, epochs=1, steps_per_epoch=steps + warmup,
                              timing_skip_steps=warmup, lr=0.1, amp=args.amp, compile=args.compile,
                              channels_last=None if args.channels_last == "auto" else args.channels_last == "true",
                              checkpoint=False, progress="off", out_dir=tmp, backend=backend)
            started = time.monotonic()
            try:
                run = launch_local(cfg, nproc=n, backend=backend, python=python, progress=False,
                                   timeout=args.timeout)
            except TrainingError as exc:
                print(f"{n} processes: failed\n{exc}", file=sys.stderr)
                return 1
            m = run.metrics
            ips = m["final"]["images_per_s"]
            rows.append({"processes": n, "backend": m["backend"], "images_per_s": ips, "per_process": ips / n,
                         "global_batch": m["global_batch"], "amp": m["amp"], "channels_last": m["channels_last"],
                         "threads_per_process": m["threads_per_process"], "wall_seconds": time.monotonic() - started})
        base = rows[0]["images_per_s"] / rows[0]["processes"]
        rows[-1]["scaling_efficiency"] = rows[-1]["images_per_s"] / (n * base)
        r = rows[-1]
        print(f"  {n} x {r['backend']}: {r['images_per_s']:,.1f} images/s ({r['per_process']:,.1f} per process, "
              f"efficiency {r['scaling_efficiency']:.2f})", flush=True)

    result = {"benchmark": "resnet_throughput", "arch": args.arch, "image_size": args.image_size,
              "batch_per_process": batch, "timed_steps": steps, "warmup_steps": warmup, "compile": args.compile,
              "device": probe["gpu"] or "cpu", "gpus": probe["gpus"], "cores": probe["cores"],
              "torch": probe["torch"], "host": platform.node(), "date": time.strftime("%Y-%m-%d"),
              "load_average_before": load_before, "runs": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(out.read_text()) if out.exists() else []
    existing = existing if isinstance(existing, list) else [existing]
    out.write_text(json.dumps(existing + [result], indent=2) + "\n")
    print("\n| processes | backend | images/s | per process | scaling efficiency |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['processes']} | {r['backend']} | {r['images_per_s']:,.1f} | {r['per_process']:,.1f} | "
              f"{r['scaling_efficiency']:.2f} |")
    print(f"\nresults appended to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
