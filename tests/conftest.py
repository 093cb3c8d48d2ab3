"""Shared fixtures: a real hub (JupyterHub + configurable-http-proxy) on free ports with test accounts."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hubtools import ADMIN_PASSWORD, HUB_CLI, Hub, HubClient, hub_yaml, make_reachable

USER_PASSWORD = "user-test-password-9"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def add_account(hub: Hub, name: str, password: str = USER_PASSWORD) -> None:
    """Create an approved local account with ``hpclab-hub users add`` (what an admin runs)."""
    subprocess.run(
        [str(HUB_CLI), "users", "add", name, "--config", str(hub.config_path), "--password-stdin"],
        input=password + "\n", text=True, check=True, capture_output=True,
    )


@contextmanager
def started_hub(workdir: Path, config: dict, accounts: tuple[str, ...] = ("alice", "bob")) -> Iterator[Hub]:
    """Start a hub from ``config`` with these local accounts; stop it and any servers it left afterwards."""
    instance = Hub(workdir, config)
    for name in accounts:
        add_account(instance, name)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
        instance.kill_servers()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A running hub with accounts admin, alice (gpu-users) and bob (no groups); one fake GPU id in the pool."""
    workdir = tmp_path_factory.mktemp("hub")
    with started_hub(workdir, hub_yaml(workdir / "state")) as instance:
        yield instance


def login(hub: Hub, name: str) -> HubClient:
    """A logged-in client for ``name`` (admin uses the bootstrap password)."""
    client = HubClient(hub)
    response = client.login(name, ADMIN_PASSWORD if name == "admin" else USER_PASSWORD)
    assert response.ok and "/hub/login" not in response.url, f"login as {name} failed: {response.status_code}"
    return client


@pytest.fixture
def artifacts() -> Path:
    """Folder for screenshots and other things a person may want to look at after a run."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


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


def browser_login(page, hub: Hub, name: str) -> None:
    """Log in through the hub's login page as ``name``."""
    page.goto(f"{hub.url}/hub/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", ADMIN_PASSWORD if name == "admin" else USER_PASSWORD)
    page.click("#login_submit")


def run_in_new_notebook(page, code: str) -> None:
    """In JupyterLab: open a notebook from the launcher, wait for its kernel, run ``code`` in the first cell.

    The workspace is reset first (``?reset``): a home folder reused across runs may restore old tabs.
    """
    page.goto(page.url.split("?")[0].split("/lab")[0] + "/lab?reset")
    page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click(timeout=120_000)
    editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
    editor.wait_for()
    page.locator(".jp-StatusBar-TextItem", has_text="Idle").first.wait_for(timeout=90_000)  # kernel connected
    editor.click()
    page.keyboard.type(code)
    page.keyboard.press("Shift+Enter")


def session_field(page, name: str) -> str:
    """Text of one row of the table hpclab.session() displays."""
    cell = page.locator("table.hpclab-session tr", has=page.locator("th", has_text=name)).locator("td").first
    cell.wait_for(timeout=90_000)
    return cell.inner_text().strip()


SLURM_PREFIX = Path("/tmp/hpclab-slurm-test")
DEV_CLUSTER = Path(__file__).resolve().parents[1] / "deploy" / "slurm" / "dev-cluster"


def _make_python_reachable_for_job_users() -> None:
    """Test set-up: jobs run as alice/bob and use the hub's venv, whose interpreter may sit under /root (pyenv)."""
    import sys

    make_reachable(Path(sys.executable))


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[str]:
    """A real one-node SLURM (Debian's slurmctld/slurmd/munge) from deploy/slurm/dev-cluster; yields SLURM_CONF."""
    import os

    if os.geteuid() != 0:
        pytest.skip("the SLURM dev cluster needs root (it starts slurmd and submits as test users)")
    env = dict(os.environ, HPCLAB_SLURM_PREFIX=str(SLURM_PREFIX), HPCLAB_SLURM_CTLD_PORT="6937", HPCLAB_SLURM_SLURMD_PORT="6938")
    subprocess.run([str(DEV_CLUSTER), "wipe"], env=env, check=True, capture_output=True)
    subprocess.run([str(DEV_CLUSTER), "up"], env=env, check=True)
    for name in ("alice", "bob"):
        if subprocess.run(["id", name], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-m", name], check=True)
    _make_python_reachable_for_job_users()
    try:
        yield str(SLURM_PREFIX / "etc" / "slurm.conf")
    finally:
        subprocess.run([str(DEV_CLUSTER), "down"], env=env, capture_output=True)
