"""The benchmarks' private dev SLURM (deploy/slurm/dev-cluster under its own prefix and ports, never the
tests' cluster), its multi-node form (hub_load --nodes N: support.multinode's cluster under a prefix, ports and
subnet of its own, and a node-install prefix for the nodes) and the PATH wrappers that count the hub's SLURM
calls; used by slurm_spawn and hub_load."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from pathlib import Path

from harness import CONFIGS, REPO, BenchError
from support.multinode import MultiNodeCluster, node_install

DEV_CLUSTER = REPO / "deploy" / "slurm" / "dev-cluster"
PREFIX, CTLD_PORT, SLURMD_PORT = Path("/tmp/hpclab-slurm-bench"), 6947, 6948  # never the tests' cluster
SLURM_CONF = str(PREFIX / "etc" / "slurm.conf")
#: the multi-node cluster (hub_load --nodes N): slurmctld 6955, slurmd 6956 in each node, slurmdbd and MariaDB 6957,
#: 6958, subnet 10.77.2.0/24; the tests' is 6951-6954 and 10.77.1.0/24 (tests/hub/backends/slurm/test_multinode.py)
MULTI_PREFIX, MULTI_CTLD_PORT, MULTI_SUBNET = Path("/tmp/hpclab-slurm-bench-multi"), 6955, "10.77.2"
NODE_INSTALL = Path("/tmp/hpclab-node-bench")  # what the nodes run instead of the hub's venv, which they cannot see
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


def multi_cluster(nodes: int, cpus: int, memory_mb: int) -> MultiNodeCluster:
    """The benchmarks' cluster of ``nodes`` nodes, each advertising ``cpus`` CPUs and ``memory_mb`` of memory; start it
    with ``.running()`` (one run at a time: a lock, wiped, up, wiped afterwards)."""
    return MultiNodeCluster(prefix=MULTI_PREFIX, ctld_port=MULTI_CTLD_PORT, subnet=MULTI_SUBNET, nodes=nodes, cpus=cpus,
                            memory_mb=memory_mb)


def install_node_prefix() -> str:
    """``hpclab-hub node-install`` into NODE_INSTALL (brought up to date when it exists); the prefix."""
    try:
        node_install(NODE_INSTALL)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        raise BenchError(str(exc)) from None
    return str(NODE_INSTALL)


def slurm(*argv: str, conf: str = SLURM_CONF) -> str:
    """A real SLURM command (not through the counting wrappers) against this cluster (or the one of ``conf``)."""
    env = {"PATH": SYSTEM_PATH, "SLURM_CONF": conf, "LANG": "C.UTF-8"}
    return subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=30).stdout


def cancel_all(wait: float = 30, conf: str = SLURM_CONF) -> list[str]:
    """scancel every job on this (private) cluster and wait until none is listed; the ids cancelled."""
    ids = slurm("squeue", "-h", "-o", "%i", conf=conf).split()
    if ids:
        slurm("scancel", *ids, conf=conf)
    deadline = time.monotonic() + wait
    while slurm("squeue", "-h", "-o", "%i", conf=conf).split() and time.monotonic() < deadline:
        time.sleep(0.5)
    return ids


def placement(conf: str, users: list[str]) -> dict[str, int]:
    """How many running jobs of ``users`` each node holds now (squeue's node list)."""
    rows = slurm("squeue", "-h", "-t", "RUNNING", "-u", ",".join(users), "-o", "%N", conf=conf).split()
    return {node: rows.count(node) for node in sorted(set(rows))}


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


def listing_figures(calls: list, start: float, end: float, interval: float) -> dict[str, float | int | None]:
    """The hub's batched squeue listings (``-t all``) in [start, end]: how many, per poll interval on average, the most
    that fell in any ``interval`` seconds (1: never more than one per poll interval) and the shortest gap between two."""
    times = sorted(t for t, cmd, hub, args in calls if cmd == "squeue" and hub and "-t all" in args and start <= t <= end)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    cycles = max(1.0, (end - start) / interval)
    return {"calls": len(times), "seconds": round(end - start, 1), "per_poll": round(len(times) / cycles, 2),
            "max_per_interval": max((sum(1 for u in times[i:] if u < t + interval) for i, t in enumerate(times)), default=0),
            "min_gap_s": round(min(gaps), 3) if gaps else None}


def squeue_kinds(calls: list, start: float, end: float) -> dict[str, int]:
    """The hub's squeue calls in a window, by kind: the batched listing, --start, anything else."""
    kinds = {"list_all": 0, "start_times": 0, "other": 0}
    for t, cmd, hub, args in calls:
        if cmd == "squeue" and hub and start <= t <= end:
            kinds["start_times" if "--start" in args else "list_all" if "-t all" in args else "other"] += 1
    return kinds
