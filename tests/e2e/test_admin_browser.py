"""The admins' page of servers in a real browser (Debian's chromium): JupyterHub's admin page (its React app) still
draws, with HPCLab's button above it; the button opens the page where alice's running server has its profile, job,
node and time left in words."""

from __future__ import annotations

import re
import socket

import pytest

from support.browsertools import browser_login
from support.hubtools import hub_yaml, login, started_hub, stop_server

pytestmark = [pytest.mark.hub, pytest.mark.browser]


@pytest.mark.timeout(300)
def test_the_admin_page_links_to_the_servers_page_which_shows_a_running_server(tmp_path, browser, artifacts):
    config = hub_yaml(tmp_path / "state")
    config["profiles"][0]["time_limit"] = "01:00:00"
    with started_hub(tmp_path, config) as hub:
        alice = login(hub, "alice")
        assert alice.api("POST", "/users/alice/server", json={"profile": "cpu-small"}).status_code in (201, 202)
        alice.wait_ready("alice", timeout=180)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)
        try:
            browser_login(page, hub, "admin")
            page.goto(f"{hub.url}/hub/admin")
            page.get_by_text("alice", exact=True).first.wait_for()  # JupyterHub's React app drew its table
            page.click("#hpclab-admin-link")
            page.wait_for_url("**/hub/hpclab/admin")
            row = page.locator('tr.hpclab-admin-server[data-user="alice"]')
            assert row.locator(".a-profile").inner_text() == "CPU small (cpu-small)"
            assert re.fullmatch(r"pid \d+", row.locator(".a-job").inner_text())
            assert row.locator(".a-node").inner_text() == socket.gethostname()
            assert re.fullmatch(r"5\d min \d\d s left \(ends \d\d:\d\d UTC\)", row.locator(".a-time-left").inner_text())
            page.screenshot(path=str(artifacts / "admin-servers.png"))
        finally:
            page.close()
            stop_server(alice, "alice")
