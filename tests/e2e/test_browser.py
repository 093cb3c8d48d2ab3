"""A real browser (Debian's chromium via Playwright) from login to a notebook that reports its cores."""

from __future__ import annotations

import pytest

from support.browsertools import browser_login, run_in_new_notebook, session_field
from support.hubtools import login, stop_server


pytestmark = [pytest.mark.hub, pytest.mark.browser]


def test_admin_logs_in_picks_cpu_profile_and_notebook_reports_its_cores(hub, browser, artifacts):
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.set_default_timeout(60_000)
    try:
        browser_login(page, hub, "admin")

        page.wait_for_url("**/hub/spawn**")
        assert page.locator("input[name=profile][value=gpu-1]").count() == 1  # admin is in gpu-users
        page.screenshot(path=str(artifacts / "spawn-form.png"), full_page=True)
        page.check("input[name=profile][value=cpu-small]")
        page.click("form#spawn_form [type=submit]")

        page.wait_for_url("**/user/admin/lab**", timeout=120_000)
        run_in_new_notebook(page, "import hpclab; hpclab.session()")
        cores = session_field(page, "cores")
        page.screenshot(path=str(artifacts / "jupyterlab-session.png"), full_page=True)
        assert cores == "1", "the cpu-small profile gives one core"

        # a second window of the same lab gets a workspace of its own, decided by hpclab's Web Lock on the name
        # (JupyterLab's own resolver, which waits 200-500 ms on every page load to decide it, is off: issue 32)
        config = page.evaluate("JSON.parse(document.getElementById('jupyter-config-data').textContent)")
        assert "@jupyterlab/apputils-extension:resolver" in config["disabledExtensions"]
        second = page.context.new_page()
        second.goto(page.url.split("/lab")[0] + "/lab")
        second.wait_for_url("**/lab/workspaces/auto-*", timeout=60_000)
        second.locator(".jp-LauncherCard").first.wait_for(timeout=60_000)  # and it starts
        assert "/lab/workspaces/" not in page.url  # the first window keeps the default workspace
        second.close()
    except Exception:
        page.screenshot(path=str(artifacts / "browser-failure.png"), full_page=True)
        raise
    finally:
        page.context.close()
        stop_server(login(hub, "admin"), "admin")
