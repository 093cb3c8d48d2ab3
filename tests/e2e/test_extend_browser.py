"""JupyterLab's "Extend" button in a real browser (Debian's chromium): one click gives the session more
wall time, within its profile's maximum, and the top bar shows the new end."""

from __future__ import annotations

import re

import pytest

from support.browsertools import browser_login
from support.hubtools import hub_yaml, login, started_hub, stop_server

pytestmark = [pytest.mark.hub, pytest.mark.browser]


@pytest.fixture(scope="module")
def flex_hub(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("extend")
    config = hub_yaml(workdir / "state", profiles=[{
        "slug": "flex", "display_name": "Flexible CPU", "backend": "local", "cpus": 1, "memory": "2G", "default": True,
        "time_limit": "00:20:00", "choices": {"time_limit": {"min": "00:10:00", "max": "01:00:00"}},
    }])
    with started_hub(workdir, config) as hub:
        yield hub


def _minutes_left(text: str) -> int:
    match = re.search(r"Job: (?:(\d+) h (\d+) min|(\d+) min) left", text)
    assert match, text
    hours, minutes, only = match.groups()
    return int(hours) * 60 + int(minutes) if hours else int(only)


def test_extend_button_gives_the_session_more_time(flex_hub, browser, artifacts):
    page = browser.new_page(viewport={"width": 1300, "height": 800})
    page.set_default_timeout(90_000)
    client = login(flex_hub, "alice")
    try:
        browser_login(page, flex_hub, "alice")
        page.goto(f"{flex_hub.url}/hub/spawn")
        page.click("form#spawn_form [type=submit]")
        page.wait_for_url("**/user/alice/lab**", timeout=120_000)
        label = page.locator("#hpclab-walltime")
        button = label.locator("button.hpclab-walltime-extend")
        button.wait_for()
        assert button.inner_text() == "Extend by 30 min"  # 40 more minutes are allowed; one click asks for 30
        before = _minutes_left(label.inner_text())
        assert 18 <= before <= 20
        button.click()
        toast = page.locator(".Toastify__toast--success", has_text=re.compile(r"This session now ends at .* \(wall time 00:50:00\)"))
        toast.first.wait_for()  # a success, not a warning; the end time in UTC as the hub's pages give it
        assert re.search(r"ends at \d\d:\d\d UTC", toast.first.inner_text()), toast.first.inner_text()
        page.wait_for_function("() => /Job: 4[89] min left/.test(document.querySelector('#hpclab-walltime').textContent)")
        page.screenshot(path=str(artifacts / "walltime-extended.png"))
        assert client.api("GET", "/hpclab/servers/alice").json()["time_limit"] == "00:50:00"
        # 10 minutes are left to add: the button now offers exactly that
        page.wait_for_function("() => document.querySelector('#hpclab-walltime button')?.textContent === 'Extend by 10 min'")
    finally:
        page.close()
        stop_server(client, "alice")
