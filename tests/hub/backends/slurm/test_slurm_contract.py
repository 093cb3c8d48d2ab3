"""The SLURM backend's contract, run on Slurm 22.05 (bookworm), 24.11 (trixie) and 26.05 (sid).

Each release gets its own one-node dev cluster (deploy/slurm/dev-cluster with HPCLAB_SLURM_RELEASE; trixie
and sid from a cached Debian root) and a hub whose backend names that release's commands (``bin_dir``):
the form's availability and GPU types, a start SLURM would never run, submit with an account, QoS and time,
an extension, the pending reason and expected start, a cancel while queued, the hub killed and re-adopting
its server (and reporting an orphan job), and one spawn in a real browser. The full SLURM suite
(test_slurm_hub.py, test_slurm_choices.py) runs on the host's release only.
"""

from __future__ import annotations

import html
import json
import re
import signal
import time

import pytest

from support.hubtools import Hub, hub_yaml, login, stop_server
from support.slurmtools import (
    RELEASES,
    describe_jobs,
    jobs,
    release_cluster,
    slurm,
    started_slurm_hub,
    submitted_after,
    wait_for,
)

pytestmark = pytest.mark.hub


@pytest.fixture(scope="module", params=list(RELEASES))
def release_hub(request, tmp_path_factory):
    """A hub on a dev cluster of one Slurm release (one release's cluster up at a time)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from support.hubtools import make_reachable

    if os.geteuid() != 0:
        pytest.skip("the SLURM dev cluster needs root (it starts slurmd and submits as test users)")
    for name in ("alice", "bob"):  # before the cluster: its reservation and associations are for them
        if subprocess.run(["id", name], check=False, capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-m", name], check=True)
    make_reachable(Path(sys.executable))
    release = request.param
    with release_cluster(release) as (conf, bin_dir):
        workdir = tmp_path_factory.mktemp(f"slurm-{release}")
        cluster = {"type": "slurm", "slurm_conf": conf, "bin_dir": bin_dir, "poll_interval": 2, "command_timeout": 20}
        config = hub_yaml(
            workdir / "state",
            backends={"cluster": cluster},
            profiles=[
                {"slug": "cpu", "display_name": "CPU job", "backend": "cluster", "cpus": 1, "memory": "512M",
                 "time_limit": "00:10:00", "default": True, "slurm": {"partition": "cpu"},
                 "choices": {"account": "associations", "qos": ["normal", "debug"],
                             "time_limit": {"min": "00:05:00", "max": "01:00:00"}}},
                {"slug": "gpu", "display_name": "GPU job", "backend": "cluster", "cpus": 1, "gpus": 1,
                 "time_limit": "00:10:00", "slurm": {"partition": "gpu"}, "choices": {"gpu_type": "partition"}},
                {"slug": "gpu-9", "display_name": "Nine GPUs", "backend": "cluster", "cpus": 1, "gpus": 9,
                 "slurm": {"partition": "gpu"}},
            ],
        )
        with started_slurm_hub(Hub(workdir, config), conf) as hub:
            hub.release = release
            yield hub
            left = [j for j in jobs(conf) if j["user"] in ("alice", "bob")]
            assert not left, f"{release}: jobs left queued or running: {left}"


def _row(hub: Hub, user: str, fields: str) -> list[str]:
    (line,) = [line for line in slurm(hub.slurm_conf, "squeue", "-h", "-u", user, "-t", "PENDING,RUNNING", "-o", fields)
               .splitlines() if line.strip()]
    return line.split("|")


def _stored_hub_id(hub: Hub) -> str:
    import sqlite3

    with sqlite3.connect(f"{hub.config['hub']['data_dir']}/jupyterhub.sqlite") as db:
        (hub_id,) = db.execute("SELECT value FROM hpclab_hub WHERE name = 'hub_id'").fetchone()
    return hub_id


def test_the_form_shows_free_cores_gpus_and_gpu_types_and_a_start_that_never_runs_is_refused(release_hub):
    alice = login(release_hub, "alice")
    form = html.unescape(alice.http.get(f"{release_hub.url}/hub/spawn/alice").text)
    gpu = re.search(r'<label class="hpclab-profile[^"]*"[^>]*data-profile="gpu".*?</label>', form, re.DOTALL)
    assert gpu and "Partition gpu: 1 node, 7 of 8 cores free, 2 of 2 GPUs free now" in gpu.group(0), form[:3000]
    assert re.search(r'<select name="gpu--gpu_type"[^>]*>.*<option value="a100"', form, re.DOTALL), "no GPU type from sinfo"
    assert re.search(r'<select name="cpu--account"[^>]*>\s*<option value="" selected>none</option>\s*'
                     r'<option value="physics">physics</option>\s*<option value="teaching">teaching</option>', form)
    started = time.monotonic()
    never = alice.post_spawn("alice", "gpu-9")
    assert never.status_code == 400 and time.monotonic() - started < 10
    assert "Requested node configuration is not available" in html.unescape(never.text)
    assert [j for j in jobs(release_hub.slurm_conf) if j["user"] == "alice"] == []


def test_submit_with_account_qos_and_time_then_extend_then_the_hub_killed_readopts_it(release_hub):
    conf = release_hub.slurm_conf
    alice = login(release_hub, "alice")
    started = alice.api("POST", "/users/alice/server",
                        json={"profile": "cpu", "account": "teaching", "qos": "debug", "time_limit": "00:20:00"})
    assert started.status_code in (201, 202), started.text
    orphan = ""
    try:
        alice.wait_ready("alice", timeout=120)
        hub_id = _stored_hub_id(release_hub)
        assert _row(release_hub, "alice", "%a|%q|%l|%T|%k") == ["teaching", "debug", "20:00", "RUNNING", f"hpclab:{hub_id}:cpu"]
        assert alice.http.get(release_hub.user_url("alice") + "lab").status_code == 200
        extended = alice.api("POST", "/hpclab/servers/alice/extend", json={"minutes": 5})
        assert extended.status_code == 200, extended.text
        assert _row(release_hub, "alice", "%l") == ["25:00"]

        # a job with this hub's tag that no server owns; then the hub dies and starts again
        orphan = slurm(conf, "sbatch", "--parsable", "-p", "cpu", "-c", "1", "-J", "hpclab-alice", f"--comment=hpclab:{hub_id}:cpu",
                       "-o", "/dev/null", "--chdir=/tmp", "--wrap", "sleep 600", user="alice").strip().split(";")[0]
        before = sorted(j["id"] for j in jobs(conf))
        release_hub.proc.send_signal(signal.SIGKILL)
        release_hub.proc.wait()
        release_hub.proc = None
        release_hub.start()
        admin = login(release_hub, "admin")
        assert admin.wait_ready("alice", timeout=30)["state"]["job_id"] in before
        assert alice.http.get(f"{release_hub.url}/user/alice/lab").status_code == 200
        assert sorted(j["id"] for j in jobs(conf)) == before, "a job was lost or added"
        new = submitted_after(conf, max(int(i) for i in before))
        assert new == [], describe_jobs(new)
        wait_for(lambda: f"Orphan SLURM job {orphan}" in release_hub.log_tail(2000), 30, "the orphan job was not reported")
    finally:
        if orphan:
            slurm(conf, "scancel", orphan)
        stop_server(alice, "alice")
    assert [j for j in jobs(conf) if j["user"] == "alice"] == []


def test_a_start_pending_for_gpus_shows_the_reason_and_expected_start_and_is_cancelled(release_hub):
    conf = release_hub.slurm_conf
    blocker = slurm(conf, "sbatch", "--parsable", "-p", "gpu", "--gres=gpu:2", "-c", "1", "-t", "00:30:00",
                    "-o", "/dev/null", "--chdir=/tmp", "--wrap", "sleep 600", user="bob").strip().split(";")[0]
    alice = login(release_hub, "alice")
    try:
        wait_for(lambda: any(j["id"] == blocker and j["state"] == "RUNNING" for j in jobs(conf)), 20, "blocker did not start")
        assert alice.post_spawn("alice", "gpu").status_code == 302
        messages: list[str] = []
        with alice.http.get(f"{release_hub.url}/hub/api/users/alice/server/progress", stream=True, timeout=60,
                            headers={"X-XSRFToken": alice.hub_xsrf()}) as stream:
            for line in stream.iter_lines(decode_unicode=True):
                if line.startswith("data:"):
                    messages.append(json.loads(line[5:]).get("message", ""))
                if any("pending (Resources" in m and "expected start" in m for m in messages):
                    break
        assert any("pending (Resources" in m and "expected start" in m for m in messages), messages
        (pending,) = [j for j in jobs(conf) if j["user"] == "alice"]
        assert pending["state"] == "PENDING"
        stop_server(alice, "alice")  # the user's Cancel: the queued job goes
        wait_for(lambda: not [j for j in jobs(conf) if j["user"] == "alice"], 30, "the queued job is still there")
        assert alice.api("GET", "/users/alice").json()["servers"] == {}
    finally:
        slurm(conf, "scancel", blocker)
        slurm(conf, "scancel", "-u", "alice", check=False)


@pytest.mark.browser
def test_a_spawn_in_the_browser_reaches_a_notebook_inside_the_job(release_hub, browser, artifacts):
    from support.browsertools import browser_login, run_in_new_notebook, session_field

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    try:
        browser_login(page, release_hub, "bob")
        page.wait_for_url("**/hub/spawn**")
        page.check("input[name=profile][value=cpu]")
        page.click("form#spawn_form [type=submit]")
        page.wait_for_url("**/user/bob/lab**", timeout=120_000)
        run_in_new_notebook(page, "import hpclab; hpclab.session()")
        job_id = session_field(page, "job")
        page.screenshot(path=str(artifacts / f"slurm-{release_hub.release}-session.png"), full_page=True)
        (job,) = [j for j in jobs(release_hub.slurm_conf) if j["user"] == "bob"]
        assert job_id == job["id"], f"the notebook's session() names bob's job on Slurm {RELEASES[release_hub.release]}"
    except Exception:
        page.screenshot(path=str(artifacts / f"slurm-{release_hub.release}-failure.png"), full_page=True)
        raise
    finally:
        page.close()
        stop_server(login(release_hub, "bob"), "bob")


def test_check_live_reads_the_releases_cluster_and_check_names_a_bin_dir_without_slurm(release_hub, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    cli = Path(sys.executable).with_name("hpclab-hub")
    cluster = release_hub.config["backends"]["cluster"]
    config = {"backends": {"c": {"type": "slurm", "slurm_conf": cluster["slurm_conf"], "bin_dir": cluster["bin_dir"]}},
              "profiles": [{"slug": "a", "display_name": "A", "backend": "c", "gpus": 2, "slurm": {"partition": "gpu", "gpu_type": "a100"}},
                           {"slug": "b", "display_name": "B", "backend": "c", "gpus": 1, "slurm": {"partition": "gpu", "gpu_type": "v100"}}]}
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # no SLURM on PATH, no SLURM_CONF: the YAML's own
    result = subprocess.run([str(cli), "check", "--live", str(path)], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    problems = [line for line in result.stderr.splitlines() if "profiles[" in line]
    assert len(problems) == 1 and "profiles[1].slurm.gpu_type: no GPUs of type 'v100' in partition gpu (a100)" in problems[0], result.stderr

    config["backends"]["c"]["bin_dir"] = str(tmp_path)
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([str(cli), "check", str(path)], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert f"backends.c.bin_dir: {tmp_path} has no sbatch, squeue, sinfo, scontrol, scancel" in result.stderr, result.stderr
