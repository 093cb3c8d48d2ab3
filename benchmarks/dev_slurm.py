"""The benchmarks' private dev SLURM (deploy/slurm/dev-cluster under its own prefix and ports, never the
tests' cluster) and the PATH wrappers that count the hub's SLURM calls; used by slurm_spawn and hub_load."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from pathlib import Path

from harness import CONFIGS, REPO, BenchError

DEV_CLUSTER = REPO / "deploy" / "slurm" / "dev-cluster"
PREFIX, CTLD_PORT, SLURMD_PORT = Path("/tmp/hpclab-slurm-bench"), 6947, 6948  # never the tests' cluster
SLURM_CONF = str(PREFIX / "etc" / "slurm.conf")
SYSTEM_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
WRAPPED = ("squeue", "sinfo", "sbatch", "scancel")


def dev_cluster(action: str, cpus: int, memory_mb: int | None = None) -> subprocess.CompletedProcess:
    """deploy/slurm/dev-cluster ACTION (up, down, wipe) with the benchmarks' prefix, ports, CPUs (and memory)."""
    env = dict(os.environ, HPCLAB_SLURM_PREFIX=str(PREFIX), HPCLAB_SLURM_CTLD_PORT=str(CTLD_PORT),
               HPCLAB_SLURM_SLURMD_PORT=str(SLURMD_PORT), HPCLAB_SLURM_CPUS=str(cpus))
    if memory_mb:
        env["HPCLAB_SLURM_MEMORY_MB"] = str(memory_mb)
    return subprocess.run([str(DEV_CLUSTER), action], env=env, capture_output=True, text=True)


def cluster_up(cpus: int, memory_mb: int | None = None) -> None:
    """Wipe whatever an earlier run left, then start the dev cluster afresh; BenchError when it does not come up."""
    dev_cluster("wipe", cpus)
    if (done := dev_cluster("up", cpus, memory_mb)).returncode != 0:
        raise BenchError(f"dev-cluster up failed:\n{done.stdout}{done.stderr}")


def slurm(*argv: str) -> str:
    """A real SLURM command (not through the counting wrappers) against this cluster."""
    env = {"PATH": SYSTEM_PATH, "SLURM_CONF": SLURM_CONF, "LANG": "C.UTF-8"}
    return subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=30).stdout


def cancel_all(wait: float = 30) -> list[str]:
    """scancel every job on this (private) cluster and wait until none is listed; the ids cancelled."""
    ids = slurm("squeue", "-h", "-o", "%i").split()
    if ids:
        slurm("scancel", *ids)
    deadline = time.monotonic() + wait
    while slurm("squeue", "-h", "-o", "%i").split() and time.monotonic() < deadline:
        time.sleep(0.5)
    return ids


def install_wrappers(folder: Path) -> Path:
    """folder/bin/<command> for each of WRAPPED: configs/slurm-call-wrapper.sh, which logs to folder/calls.log."""
    if missing := [c for c in WRAPPED if not shutil.which(c, path=SYSTEM_PATH)]:
        raise BenchError(f"not found in {SYSTEM_PATH}: {missing}")
    (folder / "bin").mkdir(parents=True)
    (folder / "calls.log").touch()
    for command in WRAPPED:
        shutil.copy(CONFIGS / "slurm-call-wrapper.sh", folder / "bin" / command)
    for path in (folder, folder / "bin", *(folder / "bin").iterdir(), folder / "calls.log"):
        path.chmod(0o666 if path.name == "calls.log" else 0o755)  # jobs' users run the wrappers and append to the log
    return folder / "bin"


def read_calls(log: Path) -> list[tuple[float, str, bool, str]]:
    """(epoch time, command, made by the hub (not inside a job), arguments) of each call logged so far."""
    rows = [line.split("\t", 4) for line in log.read_text(errors="replace").splitlines()] if log.exists() else []
    return [(float(r[0]), r[1], not r[3], r[4]) for r in rows if len(r) == 5]


def count(calls: list, command: str, start: float = 0.0, end: float = math.inf, from_hub: bool = True) -> int:
    """How many ``command`` calls the hub (or, with from_hub=False, the jobs) made in [start, end]."""
    return sum(1 for t, cmd, hub, _ in calls if cmd == command and hub == from_hub and start <= t <= end)


def squeue_kinds(calls: list, start: float, end: float) -> dict[str, int]:
    """The hub's squeue calls in a window, by kind: the batched listing, --start, anything else."""
    kinds = {"list_all": 0, "start_times": 0, "other": 0}
    for t, cmd, hub, args in calls:
        if cmd == "squeue" and hub and start <= t <= end:
            kinds["start_times" if "--start" in args else "list_all" if "-t all" in args else "other"] += 1
    return kinds
