"""``hpclab-hub kernels install|list``: the curated kernelspecs installed, their runtimes listed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager

from hpclab_hub.cli.common import _load_or_report
from hpclab_hub.kernels import install_kernels, runtime_status, runtime_text
from hpclab_hub.kernels.modulefiles import write_modulefiles


def cmd_kernels_install(args: argparse.Namespace) -> int:
    """Install the kernelspecs of the YAML's kernels (those with a runtime)."""
    deployment = _load_or_report(args.config)
    if deployment is None:
        return 1
    unknown = [name for name in args.names if name not in deployment.kernels]
    if unknown:
        print(f"hpclab-hub: not under kernels: in {args.config}: {', '.join(unknown)}", file=sys.stderr)
        return 1
    installed, skipped = install_kernels(deployment, prefix=args.prefix, user=args.user, names=args.names or None)
    for item in installed:
        present, why = runtime_status(item.name, deployment.kernels[item.name])
        print(f"installed {item.name} -> {item.path}" + ("" if present else f"  (runtime not present here: {why})"))
    for name in skipped:
        print(f"skipped {name}: no runtime declared")
    for path in write_modulefiles(deployment, args.names or None):  # modules.curated: `module load <kernel>`
        print(f"modulefile {path.stem} -> {path}")
    return 0


def cmd_kernels_list(args: argparse.Namespace) -> int:
    """Each YAML kernel: its runtime, whether that is present here, and where its kernelspec is installed."""
    deployment = _load_or_report(args.config)
    if deployment is None:
        return 1
    manager = KernelSpecManager()
    if args.prefix:
        manager.kernel_dirs.insert(0, str(Path(args.prefix) / "share" / "jupyter" / "kernels"))
    found = manager.find_kernel_specs()
    rows = [("KERNEL", "RUNTIME", "PRESENT", "INSTALLED")]
    reasons = []
    for name, entry in deployment.kernels.items():
        present, why = runtime_status(name, entry)
        rows.append((name, runtime_text(entry), "yes" if present else "no", found.get(name, "no")))
        if not present:
            reasons.append(f"  {name}: {why}")
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
    if reasons:
        print("\nnot present:\n" + "\n".join(reasons))
    return 0
