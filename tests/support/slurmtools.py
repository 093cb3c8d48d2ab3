"""Helpers for tests against the real dev cluster: run SLURM commands with its SLURM_CONF."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support.hubtools import Hub, add_account, hub_yaml
from support.paths import REPO_ROOT

#: the test cluster's folder; HPCLAB_TEST_SLURM_PREFIX (and HPCLAB_TEST_SLURM_PORT, its slurmctld port) let a second
#: test run on this machine use a cluster of its own instead of waiting for the first run's lock
SLURM_PREFIX = Path(os.environ.get("HPCLAB_TEST_SLURM_PREFIX", "/tmp/hpclab-slurm-test"))
SLURM_PORT = int(os.environ.get("HPCLAB_TEST_SLURM_PORT", "6937"))
DEV_CLUSTER = REPO_ROOT / "deploy" / "slurm" / "dev-cluster"


#: SLURM_CONF -> folder of that cluster's commands, for clusters of another release (see release_cluster)
BIN_DIRS: dict[str, str] = {}


def slurm_argv(conf: str, *argv: str) -> list[str]:
    """``argv`` with the command taken from the cluster's own release (its bin folder) where it has one."""
    bin_dir = BIN_DIRS.get(conf)
    return [os.path.join(bin_dir, argv[0]), *argv[1:]] if bin_dir else list(argv)


def slurm(conf: str, *argv: str, user: str | None = None, check: bool = True) -> str:
    """Run a SLURM command (optionally as ``user`` via sudo) and return stdout."""
    env = dict(os.environ, SLURM_CONF=conf)
    prefix = ["sudo", "-E", "-u", user] if user else []
    return subprocess.run([*prefix, *slurm_argv(conf, *argv)], env=env, check=check, capture_output=True,
                          text=True).stdout


def jobs(conf: str, states: str = "PENDING,RUNNING") -> list[dict[str, str]]:
    """This cluster's jobs as dicts (id, user, state, reason, name)."""
    out = slurm(conf, "squeue", "-h", "-t", states, "-o", "%i|%u|%T|%r|%j")
    rows = []
    for line in out.splitlines():
        job_id, user, state, reason, name = line.split("|")
        rows.append({"id": job_id, "user": user, "state": state, "reason": reason, "name": name})
    return rows


def submitted_after(conf: str, last_id: int) -> list[dict[str, str]]:
    """Jobs with an id above ``last_id`` (any state SLURM still lists), each with what tells who submitted it and why:
    user, name, submit time, state, comment (the hub's ``hpclab:<hub>:<profile>`` tag), working directory, command."""
    out = slurm(conf, "squeue", "-h", "-t", "all", "-o", "%i|%u|%j|%V|%T|%k|%Z|%o")
    rows = []
    for line in out.splitlines():
        job_id, user, name, submit, state, comment, workdir, command = line.split("|", 7)
        if job_id.split("_")[0].isdigit() and int(job_id.split("_")[0]) > last_id:
            rows.append({"id": job_id, "user": user, "name": name, "submit": submit, "state": state,
                         "comment": comment, "workdir": workdir, "command": command})
    return sorted(rows, key=lambda j: int(j["id"].split("_")[0]))


def describe_jobs(rows: list[dict[str, str]]) -> str:
    """One line per job from :func:`submitted_after`, for an assertion message."""
    return "\n".join(" ".join(f"{k}={v}" for k, v in row.items()) for row in rows) or "(none listed)"


def wait_for(predicate, timeout: float, message: str, interval: float = 0.3) -> Any:
    """Poll until ``predicate()`` is truthy; return its value or fail with ``message``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(message)


def slurm_hub_yaml(data_dir: Path, slurm_conf: str) -> dict[str, Any]:
    """A deploy YAML for the dev cluster: cpu and gpu profiles, one asking for more GPUs than exist."""
    return hub_yaml(
        data_dir,
        backends={"cluster": {"type": "slurm", "slurm_conf": slurm_conf, "poll_interval": 2, "command_timeout": 20}},
        profiles=[
            {"slug": "cpu", "display_name": "CPU job", "backend": "cluster", "cpus": 1, "memory": "1G",
             "time_limit": "00:30:00", "default": True, "slurm": {"partition": "cpu"}},
            {"slug": "gpu-1", "display_name": "GPU job", "backend": "cluster", "cpus": 1, "gpus": 1,
             "time_limit": "00:30:00", "groups": ["gpu-users"], "slurm": {"partition": "gpu"}},
            {"slug": "gpu-9", "display_name": "Nine GPUs", "backend": "cluster", "cpus": 1, "gpus": 9,
             "slurm": {"partition": "gpu"}},
            {"slug": "short", "display_name": "Two minutes", "backend": "cluster", "cpus": 1, "time_limit": "00:02:00",
             "slurm": {"partition": "cpu"}},
            {"slug": "broken-env", "display_name": "Broken set-up", "backend": "cluster", "cpus": 1,
             "slurm": {"partition": "cpu", "setup": ["echo 'module python/9.9 not found' >&2", "exit 3"]}},
        ],
        walltime={"warn_before": "00:05:00", "save_before": "00:01:00"},  # the 2-minute job is warned at once
    )


@contextmanager
def started_slurm_hub(hub: Hub, slurm_conf: str, accounts: tuple[str, ...] = ("alice", "bob")) -> Iterator[Hub]:
    """Start ``hub`` (it submits to the dev cluster) with these accounts; afterwards stop it, its servers and their jobs."""
    for name in accounts:
        add_account(hub, name)
    hub.start()
    hub.slurm_conf = slurm_conf
    try:
        yield hub
    finally:
        hub.stop()
        hub.kill_servers()
        for name in accounts:
            subprocess.run(slurm_argv(slurm_conf, "scancel", f"--user={name}"), check=False,
                           env={"SLURM_CONF": slurm_conf, "PATH": "/usr/bin:/bin"})


#: the Slurm releases the contract suite runs on (deploy/slurm/dev-cluster's HPCLAB_SLURM_RELEASE) and their versions
RELEASES = {"bookworm": "22.05", "trixie": "24.11", "sid": "26.05"}
#: each release's cluster for the contract suite: its own prefix and ports (slurmctld; slurmd, slurmdbd and
#: MariaDB on the next three), apart from the full suite's host cluster (/tmp/hpclab-slurm-test, 6937-6940)
RELEASE_PORTS = {"bookworm": 6961, "trixie": 6965, "sid": 6969}


@contextmanager
def release_cluster(release: str) -> Iterator[tuple[str, str]]:
    """A one-node dev cluster of ``release`` with typed GPUs (a100), held by this test run alone (a lock per
    release); yields (SLURM_CONF, folder of its commands). Wiped first, stopped after."""
    import fcntl
    import sys

    prefix = f"/tmp/hpclab-slurm-rel-{release}"
    port = RELEASE_PORTS[release]
    env = dict(os.environ, HPCLAB_SLURM_RELEASE=release, HPCLAB_SLURM_PREFIX=prefix, HPCLAB_SLURM_GPU_TYPE="a100",
               HPCLAB_SLURM_CTLD_PORT=str(port), HPCLAB_SLURM_SLURMD_PORT=str(port + 1))
    with open(f"{prefix}.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            sys.stderr.write(f"\nrelease_cluster: another test run holds {lock.name}; waiting for it\n")
            fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run([str(DEV_CLUSTER), "wipe"], env=env, check=True, capture_output=True)
        try:
            subprocess.run([str(DEV_CLUSTER), "up"], env=env, check=True)
            bin_dir = subprocess.run([str(DEV_CLUSTER), "bin"], env=env, check=True, capture_output=True,
                                     text=True).stdout.strip()
            conf = f"{prefix}/etc/slurm.conf"
            BIN_DIRS[conf] = bin_dir
            yield conf, bin_dir
        finally:
            subprocess.run([str(DEV_CLUSTER), "down"], env=env, check=False, capture_output=True)
