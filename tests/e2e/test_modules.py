"""Environment modules in the lab (issue 30): Debian's Lmod, HPCLab's modulefiles for the curated kernels
(`hpclab-hub kernels install` writes them into the YAML's `modules.curated`) and a site's own folder
(`modules.modulepath`), on a real hub whose profile has the `modules` lab feature (jupyterlmod).

`module load` from a notebook (jupyterlmod's Python API, `await module.load(...)`) changes that kernel's environment,
and `module load` works in a JupyterLab terminal;
a load from the lab (jupyterlmod's panel and its REST API) changes the server's, which the next kernel inherits.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.browsertools import browser_login, run_in_new_notebook
from support.docs_images import docs_image
from support.hubprocess import make_reachable
from support.hubtools import hub_yaml, login, started_hub, stop_server
from support.kerneltools import run_in_kernel, user_token
from support.paths import REPO_ROOT

pytestmark = [pytest.mark.hub]

LMOD = Path("/usr/share/lmod/lmod")
HUB_CLI = Path(sys.executable).parent / "hpclab-hub"
#: a site's own modulefile: a tool on PATH and a variable, both only there once loaded
SITE_MODULE = """\
whatis("A site's tool")
setenv("HPCLAB_SITE_TOOL", "loaded")
prepend_path("PATH", "{bin}")
"""


@pytest.fixture(scope="module")
def modules_hub(tmp_path_factory):
    assert (LMOD / "libexec" / "lmod").exists(), "Lmod is missing: run `make system-packages` (Debian's lmod)"
    workdir = tmp_path_factory.mktemp("modules-hub")
    site = workdir / "site-modules"
    (site / "bin").mkdir(parents=True)
    tool = site / "bin" / "site-tool"
    tool.write_text("#!/bin/sh\necho site tool ran\n")
    tool.chmod(0o755)
    (site / "sitetool").mkdir()
    (site / "sitetool" / "1.0.lua").write_text(SITE_MODULE.format(bin=site / "bin"))
    config = hub_yaml(
        workdir / "state",
        profiles=[
            {"slug": "mods", "display_name": "With modules", "backend": "local", "cpus": 1, "memory": "2G",
             "lab_features": ["modules"], "default": True},
        ],
        kernels={
            "mri": {"display_name": "MRI", "description": "DICOM to NIfTI.",
                    "runtime": {"type": "venv", "prefix": str(REPO_ROOT / ".venv")},
                    "environment": {"MRI_DATA": "$HOME/mri-data"}},
        },
        modules={"curated": str(workdir / "modulefiles"), "modulepath": [str(site)]},
    )
    with started_hub(workdir, config) as hub:
        install = subprocess.run([str(HUB_CLI), "kernels", "install", "--config", str(hub.config_path), "--prefix",
                                  str(workdir / "kernels")], capture_output=True, text=True, timeout=120)
        assert install.returncode == 0, install.stderr
        assert f"modulefile mri -> {workdir / 'modulefiles' / 'mri.lua'}" in install.stdout, install.stdout
        for path in (workdir / "modulefiles" / "mri.lua", site / "sitetool" / "1.0.lua", tool):
            make_reachable(path)
            os.chmod(path.parent, 0o755)
        yield hub


async def _in_terminal(url: str, token: str, line: str, marker: str, timeout: float = 60) -> str:
    """Type ``line`` into a JupyterLab terminal (terminado's websocket) and return its output up to ``marker``."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    connection = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"}))
    await connection.write_message(json.dumps(["stdin", line + "\r"]))
    seen = ""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while marker not in seen:
        raw = await asyncio.wait_for(connection.read_message(), max(0.1, deadline - loop.time()))
        if raw is None:
            break
        kind, *rest = json.loads(raw)
        if kind == "stdout":
            seen += rest[0]
    connection.close()
    return seen


def test_module_load_in_a_notebook_changes_its_environment(modules_hub):
    alice = login(modules_hub, "alice")
    assert alice.post_spawn("alice", "mods").status_code == 302
    try:
        alice.wait_ready("alice")
        code = (
            "import os, subprocess, module\n"
            "def seen(): return [os.environ.get(k, '-') for k in ('HPCLAB_ENVIRONMENT', 'VIRTUAL_ENV', 'MRI_DATA',"
            " 'HPCLAB_SITE_TOOL')] + [os.environ['PATH'].split(':')[0]]\n"
            "print('before', *seen())\n"
            "error = await module.load('mri', 'sitetool')\n"
            "print('error', error)\n"
            "print('after', *seen())\n"
            "print('tool', subprocess.run(['site-tool'], capture_output=True, text=True).stdout.strip())\n"
            "print('listed', *subprocess.run([os.environ['LMOD_CMD'], 'bash', '--terse', 'list'], capture_output=True,"
            " text=True).stderr.split())\n"
        )
        out, error = run_in_kernel(alice, "alice", code)
        assert error == "", error
        lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
        home = "/".join(["", *modules_hub.config["backends"]["local"]["home_dir"].strip("/").split("/")[:-1], "alice"])
        venv = str(REPO_ROOT / ".venv")
        assert lines["before"].split()[:4] == ["-", "-", "-", "-"], lines  # nothing of the modules' before the load
        assert lines["error"] == "None", lines  # Lmod said nothing on stderr
        site_bin = str(Path(modules_hub.config["modules"]["modulepath"][0]) / "bin")
        # the curated modulefile's settings ($HOME expanded at load), the site's variable, the last load's PATH entry first
        assert lines["after"].split() == ["mri", venv, f"{home}/mri-data", "loaded", site_bin], lines
        assert lines["tool"] == "site tool ran"  # found on the PATH the module set
        assert lines["listed"].split() == ["mri", "sitetool/1.0"], lines

        # a terminal (a login shell: Lmod's /etc/profile.d/lmod.sh defines `module`, the server's MODULEPATH kept)
        token = user_token(alice, "alice")
        base = modules_hub.user_url("alice")
        terminal = alice.http.post(base + "api/terminals", headers={"Authorization": f"token {token}"}).json()["name"]
        url = base.replace("http", "ws", 1) + f"terminals/websocket/{terminal}"
        typed = "module load sitetool && echo tool=$HPCLAB_SITE_TOOL-$(site-tool | tr ' ' _)=e''nd"  # not echoed as typed
        seen = asyncio.run(_in_terminal(url, token, typed, "=end"))
        assert "tool=loaded-site_tool_ran=end" in seen, seen
    finally:
        stop_server(alice, "alice")


def test_a_load_from_the_lab_reaches_the_next_kernel(modules_hub):
    """jupyterlmod's REST API (what its panel calls): the modules available, a load, the list; a kernel started after
    the load runs in the loaded environment."""
    bob = login(modules_hub, "bob")
    assert bob.post_spawn("bob", "mods").status_code == 302
    try:
        bob.wait_ready("bob")
        base = modules_hub.user_url("bob")
        headers = {"Authorization": f"token {user_token(bob, 'bob')}"}
        available = bob.http.get(base + "module/modules", headers=headers)
        assert available.status_code == 200, available.text
        assert {"mri", "sitetool/1.0"} <= set(available.json()), available.json()
        assert bob.http.get(base + "module", headers=headers).json() == []
        loaded = bob.http.post(base + "module", headers=headers, json={"modules": ["sitetool"]})
        assert loaded.status_code == 200 and loaded.json() is None, loaded.text
        assert bob.http.get(base + "module", headers=headers).json() == ["sitetool/1.0"]
        code = "import os, shutil\nprint(os.environ.get('HPCLAB_SITE_TOOL'), shutil.which('site-tool'))"
        out, error = run_in_kernel(bob, "bob", code)
        tool = Path(modules_hub.config["modules"]["modulepath"][0]) / "bin" / "site-tool"
        assert error == "" and out.split() == ["loaded", str(tool)], (out, error)
    finally:
        stop_server(bob, "bob")


@pytest.mark.browser
def test_the_modules_panel_loads_a_curated_environment_for_the_next_notebook(modules_hub, browser, artifacts):
    """jupyterlmod's panel in Chromium: the curated `mri` module is listed, Load moves it to the loaded list, and a
    notebook opened after it runs with the module's environment."""
    alice = login(modules_hub, "alice")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(90_000)
    try:
        browser_login(page, modules_hub, "alice")
        page.wait_for_url("**/hub/spawn**")
        page.click("form#spawn_form [type=submit]")
        page.wait_for_url("**/user/alice/lab**", timeout=240_000)
        page.goto(page.url.split("/lab")[0] + "/lab?reset")
        page.locator('.jp-SideBar [data-id="module-jupyterlab"]').click()
        panel = page.locator("#module-jupyterlab")
        item = panel.locator("#module_avail_list li", has=page.locator("span", has_text="mri"))
        item.hover()  # the Load button shows on hover
        item.get_by_role("button", name="Load").click()
        panel.locator("#module_loaded_list li", has=page.locator("span", has_text="mri")).wait_for()
        page.wait_for_timeout(500)
        page.screenshot(path=str(docs_image(artifacts, "lab-modules.png")))
        run_in_new_notebook(page, "import os; print('environment:', os.environ['HPCLAB_ENVIRONMENT'], os.environ['VIRTUAL_ENV'])")
        page.locator(".jp-OutputArea-output", has_text="environment: mri").wait_for()
        assert f"environment: mri {REPO_ROOT / '.venv'}" in page.locator(".jp-OutputArea-output").first.inner_text()
    except Exception:
        page.screenshot(path=str(artifacts / "modules-failure.png"))
        raise
    finally:
        page.close()
        stop_server(alice, "alice")
