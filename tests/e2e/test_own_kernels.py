"""A user's own kernels beside the profile's curated ones (issue 30, item 6), on a real hub (local backend), in chromium.

alice makes her own venv on top of the curated one (the user guide's recipe: a venv whose ``.pth`` file adds the
curated packages) and installs its kernel for herself with ``python -m ipykernel install --user``. The profile offers
only the curated ``josephson`` kernel; her own kernel appears beside it in the launcher (hpclab.kernel_specs) and runs
her venv's Python, while kernels installed for the whole machine and not named by the profile stay hidden.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time

import psutil
import pytest

from support.browsertools import browser_login
from support.docs_images import docs_image
from support.hubtools import HUB_CLI, Hub, home_of, hub_yaml, login, make_reachable, started_hub, stop_server
from support.paths import REPO_ROOT

pytestmark = [pytest.mark.hub]

KERNELS = {"josephson": {"display_name": "Josephson (SciPy, numba, joblib)", "runtime": {"type": "venv", "prefix": str(REPO_ROOT / ".venv")}}}


def _own_venv_kernel(home, owner: tuple[int, int]) -> None:
    """The user guide's recipe, run in alice's home: a venv on top of the curated one, its kernel installed --user."""
    venv = home / "envs" / "cohort"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site / "curated.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = dict(os.environ, HOME=str(home))
    env.pop("JUPYTER_DATA_DIR", None)
    subprocess.run([str(venv / "bin" / "python"), "-m", "ipykernel", "install", "--user", "--name", "cohort",
                    "--display-name", "Cohort (my venv)"], check=True, env=env, capture_output=True)
    for path in [home / "envs", *(home / "envs").rglob("*"), home / ".local", *(home / ".local").rglob("*")]:
        os.chown(path, *owner, follow_symlinks=False)


def test_her_own_venv_kernel_appears_beside_the_profiles_and_runs_her_python(tmp_path, browser, artifacts):
    workdir = tmp_path / "hub"
    jupyter_path = {"JUPYTER_PATH": str(workdir / "kernels" / "share" / "jupyter")}
    config = hub_yaml(tmp_path / "state", kernels=KERNELS, profiles=[
        {"slug": "sweeps", "display_name": "Sweeps", "backend": "local", "cpus": 1, "memory": "3G", "kernels": ["josephson"],
         "default": True},
    ])
    config["backends"]["local"]["environment"] = jupyter_path
    hub = Hub(workdir, config)
    installed = subprocess.run([str(HUB_CLI), "kernels", "install", "--config", str(hub.config_path), "--prefix",
                                str(workdir / "kernels")], capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stderr
    make_reachable(workdir / "kernels" / "share" / "jupyter" / "kernels" / "josephson" / "kernel.json")
    with started_hub(workdir, config, accounts=("alice",)) as hub:
        alice = login(hub, "alice")
        base = hub.user_url("alice")

        def offered() -> set[str]:
            assert alice.post_spawn("alice", "sweeps").status_code == 302
            alice.wait_ready("alice")
            assert alice.http.get(base + "lab").status_code == 200  # logs in to the server (OAuth)
            return set(alice.http.get(base + "api/kernelspecs").json()["kernelspecs"])

        try:
            assert offered() == {"josephson"}  # ipykernel's python3, installed for the machine, stays hidden
        finally:
            stop_server(alice, "alice")

        home = home_of(hub.config["hub"]["data_dir"], "alice")
        _own_venv_kernel(home, (home.stat().st_uid, home.stat().st_gid))
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(90_000)
        try:
            assert offered() == {"josephson", "cohort"}
            started = alice.http.post(base + "api/kernels", json={"name": "cohort"},
                                      headers={"X-XSRFToken": alice.http.cookies.get("_xsrf", "", domain=f"alice.{hub.config['hub']['public_host']}") or ""})
            assert started.status_code == 201, started.text
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # her kernel is her venv's Python, as alice
                mine = [p for p in psutil.process_iter(["cmdline", "username"]) if str(home / "envs" / "cohort") in " ".join(p.info["cmdline"] or [])]
                if mine:
                    break
                time.sleep(0.5)
            assert mine and mine[0].info["username"] != "root", mine

            browser_login(page, hub, "alice")
            page.wait_for_url("**/user/alice/lab**", timeout=120_000)
            page.goto(base + "lab?reset")
            cards = page.locator('.jp-LauncherCard[data-category="Notebook"]')
            cards.filter(has_text="Cohort (my venv)").wait_for()
            assert sorted(cards.all_inner_texts()) == ["Cohort (my venv)", "Josephson (SciPy, numba, joblib)"]
            page.screenshot(path=str(docs_image(artifacts, "kernels-own.png")))
        except Exception:
            page.screenshot(path=str(artifacts / "own-kernels-failure.png"))
            raise
        finally:
            page.close()
            stop_server(alice, "alice")
