"""Issue 26, item 4: memory on the local backend is a pool like cores and GPUs, and quotas can bound it per user.

Before, alice's default server plus three named ``cpu-large`` servers were accepted on the hub's own
machine: 26 GiB of memory limits on a 23.5 GiB host. Here the backend shares out 10G (the YAML's
``memory``; ``auto`` is the machine's memory less ``memory_reserved``) and large servers have 4G each.
"""

from __future__ import annotations

import pytest

from hpclab_hub.backends.local.resources import machine_memory, pool_memory

from support.hubtools import assert_start_path, hub_yaml, login, singleuser_processes, started_hub, stop_server

pytestmark = pytest.mark.hub


@pytest.fixture(scope="module", params=["fresh", "zygote"])
def pool_hub(request, tmp_path_factory):
    """Servers started fresh, then (the same tests again) forked from the backend's zygote (issue 32)."""
    workdir = tmp_path_factory.mktemp("memory-pool")
    config = hub_yaml(workdir / "state")
    config["backends"]["local"].update({"memory": "10G", "zygote": request.param == "zygote"})
    config["profiles"] = [
        {"slug": "small", "display_name": "Small", "backend": "local", "cpus": 1, "memory": "1G", "default": True},
        {"slug": "large", "display_name": "Large", "backend": "local", "cpus": 1, "memory": "4G"},
        {"slug": "huge", "display_name": "Huge", "backend": "local", "cpus": 1, "memory": "12G"},
    ]
    config["quotas"] = {"users": {"bob": {"memory": "3G"}}}
    with started_hub(workdir, config) as hub:
        yield hub


def test_large_servers_never_add_up_past_the_machines_memory(pool_hub):
    alice, bob = login(pool_hub, "alice"), login(pool_hub, "bob")
    data_dir = pool_hub.config["hub"]["data_dir"]
    try:
        assert alice.post_spawn("alice", "large").status_code == 302
        assert alice.post_spawn("alice", "large", server_name="two").status_code == 302
        alice.wait_ready("alice")
        alice.wait_ready("alice", server_name="two")
        assert_start_path(pool_hub, "alice")
        # the form says what is left, and that a large server does not fit now
        form = alice.http.get(f"{pool_hub.url}/hub/spawn/alice/three").text
        assert "2G of 10G memory free" in form and "not enough memory free for this profile now" in form
        third = alice.post_spawn("alice", "large", server_name="three")
        assert third.status_code == 409, third.status_code
        assert "Not enough memory free on this server: this profile needs 4G, 8G of 10G are held by 2 running servers (2G free)" in third.text
        assert len(singleuser_processes(data_dir, "alice")) == 2
        assert "three" not in alice.api("GET", "/users/alice?include_stopped_servers=1").json()["servers"]  # the refused start left no server
        # a small one still fits, for anyone
        assert bob.post_spawn("bob", "small").status_code == 302
        bob.wait_ready("bob")
    finally:
        stop_server(bob, "bob")
        stop_server(alice, "alice", server_name="two")
        alice.api("DELETE", "/users/alice/servers/two", json={"remove": True})
    # memory given back: a large server fits again
    try:
        assert alice.post_spawn("alice", "large", server_name="again").status_code == 302
        alice.wait_ready("alice", server_name="again")
    finally:
        stop_server(alice, "alice", server_name="again")
        alice.api("DELETE", "/users/alice/servers/again", json={"remove": True})
        stop_server(alice, "alice")


def test_a_profile_larger_than_the_pool_is_shown_off_and_refused(pool_hub):
    alice = login(pool_hub, "alice")
    form = alice.spawn_form()
    assert "This server shares out 10G of memory to servers; the profile needs 12G." in form
    refused = alice.api("POST", "/users/alice/server", json={"profile": "huge"})
    assert refused.status_code in (400, 403, 409), refused.status_code
    assert alice.api("GET", "/users/alice").json()["servers"] == {}


def test_a_memory_quota_bounds_one_users_servers_together(pool_hub):
    bob = login(pool_hub, "bob")
    refused = bob.post_spawn("bob", "large")
    assert refused.status_code == 429
    assert "your quota (bob): 0 of 3G of memory in use; this profile needs 4G more." in refused.text
    try:
        assert bob.post_spawn("bob", "small").status_code == 302
        assert bob.post_spawn("bob", "small", server_name="second").status_code == 302
        bob.wait_ready("bob")
        bob.wait_ready("bob", server_name="second")
        assert bob.post_spawn("bob", "small", server_name="third").status_code == 302
        bob.wait_ready("bob", server_name="third")
    finally:
        for name in ("third", "second"):
            stop_server(bob, "bob", server_name=name)
            bob.api("DELETE", f"/users/bob/servers/{name}", json={"remove": True})
        stop_server(bob, "bob")


def test_auto_shares_the_machines_memory_less_what_is_reserved():
    assert pool_memory("auto", 2**30) == machine_memory() - 2**30
    assert pool_memory(5 * 2**30, 2**30) == 5 * 2**30
