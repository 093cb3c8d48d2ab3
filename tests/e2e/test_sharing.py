"""Sharing a running server through JupyterHub's sharing API (issue 30), on a real hub with per-user host names:
alice shares her server with bob, bob reaches it at alice's own host name, alice revokes the share and bob is
shut out again; a share is alice's to give, not bob's to take."""

from __future__ import annotations


import pytest

from support.hubtools import hub_yaml, login, started_hub, stop_server
from support.slurmtools import wait_for

pytestmark = [pytest.mark.hub]


@pytest.fixture(scope="module")
def sharing_hub(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sharing-hub")
    with started_hub(workdir, hub_yaml(workdir / "state")) as hub:
        yield hub


def test_alice_shares_her_server_with_bob_and_revoking_shuts_him_out(sharing_hub):
    assert sharing_hub.subdomains  # alice's server at alice.<host>: bob's visit is on alice's origin
    alice, bob = login(sharing_hub, "alice"), login(sharing_hub, "bob")
    assert alice.post_spawn("alice", "cpu-small").status_code == 302
    try:
        alice.wait_ready("alice")
        contents = sharing_hub.user_url("alice") + "api/contents"

        def bob_reads() -> int:
            bob.open_lab(sharing_hub.user_url("alice"))  # logs in to alice's server if he may (OAuth)
            return bob.http.get(contents).status_code

        assert bob_reads() == 403
        assert bob.api("POST", "/shares/alice/", json={"user": "bob"}).status_code in (403, 404)  # not his to take
        granted = alice.api("POST", "/shares/alice/", json={"user": "bob"})
        assert granted.status_code == 200, granted.text
        assert [s["user"]["name"] for s in alice.api("GET", "/shares/alice/").json()["items"]] == ["bob"]
        assert bob_reads() == 200
        assert alice.api("DELETE", "/shares/alice/", json={"user": "bob"}).status_code in (200, 204)
        wait_for(lambda: bob.http.get(contents).status_code == 403, 60, "bob still reads alice's files after the revoke")
        assert bob_reads() == 403

        # a course's tutors: shared with a group, every member gets in; revoking the group's share shuts them out
        admin = login(sharing_hub, "admin")
        assert admin.api("POST", "/groups/tutors", json={"users": ["bob"]}).status_code in (200, 201)
        granted = alice.api("POST", "/shares/alice/", json={"group": "tutors"})
        assert granted.status_code == 200, granted.text
        wait_for(lambda: bob_reads() == 200, 30, "a member of the group the server is shared with cannot read it")
        assert alice.api("DELETE", "/shares/alice/", json={"group": "tutors"}).status_code in (200, 204)
        wait_for(lambda: bob.http.get(contents).status_code == 403, 60, "a tutor still reads alice's files after the revoke")
    finally:
        stop_server(alice, "alice")
