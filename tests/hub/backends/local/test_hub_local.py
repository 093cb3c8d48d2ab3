"""The local backend on a real hub: profile access, enforced limits, exclusive GPUs, restart safety."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil
import pytest

from hpclab.cgroup import cgroup_memory_limit
from support.hubtools import hub_yaml, login, server_process, singleuser_processes, started_hub, stop_server

pytestmark = pytest.mark.hub


def data_dir(hub) -> str:
    return hub.config["hub"]["data_dir"]


def test_user_outside_gpu_users_does_not_see_gpu_profile(hub):
    form = login(hub, "bob").spawn_form()
    assert 'value="cpu-small"' in form
    assert "gpu-1" not in form


def test_member_of_gpu_users_sees_gpu_profile(hub):
    form = login(hub, "alice").spawn_form()
    assert 'value="gpu-1"' in form and 'value="cpu-small"' in form


def test_posting_forbidden_profile_in_form_is_refused_and_starts_nothing(hub):
    bob = login(hub, "bob")
    response = bob.post_spawn("bob", "gpu-1")
    assert response.status_code == 403
    assert "restricted to the groups: gpu-users" in response.text
    assert singleuser_processes(data_dir(hub), "bob") == []
    assert bob.api("GET", "/users/bob").json()["servers"] == {}


def test_requesting_forbidden_profile_through_rest_api_is_refused(hub):
    bob = login(hub, "bob")
    response = bob.api("POST", "/users/bob/server", json={"profile": "gpu-1"})
    assert response.status_code == 403
    assert singleuser_processes(data_dir(hub), "bob") == []


def test_unknown_profile_is_a_bad_request(hub):
    response = login(hub, "bob").api("POST", "/users/bob/server", json={"profile": "no-such-profile"})
    assert response.status_code == 400
    assert "Unknown profile" in response.text


def test_cpu_profile_pins_cores_without_overlap_and_limits_memory(hub):
    alice, bob = login(hub, "alice"), login(hub, "bob")
    try:
        assert alice.post_spawn("alice", "cpu-small").status_code == 302
        assert bob.post_spawn("bob", "cpu-small").status_code == 302
        alice.wait_ready("alice")
        bob.wait_ready("bob")
        alice_proc = server_process(data_dir(hub), "alice")
        bob_proc = server_process(data_dir(hub), "bob")
        alice_cpus, bob_cpus = alice_proc.cpu_affinity(), bob_proc.cpu_affinity()
        assert len(alice_cpus) == 1 and len(bob_cpus) == 1
        if psutil.cpu_count() >= 2:
            assert alice_cpus != bob_cpus, "two 1-core servers share a core although two are free"
        assert alice_proc.username() == "jupyter-alice" and bob_proc.username() == "jupyter-bob"
        # the kernel's limit on all of alice's processes together: her server's cgroup
        assert cgroup_memory_limit(f"/proc/{alice_proc.pid}")[0] == 3 * 2**30
        env = alice_proc.environ()
        assert env["CUDA_VISIBLE_DEVICES"] == ""
        assert env["HPCLAB_PROFILE"] == "cpu-small"
        token = env["JUPYTERHUB_API_TOKEN"]
        assert token not in " ".join(alice_proc.cmdline()), "API token visible in ps"
        assert token not in hub.log_path.read_text(errors="replace"), "API token written to the hub log"
    finally:
        stop_server(alice, "alice")
        stop_server(bob, "bob")


def test_gpu_is_exclusive_and_a_gpu_profile_without_a_free_gpu_fails_at_once(hub):
    """The pool holds one GPU id, 'fake0', listed in the YAML: a fake, since this machine has no GPU."""
    alice, admin = login(hub, "alice"), login(hub, "admin")
    try:
        assert alice.post_spawn("alice", "gpu-1").status_code == 302
        alice.wait_ready("alice")
        assert server_process(data_dir(hub), "alice").environ()["CUDA_VISIBLE_DEVICES"] == "fake0"

        started = time.monotonic()
        response = admin.post_spawn("admin", "gpu-1")
        assert time.monotonic() - started < 15, "a GPU request with no free GPU must not wait for a timeout"
        assert "No free GPU" in response.text and "1 of 1 GPUs" in response.text
        assert singleuser_processes(data_dir(hub), "admin") == []
    finally:
        stop_server(alice, "alice")
    # the GPU is back in the pool once alice's server is gone
    try:
        assert admin.post_spawn("admin", "gpu-1").status_code == 302
        admin.wait_ready("admin")
        assert server_process(data_dir(hub), "admin").environ()["CUDA_VISIBLE_DEVICES"] == "fake0"
    finally:
        stop_server(admin, "admin")


def test_hub_restart_keeps_running_server_and_its_gpu(hub):
    alice, admin = login(hub, "alice"), login(hub, "admin")
    assert alice.post_spawn("alice", "gpu-1").status_code == 302
    alice.wait_ready("alice")
    assert alice.http.get(hub.user_url("alice") + "lab").status_code == 200
    before = server_process(data_dir(hub), "alice")
    proxy_pid = int((Path(data_dir(hub)) / "jupyterhub-proxy.pid").read_text())

    hub.stop(keep_proxy=True)
    assert before.is_running(), "stopping the hub killed alice's server"
    # the proxy stays with the servers: alice's open lab still reaches her server while the hub is down
    assert psutil.Process(proxy_pid).is_running(), "stopping the hub stopped the proxy"
    lab = alice.http.get(hub.user_url("alice") + "lab")
    assert lab.status_code == 200 and "JupyterLab" in lab.text, "alice's lab dropped while the hub was stopped"
    hub.start()
    assert int((Path(data_dir(hub)) / "jupyterhub-proxy.pid").read_text()) == proxy_pid, "the restarted hub started a new proxy"
    assert "restart: kept the running proxy" in hub.log_path.read_text()

    server = admin.wait_ready("alice", timeout=30)  # admins see spawner state
    assert server["state"]["pid"] == before.pid
    after = server_process(data_dir(hub), "alice")
    assert after.pid == before.pid, "a second server process was started"
    lab = alice.http.get(hub.user_url("alice") + "lab")
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    # the GPU assignment survived the restart: the pool still knows alice holds it
    refused = admin.post_spawn("admin", "gpu-1")
    assert "No free GPU" in refused.text
    stop_server(alice, "alice")


def test_admin_password_from_environment_is_never_logged(hub):
    from support.hubtools import ADMIN_PASSWORD

    login(hub, "admin")
    assert ADMIN_PASSWORD not in hub.log_path.read_text(errors="replace")


def test_run_becomes_the_hub_in_its_own_process_and_shows_the_hubs_environment(hub):
    """`hpclab-hub run` starts JupyterHub in its own process (no second interpreter importing it all again: a
    restart's pause), and /proc/<hub>/environ shows the hub's environment, its YAML for `hpclab-hub reload`, never
    the admins' password the process was started with."""
    from support.hubtools import ADMIN_PASSWORD

    process = psutil.Process(hub.proc.pid)
    assert "hpclab-hub run" in " ".join(process.cmdline())
    assert (Path(data_dir(hub)) / "jupyterhub.pid").read_text().strip() == str(process.pid)  # JupyterHub's own pid file
    shown = Path(f"/proc/{process.pid}/environ").read_bytes()
    assert ADMIN_PASSWORD.encode() not in shown and b"HPCLAB_ADMIN_PASSWORD=" not in shown
    assert process.environ()["HPCLAB_CONFIG"] == str(hub.config_path.resolve())


def test_a_changed_admin_password_counts_from_the_first_login_after_a_restart(tmp_path, monkeypatch):
    """The admins' password from the environment is checked beside the hub's start, not before it; a login that
    comes at once waits for that check: the new password works, the old one no longer does."""
    import support.hubtools as hubtools
    from support.hubtools import HubClient

    with started_hub(tmp_path, hub_yaml(tmp_path / "state"), accounts=()) as restarted:
        login(restarted, "admin")
        restarted.stop()
        monkeypatch.setattr(hubtools, "ADMIN_PASSWORD", "a-new-admin-password-8")
        restarted.start()
        fresh = HubClient(restarted).login("admin", "a-new-admin-password-8")
        assert fresh.ok and "/hub/login" not in fresh.url, "the new password does not log in"
        old = HubClient(restarted).login("admin", "admin-test-password-7")
        assert "/hub/login" in old.url, "the old password still logs in"
        assert "Admin account 'admin' set from $HPCLAB_ADMIN_PASSWORD" in restarted.log_tail(400)


def test_a_backends_singleuser_cmd_starts_its_servers(tmp_path):
    """backends.<name>.singleuser_cmd replaces the server's command (a wrapper that leaves a mark, then execs the default)."""
    config = hub_yaml(tmp_path / "state")
    wrapper = ["/bin/sh", "-c", 'echo "$HPCLAB_PROFILE" > "$HOME/custom-command-ran"; exec "$@"', "wrapper",
               sys.executable, "-m", "hpclab_hub.deferred_imports", "jupyterhub-singleuser"]
    config["backends"]["local"]["singleuser_cmd"] = wrapper
    with started_hub(tmp_path, config) as custom:
        alice = login(custom, "alice")
        try:
            assert alice.post_spawn("alice", "cpu-small").status_code == 302
            alice.wait_ready("alice")
            home = Path(config["backends"]["local"]["home_dir"].format(username="alice"))
            assert (home / "custom-command-ran").read_text().strip() == "cpu-small"
            assert "jupyterhub-singleuser" in " ".join(server_process(data_dir(custom), "alice").cmdline())
        finally:
            stop_server(alice, "alice")


def test_extensions_that_serve_no_one_are_not_loaded(hub):
    """jupyter-lsp (no language server installed) and notebook-shim (no classic extension) are off on every server."""
    alice = login(hub, "alice")
    try:
        assert alice.post_spawn("alice", "cpu-small").status_code == 302
        alice.wait_ready("alice")
        log = hub.log_path.read_text()
        assert "jupyterlab | extension was successfully loaded" in log
        for name in ("jupyter_lsp", "notebook_shim"):
            assert f"{name} | extension was successfully linked" not in log, name
    finally:
        stop_server(alice, "alice")
