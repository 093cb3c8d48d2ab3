"""The home page with named servers, as a scientist clicks through it in a real browser (Debian's
chromium): a stopped named server is listed with "Start again" (the page used to answer 500), the
Choices column follows an extension, and an "open this example" link over the quota says so on the
form and leaves no server record behind."""

from __future__ import annotations

import html
import re
from urllib.parse import urlparse

import pytest

from support.browsertools import browser_login
from support.hubtools import hub_yaml, login, started_hub, stop_server

pytestmark = [pytest.mark.hub, pytest.mark.browser]


@pytest.fixture(scope="module")
def named_hub(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("home-named")
    config = hub_yaml(
        workdir / "state",
        profiles=[
            {"slug": "cpu-small", "display_name": "CPU small", "backend": "local", "cpus": 1, "memory": "2G", "default": True},
            {"slug": "teaching", "display_name": "Teaching", "backend": "local", "cpus": 1, "memory": "2G",
             "time_limit": "00:20:00", "choices": {"time_limit": {"min": "00:10:00", "max": "01:00:00"}}},
            {"slug": "course", "display_name": "Course", "backend": "local", "cpus": 1, "memory": "2G"},
        ],
        quotas={"per_user": {"servers": 2}},
    )
    config["hub"].update(named_servers=True, named_server_limit=3)
    with started_hub(workdir, config) as hub:
        yield hub


def test_a_stopped_named_server_is_listed_and_start_again_brings_it_back(named_hub, browser, artifacts):
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.set_default_timeout(90_000)
    client = login(named_hub, "alice")
    try:
        browser_login(page, named_hub, "alice")
        page.goto(f"{named_hub.url}/hub/spawn/alice/teach?profile=teaching")
        assert page.locator("#profile-teaching").is_checked()
        page.fill("#teaching--time_limit", "00:20:00")
        page.click("form#spawn_form [type=submit]")
        page.wait_for_url("**/user/alice/teach/lab**", timeout=120_000)
        stop_server(client, "alice", server_name="teach")

        response = page.goto(f"{named_hub.url}/hub/home")
        assert response is not None and response.status == 200, response and response.status
        row = page.locator('#hpclab-servers tr[data-server-name="teach"]')
        assert re.search(r"teach\s+Teaching\s+.*up to 00:20:00.*\s+stopped", row.inner_text(), re.S), row.inner_text()
        page.screenshot(path=str(artifacts / "home-stopped-named-server.png"))
        row.locator("a.hpclab-relaunch").click()
        # the form comes back filled in with the last start's choices; nothing starts until Start
        page.locator("#hpclab-link-note").wait_for()
        assert page.locator("#profile-teaching").is_checked() and page.input_value("#teaching--time_limit") == "00:20:00"
        assert "teach" not in client.api("GET", "/users/alice").json()["servers"]  # the link alone started nothing
        page.click("form#spawn_form [type=submit]")
        page.wait_for_url("**/user/alice/teach/lab**", timeout=120_000)
        server = client.wait_ready("alice", server_name="teach")
        assert server["user_options"] == {"profile": "teaching", "time_limit": "00:20:00"}
    finally:
        page.close()
        stop_server(client, "alice", server_name="teach")
        client.api("DELETE", "/users/alice/servers/teach", json={"remove": True})


def test_the_choices_column_and_the_banner_follow_an_extension(named_hub):
    alice = login(named_hub, "alice")
    started = alice.api("POST", "/users/alice/server", json={"profile": "teaching", "time_limit": "00:20:00"})
    assert started.status_code in (201, 202), started.text
    try:
        alice.wait_ready("alice")
        assert alice.api("POST", "/hpclab/servers/alice/extend", json={"minutes": 30}).status_code == 200
        home = alice.http.get(f"{named_hub.url}/hub/home").text
        row = re.search(r'data-server-name="">.*?</tr>', home, re.S).group(0)
        assert "up to 00:50:00" in row and "up to 00:20:00" not in row, row
        # with several servers possible, the banner says which one it speaks of
        banner = re.search(r'id="hpclab-time-left"[^>]*>(.*?)</div>', home, re.S).group(1)
        assert re.match(r"\s*Your default server has (49|50) min", banner), banner
    finally:
        stop_server(alice, "alice")


def test_an_open_link_over_the_quota_says_so_on_the_form_and_leaves_nothing_behind(named_hub):
    bob = login(named_hub, "bob")
    assert bob.post_spawn("bob", "cpu-small").status_code == 302
    assert bob.post_spawn("bob", "teaching", server_name="second").status_code == 302
    try:
        bob.wait_ready("bob")
        bob.wait_ready("bob", server_name="second")
        link = bob.http.get(f"{named_hub.url}/hub/hpclab/open", params={"profile": "course", "path": "examples/josephson-sweep.ipynb"},
                            allow_redirects=False)
        assert link.status_code == 302 and urlparse(link.headers["Location"]).path == "/hub/spawn/bob/course"
        page = bob.follow_spawn_link(link.headers["Location"])  # the form, filled in; bob presses Start
        assert page.status_code == 429
        text = html.unescape(page.text)
        assert "your quota (bob): 2 of 2 servers in use; this profile needs 1 more. Stop one of your servers on the home page first." in text
        assert "HTTP 429" not in text and "error (" not in text
        assert re.findall(r'value="([a-z0-9-]+)"\s+checked', page.text) == ["course"]  # the link's profile, not the last one
        # nothing left behind: no stopped "course" server counting against named_server_limit, and home answers
        assert set(bob.api("GET", "/users/bob?include_stopped_servers=1").json()["servers"]) == {"", "second"}
        assert bob.http.get(f"{named_hub.url}/hub/home").status_code == 200
        # the form only shown for a new name records nothing either
        assert bob.http.get(f"{named_hub.url}/hub/spawn/bob/later").status_code == 200
        assert set(bob.api("GET", "/users/bob?include_stopped_servers=1").json()["servers"]) == {"", "second"}
    finally:
        stop_server(bob, "bob", server_name="second")
        stop_server(bob, "bob")


def test_each_server_keeps_its_own_jupyterlab_workspace(named_hub):
    """Open tabs are saved per server: a new named server does not reopen those of the default one."""
    alice = login(named_hub, "alice")
    assert alice.post_spawn("alice", "cpu-small").status_code == 302
    assert alice.post_spawn("alice", "course", server_name="other").status_code == 302
    try:
        alice.wait_ready("alice")
        alice.wait_ready("alice", server_name="other")
        token = alice.api("POST", "/users/alice/tokens", json={"note": "workspace test"}).json()["token"]
        headers = {"Authorization": f"token {token}"}
        workspace = {"data": {"layout-restorer:data": {"main": {"dock": None}}}, "metadata": {"id": "analysis"}}
        saved = alice.http.put(named_hub.user_url("alice") + "lab/api/workspaces/analysis", json=workspace, headers=headers)
        assert saved.status_code == 204, saved.text

        def workspace_ids(server: str) -> list[str]:
            answer = alice.http.get(named_hub.user_url("alice", server) + "lab/api/workspaces", headers=headers)
            assert answer.status_code == 200, answer.text
            return answer.json()["workspaces"]["ids"]

        assert "analysis" in workspace_ids("")
        assert "analysis" not in workspace_ids("other")
        # widgets' state is saved with the notebook: a reopened one shows them, not "model not found"
        widgets = alice.http.get(named_hub.user_url("alice", "other") + "lab/api/settings/@jupyter-widgets/jupyterlab-manager:plugin",
                                 headers=headers)
        assert widgets.status_code == 200, widgets.text  # the site's overrides become the schema's defaults
        assert widgets.json()["schema"]["properties"]["saveState"]["default"] is True, widgets.text
    finally:
        stop_server(alice, "alice", server_name="other")
        stop_server(alice, "alice")
        alice.api("DELETE", "/users/alice/servers/other", json={"remove": True})
