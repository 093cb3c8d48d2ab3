"""Helpers for the training tests: the deep-learning venv (.venv-dl) runs everything torch; this process never imports torch."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from support.paths import REPO_ROOT

REPO = REPO_ROOT
DL_VENV = Path(os.environ.get("HPCLAB_DL_VENV", REPO / ".venv-dl"))
DL_PYTHON = DL_VENV / "bin" / "python"


def require_dl_venv() -> None:
    """The deep-learning venv must exist (``make dl-env``); its absence is a failure, not a skip."""
    if not DL_PYTHON.exists():
        pytest.fail(f"{DL_PYTHON} is missing: run `make dl-env` (images/dl/install-dl-env.sh)")


def dl_env(threads: int | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = f"{DL_VENV / 'bin'}:{env.get('PATH', '')}"
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def dl_run(args: list[str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run a command with the deep-learning venv first on PATH; fail with its output on a non-zero exit."""
    proc = subprocess.run(args, env=kwargs.pop("env", dl_env()), capture_output=True, text=True, timeout=timeout,
                          **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc


def compare_states(reference: Path, *others: Path) -> dict[str, dict]:
    """Largest differences of saved model states, computed by .venv-dl's python (hpclab.training.verify)."""
    proc = dl_run([str(DL_PYTHON), "-m", "hpclab.training.verify", str(reference), *map(str, others)], timeout=120)
    return json.loads(proc.stdout)


def cuda_available() -> bool:
    proc = subprocess.run([str(DL_PYTHON), "-c", "import torch; print(torch.cuda.is_available())"],
                          capture_output=True, text=True, timeout=120, env=dl_env())
    return proc.stdout.strip() == "True"
