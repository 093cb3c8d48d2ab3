"""A multi-node dev cluster (deploy/slurm/dev-cluster with HPCLAB_SLURM_NODES=N) and the node-install prefix its
nodes run, for the tests (tests/hub/backends/slurm/test_multinode.py) and the benchmarks (benchmarks/dev_slurm.py,
hub_load.py --nodes): each its own prefix, ports and subnet, so that they never meet.

Each node is its own host: a network namespace on a bridge (the login side at SUBNET.1, node i at SUBNET.(10+i)),
its own host name, and a mount namespace that hides the folders in ``hide`` (the hub's venv). The servers and
workers on the nodes therefore run from a prefix made by ``hpclab-hub node-install``.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from support.hubprocess import make_reachable
from support.paths import REPO_ROOT

DEV_CLUSTER = REPO_ROOT / "deploy" / "slurm" / "dev-cluster"
#: what the nodes must not see: the hub's venv (the repository's .venv, and the interpreter running this code)
HIDDEN = tuple(sorted({str(REPO_ROOT / ".venv"), sys.prefix}))


@dataclass(frozen=True)
class MultiNodeCluster:
    """One multi-node dev cluster: slurmctld on ``ctld_port``, slurmd ``+1`` inside each node, slurmdbd and MariaDB
    ``+2``, ``+3``; the bridge and namespaces are named after ``ctld_port`` (hpcbr<port>, hpcns<port>-<i>)."""

    prefix: Path
    ctld_port: int
    subnet: str  # the first three octets, e.g. "10.77.1"
    nodes: int = 2
    cpus: int | None = None  # per node (the dev cluster's default when None)
    memory_mb: int | None = None  # per node
    hide: tuple[str, ...] = HIDDEN
    # no reservation (it would hold a core of node1, so no --exclusive job could run there)
    reservation_users: str = "hpclab-nobody"
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def conf(self) -> str:
        return str(self.prefix / "etc" / "slurm.conf")

    @property
    def login_addr(self) -> str:
        """The bridge's address: slurmctld, slurmdbd and the hub listen here for the nodes."""
        return f"{self.subnet}.1"

    @property
    def node_addr(self) -> dict[str, str]:
        return {f"node{i}": f"{self.subnet}.{10 + i}" for i in range(1, self.nodes + 1)}

    def netns(self, node: str) -> str:
        """The path of ``node``'s network namespace."""
        return f"/run/netns/hpcns{self.ctld_port}-{node.removeprefix('node')}"

    @property
    def bridge(self) -> str:
        return f"hpcbr{self.ctld_port}"

    def env(self) -> dict[str, str]:
        """This process's environment with the cluster's HPCLAB_SLURM_* settings and SLURM_CONF."""
        env = dict(os.environ, HPCLAB_SLURM_PREFIX=str(self.prefix), HPCLAB_SLURM_CTLD_PORT=str(self.ctld_port),
                   HPCLAB_SLURM_SLURMD_PORT=str(self.ctld_port + 1), HPCLAB_SLURM_NODES=str(self.nodes),
                   HPCLAB_SLURM_SUBNET=self.subnet, HPCLAB_SLURM_HIDE=":".join(self.hide),
                   HPCLAB_SLURM_RESERVATION_USERS=self.reservation_users, SLURM_CONF=self.conf, **self.extra_env)
        if self.cpus:
            env["HPCLAB_SLURM_CPUS"] = str(self.cpus)
        if self.memory_mb:
            env["HPCLAB_SLURM_MEMORY_MB"] = str(self.memory_mb)
        return env

    def dev_cluster(self, action: str, check: bool = False, quiet: bool = True) -> subprocess.CompletedProcess:
        """deploy/slurm/dev-cluster ACTION (up, down, wipe, status) for this cluster."""
        return subprocess.run([str(DEV_CLUSTER), action], env=self.env(), check=check, text=True,
                              capture_output=quiet)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Held by one run at a time (PREFIX.lock): a second run waits instead of wiping the first's cluster."""
        with open(f"{self.prefix}.lock", "a+") as held:
            try:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                sys.stderr.write(f"\nmultinode: another run holds {held.name}; waiting for it\n")
                fcntl.flock(held, fcntl.LOCK_EX)
            yield

    @contextmanager
    def running(self, keep: bool = False) -> Iterator[str]:
        """Under the lock: wiped, started (``up`` waits until every node is idle), yielding SLURM_CONF; afterwards
        wiped (or only stopped with ``keep``), which also removes its namespaces, veths and bridge."""
        with self.lock():
            started = time.monotonic()
            self.dev_cluster("wipe")
            done = self.dev_cluster("up")
            if done.returncode != 0:
                self.dev_cluster("wipe")
                raise RuntimeError(f"dev-cluster up ({self.prefix}) failed:\n{done.stdout}{done.stderr}")
            sys.stderr.write(f"\n{self.nodes}-node cluster up in {time.monotonic() - started:.1f} s\n")
            try:
                yield self.conf
            finally:
                self.dev_cluster("down" if keep else "wipe")

    def leftovers(self) -> list[str]:
        """Network namespaces and the bridge of this cluster that still exist (none after ``down``)."""
        left = [ns for ns in os.listdir("/run/netns") if ns.startswith(f"hpcns{self.ctld_port}-")] \
            if os.path.isdir("/run/netns") else []
        if subprocess.run(["ip", "link", "show", self.bridge], capture_output=True).returncode == 0:
            left.append(self.bridge)
        return left


def node_install(prefix: Path, timeout: float = 900, config: Path | None = None) -> Path:
    """``hpclab-hub node-install PREFIX`` (the hub's own CLI, next to this interpreter): the software the nodes run
    instead of the hub's venv, readable by the users' jobs; an existing prefix is brought up to date. With
    ``config``, ``--config CONFIG``: that YAML's curated kernelspecs go into PREFIX/share/jupyter/kernels. Its Python."""
    started = time.monotonic()
    argv = [str(Path(sys.executable).with_name("hpclab-hub")), "node-install", str(prefix)]
    done = subprocess.run(argv + (["--config", str(config)] if config else []), capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"hpclab-hub node-install {prefix} failed:\n{done.stdout}{done.stderr}")
    sys.stderr.write(f"\nnode-install took {time.monotonic() - started:.1f} s\n")
    make_reachable(prefix / "bin" / "python")
    return prefix / "bin" / "python"
