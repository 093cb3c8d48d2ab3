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

from support.browsertools import browser_login
from support.docs_images import docs_image
from support.hubtools import home_of, hub_yaml, login, started_hub, stop_server, write_in_home
from support.labsteps import close_dialog, edit_together, open_notebook, open_share_from_home, revoke_shuts_out, share_from_dialog
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
        open_notebook(alice, lab_url, "analysis.ipynb")

        # the share dialog of jupyter-collaboration, on JupyterHub's sharing API: alice picks bob
        share_from_dialog(alice, alice_api, "alice", "bob")
        alice.screenshot(path=str(docs_image(artifacts, "collaboration-share.png")))
        close_dialog(alice)

        # bob finds it on his home page and opens it (the hub asks him once whether alice's server may know him)
        browser_login(bob, hub, "bob")
        open_share_from_home(bob, hub, "alice")
        open_notebook(bob, lab_url, "analysis.ipynb")

        # both edit the one notebook: each sees the other's text, and the other's cursor with their name
        edit_together(alice, bob, "bob")
        alice.screenshot(path=str(docs_image(artifacts, "collaboration-editing.png")))

        # the server saves the shared document itself (jupyter-server-ydoc): the file on disk has both edits
        saved = home_of(hub.config["hub"]["data_dir"], "alice") / "analysis.ipynb"
        wait_for(lambda: "from the visitor" in saved.read_text() and "from the owner" in saved.read_text(), 30, "not saved")

        # alice revokes the share from the same dialog: bob is shut out of her server within the hub's 30 s, nor does
        # the notebook he still has open reach hers any more
        revoke_shuts_out(alice, bob, alice_api, "alice", lab_url, "analysis.ipynb")
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
