"""Debian's chromium through Playwright: its launch options and what tests do in JupyterLab pages."""

from __future__ import annotations

import shutil

from support.hubtools import ADMIN_PASSWORD, USER_PASSWORD, Hub


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
