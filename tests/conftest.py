"""Fixtures, one per real component: a hub (JupyterHub + configurable-http-proxy), Debian's chromium,
the one-node dev SLURM. Helpers live in the ``support`` package."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.browsertools import CHROMIUM, CHROMIUM_ARGS
from support.hubtools import Hub, hub_yaml, make_reachable, started_hub
from support.paths import REPO_ROOT
from support.slurmtools import DEV_CLUSTER, SLURM_PREFIX


ARTIFACTS = REPO_ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A running hub with accounts admin, alice (gpu-users) and bob (no groups); one fake GPU id in the pool."""
    workdir = tmp_path_factory.mktemp("hub")
    with started_hub(workdir, hub_yaml(workdir / "state")) as instance:
        yield instance


@pytest.fixture
def artifacts() -> Path:
    """Folder for screenshots and other things a person may want to look at after a run."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, headless, driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[str]:
    """A real one-node SLURM (Debian's slurmctld/slurmd/munge) from deploy/slurm/dev-cluster; yields SLURM_CONF."""
    if os.geteuid() != 0:
        pytest.skip("the SLURM dev cluster needs root (it starts slurmd and submits as test users)")
    env = dict(os.environ, HPCLAB_SLURM_PREFIX=str(SLURM_PREFIX), HPCLAB_SLURM_CTLD_PORT="6937", HPCLAB_SLURM_SLURMD_PORT="6938")
    for name in ("alice", "bob"):  # before the cluster: its reservation `course` is for them
        if subprocess.run(["id", name], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-m", name], check=True)
    subprocess.run([str(DEV_CLUSTER), "wipe"], env=env, check=True, capture_output=True)
    subprocess.run([str(DEV_CLUSTER), "up"], env=env, check=True)
    make_reachable(Path(sys.executable))  # jobs run as alice/bob and use the hub's venv, maybe under /root (pyenv)
    try:
        yield str(SLURM_PREFIX / "etc" / "slurm.conf")
    finally:
        subprocess.run([str(DEV_CLUSTER), "down"], env=env, capture_output=True)
