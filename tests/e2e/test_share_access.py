"""Read and edit shares (issue 30, item 5) on a real hub with per-user host names and real-time collaboration.

alice shares her running server with bob read-only, from her server with its own token (as the user guide shows):
bob reads her notebook but cannot save, upload, rename or delete, start a kernel or a terminal, join her kernel, write
her lab's workspace, nor change the shared notebook through the collaboration room; he cannot make his share an edit
share, from the hub or with the token of his visit. alice makes it an edit share and bob can do all of that.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import requests
import websocket
from pycrdt import Array, Doc, YMessageType, create_sync_message, create_update_message, handle_sync_message

from support.browsertools import browser_login
from support.hubtools import home_of, hub_yaml, login, server_process, started_hub, stop_server, write_in_home
from support.slurmtools import wait_for

pytestmark = [pytest.mark.hub]

READ, WRITE, EXECUTE = (f"custom:jupyter_server:{action}:*" for action in ("read", "write", "execute"))
NOTEBOOK = json.dumps(
    {
        "cells": [{"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {}, "outputs": [], "source": "x = 1"}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
)


@pytest.fixture(scope="module")
def team_hub(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("share-access-hub")
    profiles = [
        {
            "slug": "team",
            "display_name": "Team",
            "backend": "local",
            "cpus": 1,
            "memory": "3G",
            "lab_features": ["collaboration"],
            "default": True,
        },
    ]
    with started_hub(workdir, hub_yaml(workdir / "state", profiles=profiles)) as hub:
        yield hub


class Visit:
    """One person in alice's server over HTTP: their OAuth login to it, its xsrf cookie, requests and WebSockets."""

    def __init__(self, hub, client) -> None:
        self.base, self.client = hub.user_url("alice"), client
        page = client.open_lab(self.base)  # logs in to alice's server (OAuth); a visitor authorizes it once
        assert page.status_code == 200 and page.url.startswith(self.base), (page.status_code, page.url)
        config = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', page.text, re.S)
        self.token = json.loads(config.group(1))["token"]  # the lab's token of this visit
        self.xsrf = client.http.cookies.get("_xsrf", "", domain=f"alice.{hub.config['hub']['public_host']}") or ""

    def ask(self, method: str, path: str, **kwargs) -> int:
        return self.client.http.request(method, self.base + path, headers={"X-XSRFToken": self.xsrf}, **kwargs).status_code

    def websocket(self, path: str) -> websocket.WebSocket:
        cookie = self.client.http.prepare_request(requests.Request("GET", self.base + path)).headers.get("Cookie", "")
        url = re.sub(r"^http", "ws", self.base + path)
        return websocket.create_connection(url, header=[f"Cookie: {cookie}"], timeout=20)

    def type_into_notebook(self, path: str, text: str) -> None:
        """Join the notebook's collaboration room as a lab does (y-protocols) and type ``text`` into its first cell."""
        session = self.client.http.put(
            self.base + f"api/collaboration/session/{path}",
            json={"format": "json", "type": "notebook"},
            headers={"X-XSRFToken": self.xsrf},
        )
        assert session.status_code in (200, 201), (session.status_code, session.text[:200])
        room_id, session_id = session.json()["fileId"], session.json()["sessionId"]
        room = self.websocket(f"api/collaboration/room/json:notebook:{room_id}?sessionId={session_id}")
        try:
            doc = Doc()
            room.send_binary(create_sync_message(doc))
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not len(doc.get("cells", type=Array)):
                message = room.recv()
                assert isinstance(message, bytes) and message, f"the room closed: {room.status} {message!r}"
                if message[0] == YMessageType.SYNC:
                    reply = handle_sync_message(message[1:], doc)
                    if reply is not None:
                        room.send_binary(reply)
            cells = doc.get("cells", type=Array)
            assert len(cells), "the room sent no notebook"
            before = doc.get_state()
            source = cells[0]["source"]
            source.insert(len(source), text)
            room.send_binary(create_update_message(doc.get_update(before)))
            time.sleep(1)  # the update on its way before the room closes
        finally:
            room.close()


def test_a_read_share_reads_and_changes_nothing_an_edit_share_edits(team_hub):
    hub = team_hub
    data_dir = hub.config["hub"]["data_dir"]
    notebook = home_of(data_dir, "alice") / "analysis.ipynb"
    write_in_home(data_dir, "alice", "analysis.ipynb", NOTEBOOK)
    alice_hub, bob_hub = login(hub, "alice"), login(hub, "bob")
    assert alice_hub.post_spawn("alice", "team").status_code == 302
    try:
        alice_hub.wait_ready("alice")
        alice = Visit(hub, alice_hub)
        kernel = alice.client.http.post(alice.base + "api/kernels", json={}, headers={"X-XSRFToken": alice.xsrf}).json()["id"]

        # from a terminal in her server: curl with $JUPYTERHUB_API_TOKEN (docs/user-guide.md)
        server_token = server_process(data_dir, "alice").environ()["JUPYTERHUB_API_TOKEN"]
        shares = f"{hub.url}/hub/api/shares/alice/"
        granted = requests.post(
            shares,
            json={"user": "bob", "scopes": ["access:servers", READ]},
            headers={"Authorization": f"token {server_token}"},
            verify=hub.verify,
        )
        assert granted.status_code == 200, granted.text
        assert sorted(granted.json()["scopes"]) == ["access:servers!server=alice/", f"{READ}!server=alice/"]

        bob = Visit(hub, bob_hub)
        change = {"type": "file", "format": "text", "content": "bob was here"}
        assert bob.ask("GET", "api/contents/analysis.ipynb") == 200
        assert bob.ask("GET", "files/analysis.ipynb") == 200
        assert bob.ask("PUT", "api/contents/analysis.ipynb", json=change) == 403  # save
        assert bob.ask("PUT", "api/contents/upload.txt", json=change) == 403  # upload
        assert bob.ask("PATCH", "api/contents/analysis.ipynb", json={"path": "moved.ipynb"}) == 403  # rename
        assert bob.ask("DELETE", "api/contents/analysis.ipynb") == 403
        assert bob.ask("POST", "api/kernels", json={}) == 403
        assert bob.ask("POST", "api/sessions", json={"path": "a.ipynb", "type": "notebook", "kernel": {"name": "python3"}}) == 403
        assert bob.ask("POST", "api/terminals") == 403
        assert bob.ask("PUT", "lab/api/workspaces/default", json={"data": {}, "metadata": {"id": "default"}}) == 403
        with pytest.raises(websocket.WebSocketBadStatusException, match="403"):
            bob.websocket(f"api/kernels/{kernel}/channels")
        bob.type_into_notebook("analysis.ipynb", "  # read-only bob")
        time.sleep(3)  # the room saves a change within a second or two
        assert "read-only bob" not in notebook.read_text()

        # bob cannot make it an edit share: not from the hub, not with the token of his visit to alice's server
        for attempt in (
            bob_hub.api("POST", "/shares/alice/", json={"user": "bob", "scopes": [WRITE, EXECUTE]}),
            requests.post(
                shares,
                json={"user": "bob", "scopes": [WRITE, EXECUTE]},
                headers={"Authorization": f"token {bob.token}"},
                verify=hub.verify,
            ),
        ):
            assert attempt.status_code in (403, 404), attempt.text
        assert bob.ask("PUT", "api/contents/analysis.ipynb", json=change) == 403

        # alice makes it an edit share: within the server's few seconds bob may do all of it
        upgraded = alice_hub.api("POST", "/shares/alice/", json={"user": "bob", "scopes": [WRITE, EXECUTE]})
        assert upgraded.status_code == 200, upgraded.text
        wait_for(lambda: bob.ask("PUT", "api/contents/upload.txt", json=change) in (200, 201), 30, "bob cannot write")
        assert bob.ask("PUT", "lab/api/workspaces/default", json={"data": {}, "metadata": {"id": "default"}}) in (200, 204)
        bob.websocket(f"api/kernels/{kernel}/channels").close()
        assert bob.ask("POST", "api/kernels", json={}) == 201
        assert bob.ask("POST", "api/terminals") == 200
        bob.type_into_notebook("analysis.ipynb", "  # editing bob")
        wait_for(lambda: "editing bob" in notebook.read_text(), 30, "bob's edit did not reach alice's notebook")
        assert "read-only bob" not in notebook.read_text()
    finally:
        stop_server(alice_hub, "alice")


@pytest.mark.browser
def test_alice_shares_read_only_from_her_lab(team_hub, browser, artifacts):
    """The lab's "Share this server read-only…" (the @hpclab/walltime extension) makes a share with the read scope."""
    hub = team_hub
    alice_hub = login(hub, "alice")
    login(hub, "bob")  # bob has logged in once: the hub knows him
    assert alice_hub.post_spawn("alice", "team").status_code == 302
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    try:
        alice_hub.wait_ready("alice")
        browser_login(page, hub, "alice")  # with her server running, the hub sends her on to her lab
        page.wait_for_url("**/user/alice/lab**")
        page.locator(".jp-LauncherCard").first.wait_for(timeout=120_000)
        page.keyboard.press("Control+Shift+c")  # the command palette
        page.keyboard.type("Share this server read-only")
        page.keyboard.press("Enter")
        page.locator(".jp-Dialog input").fill("bob")
        page.locator(".jp-Dialog .jp-mod-accept").click()
        page.locator(".jp-Notification-Toast-success", has_text="Shared read-only with bob").wait_for(timeout=30_000)
        page.screenshot(path=str(artifacts / "share-read-only.png"))
        (share,) = [s for s in alice_hub.api("GET", "/shares/alice/").json()["items"] if s["user"]["name"] == "bob"]
        assert sorted(share["scopes"]) == ["access:servers!server=alice/", f"{READ}!server=alice/"]
    except Exception:
        page.screenshot(path=str(artifacts / "share-read-only-failure.png"))
        raise
    finally:
        page.context.close()
        alice_hub.api("DELETE", "/shares/alice/")
        stop_server(alice_hub, "alice")


def test_a_groups_read_share_is_read_only_for_its_members(team_hub):
    """A share with a group holds its members to the share's scopes as a share with a person does: the server learns
    the visitor's groups from the visit's own token (hpclab_hub.web.sharing)."""
    hub = team_hub
    data_dir = hub.config["hub"]["data_dir"]
    write_in_home(data_dir, "alice", "notes.txt", "alice's notes")
    alice_hub, bob_hub, admin = login(hub, "alice"), login(hub, "bob"), login(hub, "admin")
    assert admin.api("POST", "/groups/tutors", json={"users": ["bob"]}).status_code in (200, 201)
    assert alice_hub.post_spawn("alice", "team").status_code == 302
    try:
        alice_hub.wait_ready("alice")
        granted = alice_hub.api("POST", "/shares/alice/", json={"group": "tutors", "scopes": ["access:servers", READ]})
        assert granted.status_code == 200, granted.text
        bob = Visit(hub, bob_hub)
        wait_for(lambda: bob.ask("GET", "api/contents/notes.txt") == 200, 30, "a tutor cannot read the shared server")
        change = {"type": "file", "format": "text", "content": "a tutor was here"}
        assert bob.ask("PUT", "api/contents/notes.txt", json=change) == 403
        assert bob.ask("POST", "api/terminals") == 403
        assert (home_of(data_dir, "alice") / "notes.txt").read_text() == "alice's notes"
    finally:
        alice_hub.api("DELETE", "/shares/alice/")
        admin.api("DELETE", "/groups/tutors")
        stop_server(alice_hub, "alice")
