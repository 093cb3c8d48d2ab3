"""Fixtures, one per real component: a hub (JupyterHub + configurable-http-proxy), Debian's chromium,
the one-node dev SLURM. Helpers live in the ``support`` package."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.apptiles import train_events
from support.browsertools import CHROMIUM, CHROMIUM_ARGS
from support.hubtools import Hub, hub_yaml, make_reachable, started_hub
from support.paths import REPO_ROOT
from support.slurmtools import DEV_CLUSTER, SLURM_PORT, SLURM_PREFIX, jobs

ARTIFACTS = REPO_ROOT / "test-artifacts"


#: fixtures that bring up a real component (a hub, the dev SLURM, chromium, a training run): a test that uses one,
#: directly or through another fixture, is not in the fast lane
REAL_FIXTURES = frozenset({"hub", "browser", "slurm_cluster", "training_events"})
#: the shared helpers that start a real component: a test, or a fixture of its own module, that calls one is not either
REAL_STARTERS = frozenset({"started_hub", "started_slurm_hub", "Hub", "HubProcess", "MultiNodeCluster", "sync_playwright"})


def _starts_something_real(item: pytest.Item) -> bool:
    functions = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)  # pytest's record of the fixtures a test function uses
    for name, definitions in (info.name2fixturedefs if info is not None else {}).items():
        if name in REAL_FIXTURES:
            return True
        functions += [definition.func for definition in definitions]
    return any(REAL_STARTERS & set(getattr(getattr(f, "__code__", None), "co_names", ())) for f in functions)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The fast lane (``make check``: ``-m fast``) is every test that is not marked hub, browser or slow and starts no
    real component (REAL_FIXTURES, REAL_STARTERS): a new unit test is in it without being listed anywhere."""
    for item in items:
        if any(item.get_closest_marker(name) for name in ("hub", "browser", "slow")) or _starts_something_real(item):
            continue
        item.add_marker(pytest.mark.fast)


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
def training_events(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """TensorBoard event files of a real two-epoch `hpclab train` run on scikit-learn's digits (about 10 s), made
    once for the apps' browser tests of both backends."""
    return train_events(tmp_path_factory.mktemp("train-run"))


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[str]:
    """A real one-node SLURM (Debian's slurmctld/slurmd/munge) from deploy/slurm/dev-cluster; yields SLURM_CONF."""
    if os.geteuid() != 0:
        pytest.skip("the SLURM dev cluster needs root (it starts slurmd and submits as test users)")
    env = dict(os.environ, HPCLAB_SLURM_PREFIX=str(SLURM_PREFIX), HPCLAB_SLURM_CTLD_PORT=str(SLURM_PORT),
               HPCLAB_SLURM_SLURMD_PORT=str(SLURM_PORT + 1))
    # one test run at a time on this cluster: another run's wipe would pull it away, and its jobs would count here
    lock = open(f"{SLURM_PREFIX}.lock", "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.stderr.write(f"\nslurm_cluster: another test run holds {lock.name}; waiting for it to finish\n")
        fcntl.flock(lock, fcntl.LOCK_EX)
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
        lock.close()


@pytest.fixture(autouse=True)
def _slurm_jobs_end_with_their_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test on the dev cluster leaves no job of its own queued or running: every cluster, hub or job it
    started is closed by its end (else the next test sees jobs it did not submit). Leftovers fail the test
    and are cancelled."""
    if "slurm_cluster" not in request.fixturenames:
        yield
        return
    conf = request.getfixturevalue("slurm_cluster")
    before = {j["id"] for j in jobs(conf, "all")}
    yield
    deadline = time.monotonic() + 15  # a hub's stop or dask's close may still be cancelling
    while (left := [j for j in jobs(conf) if j["id"] not in before]) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        subprocess.run(["scancel", *(j["id"] for j in left)], env=dict(os.environ, SLURM_CONF=conf), capture_output=True)
        pytest.fail(f"{request.node.nodeid} left SLURM jobs queued or running (cancelled now): {left}", pytrace=False)
