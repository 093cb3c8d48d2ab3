"""Working together (issue 30, item 5) on a real hub with per-user host names, in two Debian chromiums.

The ``collaboration`` lab feature (jupyter-collaboration) turns on real-time collaboration on its profile only.
alice shares her running server with bob from jupyter-collaboration's share dialog (JupyterHub's sharing API,
hpclab_hub/web/sharing.py), bob opens it from "Shared with you" on his home page, both edit one notebook and see
each other's text and cursor, alice saves it with both edits, and revoking the share shuts bob out.
"""

from __future__ import annotations

import json
import re

import pytest

from hpclab.share_guard import CHECK_EVERY_MS
from support.browsertools import browser_login
from support.docs_images import docs_image
from support.hubtools import home_of, hub_yaml, login, started_hub, stop_server, write_in_home
from support.slurmtools import wait_for

pytestmark = [pytest.mark.hub]

NOTEBOOK = json.dumps(
    {
        "cells": [{"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {}, "outputs": [], "source": []}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
)
COLLABORATION_PLUGINS = ("@jupyter/collaboration-extension", "@jupyter/docprovider-extension")


@pytest.fixture(scope="module")
def collab_hub(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("collab-hub")
    profiles = [
        {"slug": "team", "display_name": "Team", "backend": "local", "cpus": 1, "memory": "3G",
         "lab_features": ["collaboration"]},
        {"slug": "plain", "display_name": "Plain", "backend": "local", "cpus": 1, "memory": "3G", "default": True},
    ]
    with started_hub(workdir, hub_yaml(workdir / "state", profiles=profiles)) as hub:
        yield hub


def _page_config(html: str) -> dict:
    found = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', html, re.S)
    assert found, html[:500]
    return json.loads(found.group(1))


def test_collaboration_is_on_for_its_profile_and_off_for_the_others(collab_hub):
    """The server half (the collaboration room API) and the JupyterLab half (page config) follow the profile."""
    alice = login(collab_hub, "alice")
    write_in_home(collab_hub.config["hub"]["data_dir"], "alice", "analysis.ipynb", NOTEBOOK)
    for slug, on in (("team", True), ("plain", False)):
        assert alice.post_spawn("alice", slug).status_code == 302
        try:
            alice.wait_ready("alice")
            base = collab_hub.user_url("alice")
            lab = alice.http.get(base + "lab")  # logs in to the server (OAuth)
            disabled = _page_config(lab.text)["disabledExtensions"]
            assert all((plugin in disabled) != on for plugin in COLLABORATION_PLUGINS), disabled
            xsrf = alice.http.cookies.get("_xsrf", "", domain=f"alice.{collab_hub.config['hub']['public_host']}") or ""
            room = alice.http.put(
                base + "api/collaboration/session/analysis.ipynb",
                json={"format": "json", "type": "notebook"},
                headers={"X-XSRFToken": xsrf},
            )
            assert (room.status_code in (200, 201)) == on, (slug, room.status_code, room.text[:200])
            if on:
                assert room.json()["fileId"] and room.json()["sessionId"]
        finally:
            stop_server(alice, "alice")


def _open_notebook(page, lab_url: str) -> None:
    page.goto(lab_url + "lab/tree/analysis.ipynb?reset")
    page.locator(".jp-Notebook .jp-Cell .cm-content").first.wait_for(timeout=120_000)


def _share_dialog(page):
    """Open jupyter-collaboration's share dialog from the top bar (a click while the lab still starts may be lost)."""
    dialog = page.locator(".jp-Dialog", has=page.locator(".jp-ManageSharesBody-search-container"))
    for _ in range(4):
        page.locator('[data-command="collaboration:shared-link"]').first.click()
        try:
            dialog.wait_for(timeout=20_000)
            return dialog
        except Exception:
            page.keyboard.press("Escape")
    raise AssertionError("the share dialog did not open (or opened without JupyterHub's sharing)")


def _first_cell_text(page) -> str:
    return page.locator(".jp-Notebook .jp-Cell .cm-content").first.inner_text()


@pytest.mark.browser
def test_alice_shares_from_the_lab_bob_edits_with_her_and_the_revoke_shuts_him_out(collab_hub, browser, artifacts):
    hub = collab_hub
    write_in_home(hub.config["hub"]["data_dir"], "alice", "analysis.ipynb", NOTEBOOK)
    alice_api, bob_api = login(hub, "alice"), login(hub, "bob")
    lab_url = hub.user_url("alice")
    alice_ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    bob_ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    alice, bob = alice_ctx.new_page(), bob_ctx.new_page()
    failed: list[str] = []
    for page in (alice, bob):
        page.set_default_timeout(90_000)
        page.on("requestfailed", lambda request: failed.append(f"{request.url} {request.failure}"))
    try:
        browser_login(alice, hub, "alice")
        alice.wait_for_url("**/hub/spawn**")
        alice.check("#profile-team")
        alice.click("form#spawn_form [type=submit]")
        alice.wait_for_url("**/user/alice/lab**", timeout=240_000)
        assert alice.url.startswith(lab_url)  # alice's own origin
        _open_notebook(alice, lab_url)

        # the share dialog of jupyter-collaboration, on JupyterHub's sharing API: alice picks bob
        dialog = _share_dialog(alice)
        dialog.locator(".jp-ManageSharesBody-user-item", has_text="bob").click()
        dialog.locator(".jp-ManageSharesBody-shares-table", has_text="bob").wait_for()
        assert [s["user"]["name"] for s in alice_api.api("GET", "/shares/alice/").json()["items"]] == ["bob"]
        alice.screenshot(path=str(docs_image(artifacts, "collaboration-share.png")))
        dialog.get_by_role("button", name="Close").click()

        # bob finds it on his home page and opens it (the hub asks him once whether alice's server may know him)
        browser_login(bob, hub, "bob")
        bob.goto(f"{hub.url}/hub/home")
        row = bob.locator("#hpclab-shared .hpclab-shared-row", has_text="alice")
        row.locator(".hpclab-shared-open").click()
        bob.get_by_role("button", name="Authorize").click()
        bob.wait_for_url(f"{lab_url}lab**", timeout=120_000)
        _open_notebook(bob, lab_url)

        # both edit the one notebook: each sees the other's text, and the other's cursor with their name
        alice.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
        alice.keyboard.type("cohort = 'from alice'")
        wait_for(lambda: "from alice" in _first_cell_text(bob), 30, "bob does not see alice's typing")
        bob.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
        bob.keyboard.press("Control+End")
        bob.keyboard.press("Enter")
        bob.keyboard.type("tutor = 'from bob'")
        wait_for(lambda: "from bob" in _first_cell_text(alice), 30, "alice does not see bob's typing")
        flag = alice.locator(".jp-remote-cursor .jp-remote-userFlag-name", has_text="bob").or_(
            alice.locator(".jp-remote-userFlag", has_text="bob")
        )
        bob.keyboard.type("  # here")
        flag.first.wait_for(state="attached", timeout=30_000)
        assert bob.locator(".jp-remote-cursor").count() >= 1  # alice's cursor in bob's browser
        alice.screenshot(path=str(docs_image(artifacts, "collaboration-editing.png")))

        # the server saves the shared document itself (jupyter-server-ydoc): the file on disk has both edits
        saved = home_of(hub.config["hub"]["data_dir"], "alice") / "analysis.ipynb"
        wait_for(lambda: "from bob" in saved.read_text() and "from alice" in saved.read_text(), 30, "not saved")

        # alice revokes the share from the same dialog: bob is shut out of her server within the hub's 30 s
        dialog = _share_dialog(alice)
        dialog.get_by_role("button", name="Revoke").click()
        wait_for(lambda: not alice_api.api("GET", "/shares/alice/").json()["items"], 30, "the share is still there")
        dialog.get_by_role("button", name="Close").click()

        def bob_shut_out() -> bool:
            answer = bob.request.get(lab_url + "api/contents/analysis.ipynb", max_redirects=0)
            return answer.status in (302, 403)

        wait_for(bob_shut_out, 75, "bob still reads alice's notebook after the revoke")
        # nor does the notebook he still has open reach hers any more: the server closes his open connections at
        # its next check (hpclab.share_guard), and the hub refuses them when his lab tries again
        bob.wait_for_timeout(CHECK_EVERY_MS + 2000)
        while bob.locator(".jp-Dialog").count():  # his lab says it lost the kernel: he dismisses that and types on
            bob.locator(".jp-Dialog .jp-mod-accept, .jp-Dialog .jp-mod-reject").first.click()
            bob.wait_for_timeout(500)
        bob.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
        bob.keyboard.type("  # after the revoke")
        alice.wait_for_timeout(5000)
        assert "after the revoke" not in _first_cell_text(alice)
        assert 'id="hpclab-shared"' not in bob_api.http.get(f"{hub.url}/hub/home").text
    except Exception:
        for who, page in (("alice", alice), ("bob", bob)):
            page.screenshot(path=str(artifacts / f"collaboration-{who}-failure.png"))
        print("failed requests:", *failed, sep="\n")
        raise
    finally:
        alice_ctx.close()
        bob_ctx.close()
        stop_server(alice_api, "alice")
