"""``hpclab-hub node-install PREFIX``: the software compute nodes run, in one shared folder, without the hub's venv.

PREFIX becomes a venv of the hub's own Python (the nodes need that Python at the same path: Debian's python3) with
the server's packages from the lock file (images/requirements/all.txt, hashes checked), hpclab itself installed
from the source tree (not editable: the nodes need no source tree) and, with --config, the YAML's curated
kernelspecs under PREFIX/share/jupyter/kernels. The YAML then names it: ``backends.<name>.node_prefix: PREFIX``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import hpclab_hub

SOURCE = Path(hpclab_hub.__file__).resolve().parents[2]  # the source tree: hub/hpclab_hub -> the repository
LOCK = SOURCE / "images" / "requirements" / "all.txt"


def _step(what: str, argv: list[str]) -> None:
    print(f"hpclab-hub node-install: {what}", flush=True)
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)


def cmd_node_install(args: argparse.Namespace) -> int:
    prefix = Path(args.prefix).absolute()
    lock = Path(args.lock) if args.lock else LOCK
    if not lock.is_file() or not (SOURCE / "pyproject.toml").is_file():
        print(
            f"hpclab-hub: node-install needs the source tree and its lock file ({lock}); run it from a checkout "
            "(.venv/bin/hpclab-hub node-install PREFIX) or name the lock with --lock",
            file=sys.stderr,
        )
        return 1
    python = args.python or getattr(sys, "_base_executable", sys.executable)
    py = prefix / "bin" / "python"
    if not py.exists():
        _step(f"a venv of {python} in {prefix}", [python, "-m", "venv", str(prefix)])
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv:
        _step(f"the server's packages from {lock}", [uv, "pip", "install", "--quiet", "--python", str(py), "-r", str(lock)])
    else:
        _step(
            f"the server's packages from {lock}",
            [str(py), "-m", "pip", "install", "--quiet", "--require-hashes", "-r", str(lock)],
        )
    _step(
        f"hpclab from {SOURCE}",
        [str(py), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--force-reinstall", str(SOURCE)],
    )
    if args.config:
        config = str(Path(args.config).absolute())
        _step(
            "the curated kernelspecs",
            [str(prefix / "bin" / "hpclab-hub"), "kernels", "install", "--config", config, "--prefix", str(prefix)],
        )
    version = subprocess.run(
        [str(py), "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True, check=True
    )
    (prefix / "hpclab-node.json").write_text(
        json.dumps(
            {
                "python": version.stdout.strip(),
                "base_python": python,
                "lock": str(lock),
                "lock_sha256": hashlib.sha256(lock.read_bytes()).hexdigest(),
            },
            indent=2,
        )
        + "\n"
    )
    for folder, dirs, files in os.walk(prefix):  # the nodes' users read it; nobody but its owner writes it
        for name in [*dirs, *files]:
            path = Path(folder) / name
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() or path.stat().st_mode & 0o100 else 0))
    print(
        f"hpclab-hub node-install: done. In the YAML:\n  backends:\n    <name>:\n      type: slurm\n      node_prefix: {prefix}"
    )
    return 0
