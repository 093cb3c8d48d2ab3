"""A real browser (Debian's chromium via Playwright) from login to a notebook that reports its cores."""

from __future__ import annotations

import shutil

import pytest

from conftest import login
from hubtools import ADMIN_PASSWORD, stop_server

pytestmark = [pytest.mark.hub, pytest.mark.browser]

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
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def test_admin_logs_in_picks_cpu_profile_and_notebook_reports_its_cores(hub, browser, artifacts):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{hub.url}/hub/login")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", ADMIN_PASSWORD)
        page.click("#login_submit")

        page.wait_for_url("**/hub/spawn**")
        assert page.locator("input[name=profile][value=gpu-1]").count() == 1  # admin is in gpu-users
        page.screenshot(path=str(artifacts / "spawn-form.png"), full_page=True)
        page.check("input[name=profile][value=cpu-small]")
        page.click("form#spawn_form [type=submit]")

        page.wait_for_url("**/user/admin/lab**", timeout=120_000)
        page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
        editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
        editor.wait_for()
        page.locator(".jp-StatusBar-TextItem", has_text="Idle").first.wait_for(timeout=90_000)  # kernel connected
        editor.click()
        page.keyboard.type("import hpclab; hpclab.session()")
        page.keyboard.press("Shift+Enter")

        cores_cell = page.locator("table.hpclab-session tr", has=page.locator("th", has_text="cores")).locator("td").first
        cores_cell.wait_for(timeout=90_000)
        page.screenshot(path=str(artifacts / "jupyterlab-session.png"), full_page=True)
        assert cores_cell.inner_text().strip() == "1", "the cpu-small profile gives one core"
    except Exception:
        page.screenshot(path=str(artifacts / "browser-failure.png"), full_page=True)
        raise
    finally:
        page.close()
        stop_server(login(hub, "admin"), "admin")
