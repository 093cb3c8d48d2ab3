"""The SLURM backend against the real dev cluster (deploy/slurm/dev-cluster): jobs run as the users themselves."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import psutil
import pytest
import requests

from support.hubtools import Hub, login, stop_server
from support.slurmtools import describe_jobs, jobs, slurm, slurm_hub_yaml, started_slurm_hub, submitted_after, wait_for

pytestmark = pytest.mark.hub


@pytest.fixture(scope="module")
def slurm_hub(slurm_cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm-hub")
    with started_slurm_hub(Hub(workdir, slurm_hub_yaml(workdir / "state", slurm_cluster)), slurm_cluster) as hub:
        yield hub


def server_process_of(hub: Hub, user: str) -> psutil.Process:
    """The jupyterhub-singleuser process of ``user``'s running job, found by its SLURM_JOB_ID (not just the user)."""
    (job,) = [j for j in jobs(hub.slurm_conf) if j["user"] == user and j["state"] == "RUNNING"]

    def find():
        for proc in psutil.process_iter(["username", "cmdline"]):
            if proc.info["username"] != user or not any("jupyterhub-singleuser" in part for part in proc.info["cmdline"] or []):
                continue
            try:
                if proc.environ().get("SLURM_JOB_ID") == job["id"]:
                    return proc
            except psutil.Error:
                continue
        return None

    return wait_for(find, 30, f"no server process of job {job['id']} running as {user}")


def stored_hub_id_of(hub: Hub) -> str:
    """The id the hub keeps in its database (made at its first SLURM start) and writes into its jobs' comments."""
    import sqlite3

    with sqlite3.connect(f"{hub.config['hub']['data_dir']}/jupyterhub.sqlite") as db:
        (hub_id,) = db.execute("SELECT value FROM hpclab_hub WHERE name = 'hub_id'").fetchone()
    return hub_id


def test_gpu_profile_runs_as_the_user_with_a_gpu_from_slurm(slurm_hub):
    alice = login(slurm_hub, "alice")
    assert alice.post_spawn("alice", "gpu-1").status_code == 302
    try:
        alice.wait_ready("alice", timeout=90)
        running = [j for j in jobs(slurm_hub.slurm_conf) if j["user"] == "alice"]
        assert len(running) == 1 and running[0]["state"] == "RUNNING" and running[0]["name"] == "hpclab-alice"
        env = server_process_of(slurm_hub, "alice").environ()
        assert env["SLURM_JOB_ID"] == running[0]["id"]
        assert env["CUDA_VISIBLE_DEVICES"] in {"0", "1"}  # one of the dev cluster's two fake GPUs, given by SLURM
        assert alice.http.get(slurm_hub.user_url("alice") + "lab").status_code == 200
    finally:
        stop_server(alice, "alice")
    assert [j for j in jobs(slurm_hub.slurm_conf) if j["user"] == "alice"] == []


def test_request_that_can_never_run_fails_at_once_with_slurms_message(slurm_hub):
    alice = login(slurm_hub, "alice")
    started = time.monotonic()
    response = alice.post_spawn("alice", "gpu-9")
    assert time.monotonic() - started < 10
    assert response.status_code == 400
    assert "Requested node configuration is not available" in response.text
    assert jobs(slurm_hub.slurm_conf, "all") == [] or all(j["user"] != "alice" or j["state"] != "PENDING" for j in jobs(slurm_hub.slurm_conf, "all"))
    assert alice.api("GET", "/users/alice").json()["servers"] == {}


def test_job_failing_before_the_server_starts_ends_the_spawn_with_its_output(slurm_hub):
    alice = login(slurm_hub, "alice")
    assert alice.post_spawn("alice", "broken-env").status_code == 302
    wait_for(lambda: "" not in alice.api("GET", "/users/alice").json()["servers"], 60, "failed spawn still listed")
    log = slurm_hub.log_tail(300)
    assert "failed (the server exited with an error) (FAILED" in log
    assert "module python/9.9 not found" in log
    assert [j for j in jobs(slurm_hub.slurm_conf) if j["user"] == "alice"] == []


def test_user_outside_groups_cannot_post_gpu_profile_and_no_job_is_submitted(slurm_hub):
    bob = login(slurm_hub, "bob")
    assert "gpu-1" not in bob.spawn_form()
    known = {j["id"] for j in jobs(slurm_hub.slurm_conf, "all")}  # earlier tests' jobs stay listed a while
    response = bob.post_spawn("bob", "gpu-1")
    assert response.status_code == 403
    assert [j for j in jobs(slurm_hub.slurm_conf, "all") if j["user"] == "bob" and j["id"] not in known] == []


def test_api_token_is_not_in_batch_script_job_files_ps_or_log(slurm_hub):
    alice = login(slurm_hub, "alice")
    assert alice.post_spawn("alice", "cpu").status_code == 302
    try:
        alice.wait_ready("alice", timeout=90)
        proc = server_process_of(slurm_hub, "alice")
        env = proc.environ()
        token, job_id = env["JUPYTERHUB_API_TOKEN"], env["SLURM_JOB_ID"]
        script = slurm(slurm_hub.slurm_conf, "scontrol", "write", "batch_script", job_id, "-")
        assert "#SBATCH --job-name=hpclab-alice" in script
        assert token not in script
        ps = subprocess.run(["ps", "-efww"], capture_output=True, text=True).stdout
        assert token not in ps
        output = f"/home/alice/.hpclab-jupyter-{job_id}.log"
        assert token not in open(output, errors="replace").read()
        assert token not in slurm_hub.log_path.read_text(errors="replace")

        # the port report accepts exactly {"port": N} with the server's own token, and nothing else
        url = f"http://127.0.0.1:{slurm_hub.config['hub']['hub_port']}/hub/api/hpclab/port"
        headers = {"Authorization": f"token {token}"}
        for body in ({"port": 4242, "ip": "10.0.0.66"}, {"port": "4242"}, {"port": 0}, {"ip": "10.0.0.66"}):
            assert requests.post(url, data=json.dumps(body), headers=headers, timeout=10).status_code == 400, body
        # nobody is waiting for a port now: a well-formed report is refused too, and changes nothing
        assert requests.post(url, data=json.dumps({"port": 4242}), headers=headers, timeout=10).status_code == 409
        assert requests.post(url, data=json.dumps({"port": 4242}), timeout=10).status_code == 403
        assert alice.http.get(slurm_hub.user_url("alice") + "lab").status_code == 200
    finally:
        stop_server(alice, "alice")


def test_scancel_behind_the_hubs_back_is_noticed_and_explained(slurm_hub):
    alice = login(slurm_hub, "alice")
    assert alice.post_spawn("alice", "cpu").status_code == 302
    alice.wait_ready("alice", timeout=90)
    (job,) = [j for j in jobs(slurm_hub.slurm_conf) if j["user"] == "alice"]
    slurm(slurm_hub.slurm_conf, "scancel", job["id"])
    poll_interval = slurm_hub.config["backends"]["cluster"]["poll_interval"]
    started = time.monotonic()
    wait_for(lambda: "" not in alice.api("GET", "/users/alice").json()["servers"], 10 * poll_interval,
             "the hub did not notice the cancelled job")
    assert time.monotonic() - started <= 2 * poll_interval + 3  # two poll cycles (+ margin for the hub's own work)
    home = alice.http.get(f"{slurm_hub.url}/hub/home").text
    assert "hpclab-end-reason" in home and f"SLURM job {job['id']} was cancelled" in home


def test_pending_job_shows_slurms_reason_then_starts_when_resources_free(slurm_hub):
    blocker = slurm(slurm_hub.slurm_conf, "sbatch", "--parsable", "-p", "gpu", "--gres=gpu:2", "-c", "1",
                    "-o", "/dev/null", "--chdir=/tmp", "--wrap", "sleep 600", user="bob").strip()
    alice = login(slurm_hub, "alice")
    try:
        wait_for(lambda: any(j["id"] == blocker and j["state"] == "RUNNING" for j in jobs(slurm_hub.slurm_conf)), 20,
                 "blocker job did not start")
        assert alice.post_spawn("alice", "gpu-1").status_code == 302
        messages: list[str] = []
        with alice.http.get(f"{slurm_hub.url}/hub/api/users/alice/server/progress", stream=True, timeout=60,
                            headers={"X-XSRFToken": alice.hub_xsrf()}) as stream:
            for line in stream.iter_lines(decode_unicode=True):
                if line.startswith("data:"):
                    messages.append(json.loads(line[5:]).get("message", ""))
                if any("pending (Resources" in m for m in messages):
                    break
        assert any("pending (Resources" in m for m in messages), messages
        slurm(slurm_hub.slurm_conf, "scancel", blocker)
        alice.wait_ready("alice", timeout=90)
    finally:
        slurm(slurm_hub.slurm_conf, "scancel", blocker)
        stop_server(alice, "alice")


def test_hub_killed_with_two_servers_running_readopts_both_without_new_jobs(slurm_hub):
    alice, bob = login(slurm_hub, "alice"), login(slurm_hub, "bob")
    assert alice.post_spawn("alice", "cpu").status_code == 302
    assert bob.post_spawn("bob", "cpu").status_code == 302
    alice.wait_ready("alice", timeout=90)
    bob.wait_ready("bob", timeout=90)
    # a job carrying this hub's tag that no server owns (e.g. left by a crash between sbatch and saving state)
    hub_id = stored_hub_id_of(slurm_hub)
    orphan = slurm(slurm_hub.slurm_conf, "sbatch", "--parsable", "-p", "cpu", "-c", "1", "-J", "hpclab-alice",
                   f"--comment=hpclab:{hub_id}:cpu", "-o", "/dev/null", "--chdir=/tmp", "--wrap", "sleep 600",
                   user="alice").strip()
    # the queued and running jobs (finished ones leave squeue after MinJobAge, whatever the hub does)
    before = sorted(j["id"] for j in jobs(slurm_hub.slurm_conf))

    slurm_hub.proc.send_signal(signal.SIGKILL)
    slurm_hub.proc.wait()
    slurm_hub.proc = None
    slurm_hub.start()

    admin = login(slurm_hub, "admin")
    assert admin.wait_ready("alice", timeout=30)["state"]["job_id"] in before
    assert admin.wait_ready("bob", timeout=30)["state"]["job_id"] in before
    for client, name in ((alice, "alice"), (bob, "bob")):
        assert client.http.get(f"{slurm_hub.url}/user/{name}/lab").status_code == 200
    try:
        after = jobs(slurm_hub.slurm_conf, "all")
        assert sorted(j["id"] for j in after if j["state"] in ("PENDING", "RUNNING")) == before, "a job was lost"
        new = submitted_after(slurm_hub.slurm_conf, max(int(i) for i in before))
        assert new == [], f"{len(new)} job(s) submitted while the hub restarted:\n{describe_jobs(new)}"
        assert f"Orphan SLURM job {orphan}" in slurm_hub.log_tail(2000), "the orphan job was not reported"
    finally:
        slurm(slurm_hub.slurm_conf, "scancel", orphan)
        stop_server(alice, "alice")
        stop_server(bob, "bob")


@pytest.mark.browser
def test_browser_gpu_job_waits_in_queue_then_notebook_shows_job_and_gpu(slurm_hub, browser, artifacts):
    """alice picks the GPU profile while another job holds both GPUs: the progress page shows SLURM's reason."""
    from support.browsertools import browser_login, run_in_new_notebook, session_field

    blocker = slurm(slurm_hub.slurm_conf, "sbatch", "--parsable", "-p", "gpu", "--gres=gpu:2", "-c", "1",
                    "-o", "/dev/null", "--chdir=/tmp", "--wrap", "sleep 600", user="bob").strip()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    try:
        wait_for(lambda: any(j["id"] == blocker and j["state"] == "RUNNING" for j in jobs(slurm_hub.slurm_conf)), 20,
                 "blocker job did not start")
        browser_login(page, slurm_hub, "alice")
        page.wait_for_url("**/hub/spawn**")
        assert "0 of 2 GPUs free" in page.locator("[data-profile=gpu-1]").inner_text()
        page.check("input[name=profile][value=gpu-1]")
        page.click("form#spawn_form [type=submit]")
        page.wait_for_url("**/spawn-pending/**")
        assert "_xsrf" not in page.url, page.url  # the form's token stays out of the address bar and the logs
        page.locator("#progress-message", has_text="pending (Resources").wait_for(timeout=60_000)
        page.screenshot(path=str(artifacts / "slurm-pending.png"), full_page=True)

        slurm(slurm_hub.slurm_conf, "scancel", blocker)
        page.wait_for_url("**/user/alice/lab**", timeout=120_000)
        run_in_new_notebook(page, "import hpclab; hpclab.session()")
        job_id, gpus = session_field(page, "job"), session_field(page, "gpus")
        page.screenshot(path=str(artifacts / "slurm-jupyterlab-session.png"), full_page=True)
        (job,) = [j for j in jobs(slurm_hub.slurm_conf) if j["user"] == "alice"]
        assert job_id == job["id"], "the notebook's session() names alice's SLURM job"
        assert gpus in {"0", "1"}, "CUDA_VISIBLE_DEVICES from SLURM's GRES"
    except Exception:
        page.screenshot(path=str(artifacts / "slurm-browser-failure.png"), full_page=True)
        raise
    finally:
        page.close()
        slurm(slurm_hub.slurm_conf, "scancel", blocker)
        stop_server(login(slurm_hub, "alice"), "alice")


def test_check_live_accepts_the_slurm_example_and_names_misfits(slurm_cluster, tmp_path):
    import os
    import sys
    from pathlib import Path

    cli = Path(sys.executable).with_name("hpclab-hub")
    env = dict(os.environ, SLURM_CONF=slurm_cluster)
    ok = subprocess.run([str(cli), "check", "--live", "deploy/examples/slurm.yaml"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "fits the running cluster" in ok.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "backends:\n  c: {type: slurm}\n"
        "profiles:\n"
        "  - {slug: a, display_name: A, backend: c, slurm: {partition: nope}}\n"
        "  - {slug: b, display_name: B, backend: c, gpus: 3, time_limit: '3-00:00:00', slurm: {partition: gpu, gpu_type: a100}}\n"
    )
    result = subprocess.run([str(cli), "check", "--live", str(bad)], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert any("profiles[0].slurm.partition: partition 'nope' does not exist" in l and "(line 4)" in l for l in lines)
    assert any("profiles[1].gpus: 3 GPUs, but no node in partition gpu has more than 2 (line 5)" in l for l in lines)
    assert any("profiles[1].slurm.gpu_type" in l for l in lines)
    assert any("profiles[1].time_limit: 3-00:00:00 exceeds partition gpu's MaxTime 2-00:00:00" in l for l in lines)


def test_controller_outage_keeps_running_servers(slurm_hub):
    """slurmctld down: squeue fails, which means 'unknown', so the hub must not drop alice's server."""
    import os
    from pathlib import Path

    from support.slurmtools import DEV_CLUSTER, SLURM_PORT, SLURM_PREFIX

    alice = login(slurm_hub, "alice")
    assert alice.post_spawn("alice", "cpu").status_code == 302
    alice.wait_ready("alice", timeout=90)
    pidfile = SLURM_PREFIX / "run" / "slurmctld.pid"
    ctld_pid = int(pidfile.read_text())
    os.kill(ctld_pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{ctld_pid}").exists(), 20, "slurmctld did not stop")
    try:
        poll_interval = slurm_hub.config["backends"]["cluster"]["poll_interval"]
        time.sleep(3 * poll_interval + slurm_hub.config["backends"]["cluster"]["command_timeout"])
        assert "" in alice.api("GET", "/users/alice").json()["servers"], "server dropped while SLURM was unreachable"
        assert alice.http.get(slurm_hub.user_url("alice") + "lab").status_code == 200
        assert "SLURM not answering" in slurm_hub.log_tail(400)
    finally:
        env = dict(os.environ, HPCLAB_SLURM_PREFIX=str(SLURM_PREFIX), HPCLAB_SLURM_CTLD_PORT=str(SLURM_PORT),
                   HPCLAB_SLURM_SLURMD_PORT=str(SLURM_PORT + 1))
        subprocess.run([str(DEV_CLUSTER), "up"], env=env, check=True, capture_output=True)
    # back up: the job was recovered by slurmctld and the hub still has the same server
    time.sleep(2 * poll_interval)
    assert "" in alice.api("GET", "/users/alice").json()["servers"]
    stop_server(alice, "alice")


@pytest.mark.browser
def test_walltime_shown_warned_and_unsaved_edit_saved_on_slurms_early_signal(slurm_hub, browser, artifacts):
    """A 2-minute job, autosave off: home page and JupyterLab show the time left, the user is warned, and
    the edit never saved by hand is on disk after SLURM ended the job (saved on --signal=B:USR2@60)."""
    import re
    import uuid
    from pathlib import Path

    from support.browsertools import browser_login

    marker = f"walltime-{uuid.uuid4().hex[:8]}"
    settings = Path("/home/alice/.jupyter/lab/user-settings/@jupyterlab/docmanager-extension/plugin.jupyterlab-settings")
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"autosave": False}))  # only the wall-time plugin may save the edit
    subprocess.run(["chown", "-R", "alice:", "/home/alice/.jupyter"], check=True)
    alice = login(slurm_hub, "alice")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    try:
        browser_login(page, slurm_hub, "alice")
        page.wait_for_url("**/hub/spawn**")
        page.check("input[name=profile][value=short]")
        page.click("form#spawn_form [type=submit]")
        page.wait_for_url("**/user/alice/lab**", timeout=120_000)
        home = alice.http.get(f"{slurm_hub.url}/hub/home").text
        assert "hpclab-time-left" in home and "min" in home and "left (ends" in home

        page.goto(page.url.split("/lab")[0] + "/lab?reset")
        label = page.locator("#hpclab-walltime")
        label.wait_for()
        assert re.fullmatch(r"Job: (1 min|\d+ s) left", label.inner_text().strip()), label.inner_text()
        page.get_by_text("This session ends in").first.wait_for()
        page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click(timeout=120_000)
        editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
        editor.click()
        page.keyboard.type(f"note = '{marker}'")  # typed, never saved by hand, autosave off
        notebook_name = page.locator(".jp-DirListing-item.jp-mod-selected .jp-DirListing-itemText").first.inner_text()
        (job,) = [j for j in jobs(slurm_hub.slurm_conf) if j["user"] == "alice"]
        page.get_by_text("The scheduler stops this job").first.wait_for(timeout=150_000)  # SLURM's SIGUSR2 arrived
        page.screenshot(path=str(artifacts / "walltime-slurm-signal.png"))
        final = lambda: slurm(slurm_hub.slurm_conf, "squeue", "-h", "-t", "all", "-j", job["id"], "-o", "%T").strip()  # noqa: E731
        wait_for(lambda: final() not in ("PENDING", "RUNNING", "COMPLETING"), 240, "job did not end", interval=1)
        assert final() == "TIMEOUT"
        saved = Path("/home/alice") / notebook_name.strip()
        assert marker in saved.read_text(), f"the edit was lost when the job hit its time limit ({saved})"
        job_log = Path(f"/home/alice/.hpclab-jupyter-{job['id']}.log").read_text()
        assert "hpclab walltime: SIGUSR2 received" in job_log
    finally:
        page.close()
        settings.unlink(missing_ok=True)
        if "" in alice.api("GET", "/users/alice").json()["servers"]:
            stop_server(alice, "alice")
