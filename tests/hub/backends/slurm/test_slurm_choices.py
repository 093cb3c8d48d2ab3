"""A scheduler-aware form on the real dev SLURM: choices land in the job, bounds are enforced before
sbatch, the wall time is extended with scontrol, and a start stuck in the queue is cancelled from the
progress page in a real browser (Debian's chromium), leaving no job behind."""

from __future__ import annotations

import html
import re

import pytest

from support.browsertools import browser_login
from support.hubtools import Hub, login, stop_server
from support.slurmtools import jobs, slurm, started_slurm_hub, wait_for

pytestmark = pytest.mark.hub


def _squeue(conf: str, user: str, fields: str) -> list[list[str]]:
    """This user's pending or running jobs as rows of the squeue format fields ``fields`` (|-separated)."""
    out = slurm(conf, "squeue", "-h", "-u", user, "-t", "PENDING,RUNNING", "-o", fields)
    return [line.split("|") for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def flex_hub(slurm_cluster, tmp_path_factory):
    from support.hubtools import hub_yaml

    workdir = tmp_path_factory.mktemp("slurm-choices")
    config = hub_yaml(
        workdir / "state",
        backends={"cluster": {"type": "slurm", "slurm_conf": slurm_cluster, "poll_interval": 2, "command_timeout": 20}},
        profiles=[{
            "slug": "cpu-flex", "display_name": "CPU, your choice", "backend": "cluster", "default": True,
            "cpus": 1, "memory": "512M", "time_limit": "00:10:00", "spawn_timeout": 300, "slurm": {"partition": "cpu"},
            "choices": {"cpus": {"min": 1, "max": 8}, "time_limit": {"min": "00:05:00", "max": "01:00:00"},
                        "partition": ["cpu", "short"], "reservation": "active"},
        }, {
            "slug": "funded", "display_name": "CPU on your project", "backend": "cluster",
            "cpus": 1, "memory": "512M", "time_limit": "00:10:00", "spawn_timeout": 300, "slurm": {"partition": "cpu"},
            "choices": {"account": "associations", "qos": ["normal", "debug"],
                        "time_limit": {"min": "00:05:00", "max": "02:00:00"}},
        }, {
            "slug": "gone", "display_name": "A partition the cluster does not have", "backend": "cluster",
            "cpus": 1, "time_limit": "00:10:00", "slurm": {"partition": "nosuch"},
        }, {
            "slug": "short-only", "display_name": "Short partition", "backend": "cluster",
            "cpus": 1, "time_limit": "00:10:00", "slurm": {"partition": "short"},
        }],
    )
    with started_slurm_hub(Hub(workdir, config), slurm_cluster) as hub:
        yield hub


def test_cpus_and_time_chosen_through_the_api_are_the_jobs_and_an_extension_shows_in_squeue(flex_hub):
    alice = login(flex_hub, "alice")
    conf = flex_hub.slurm_conf
    refused = alice.api("POST", "/users/alice/server", json={"profile": "cpu-flex", "cpus": 99999})
    assert refused.status_code == 400 and refused.json()["message"].startswith("Profile 'cpu-flex': cpus: 99999 is above the maximum 8")
    assert _squeue(conf, "alice", "%i") == []  # nothing was submitted
    started = alice.api("POST", "/users/alice/server", json={"profile": "cpu-flex", "cpus": 2, "time_limit": "00:20:00"})
    assert started.status_code in (201, 202), started.text
    try:
        alice.wait_ready("alice", timeout=120)
        (row,) = _squeue(conf, "alice", "%C|%l|%P")
        assert row == ["2", "20:00", "cpu"]
        extended = alice.api("POST", "/hpclab/servers/alice/extend", json={"minutes": 30})
        assert extended.status_code == 200, extended.text
        assert extended.json()["time_limit"] == "00:50:00"
        (row,) = _squeue(conf, "alice", "%C|%l|%P")
        assert row == ["2", "50:00", "cpu"]
        too_far = alice.api("POST", "/hpclab/servers/alice/extend", json={"minutes": 30})
        assert too_far.status_code == 400 and "past this profile's maximum 01:00:00" in too_far.json()["message"]
        assert _squeue(conf, "alice", "%l") == [["50:00"]]
    finally:
        stop_server(alice, "alice")


def test_a_start_slurm_would_never_run_is_refused_with_its_answer_and_the_form_counts_reserved_cores(flex_hub):
    """The reservation `course` holds one of the node's 8 cores: 8 cores outside it can never start."""
    conf = flex_hub.slurm_conf
    alice = login(flex_hub, "alice")
    form = _form_choice(alice.http.get(f"{flex_hub.url}/hub/spawn/alice").text, "cpu-flex")
    assert "Partition cpu: 1 node, 7 of 8 cores free, 2 of 2 GPUs free now; 1 core held by reservation course." in form, form
    never = alice.api("POST", "/users/alice/server", json={"profile": "cpu-flex", "cpus": 8})
    assert never.status_code == 400, never.text
    message = never.json()["message"]
    assert message.startswith("Profile 'cpu-flex' cannot start here: SLURM would never start this job: ")
    assert "Requested node configuration is not available" in message  # SLURM's own words (sbatch --test-only)
    assert _squeue(conf, "alice", "%i") == []  # nothing was queued
    assert "" not in alice.api("GET", "/users/alice").json()["servers"]
    # the same through the form: shown on the form again, with the reason
    page = alice.http.get(f"{flex_hub.url}/hub/spawn/alice")
    posted = alice.http.post(f"{flex_hub.url}/hub/spawn/alice", allow_redirects=False,
                             data={"profile": "cpu-flex", "cpu-flex--cpus": "8", "_xsrf": alice._xsrf(page.text)})
    assert posted.status_code == 400 and "SLURM would never start this job" in html.unescape(posted.text)
    assert _squeue(conf, "alice", "%i") == []


def test_a_reservation_and_a_second_partition_chosen_in_the_form_land_in_the_job(flex_hub):
    bob = login(flex_hub, "bob")
    form = bob.http.get(f"{flex_hub.url}/hub/spawn/bob").text
    assert re.search(r'<select name="cpu-flex--reservation"[^>]*>\s*<option value="" selected>none</option><option value="course">course</option>', form)
    assert re.search(r'<select name="cpu-flex--partition"[^>]*>\s*<option value="cpu" selected>cpu</option>\s*<option value="short">', form)
    xsrf = bob._xsrf(form)
    # a reservation the cluster does not have (or not for bob) is refused before sbatch
    forged = bob.http.post(f"{flex_hub.url}/hub/spawn/bob", allow_redirects=False,
                           data={"profile": "cpu-flex", "cpu-flex--reservation": "maintenance", "_xsrf": xsrf})
    assert forged.status_code == 400
    assert "reservation: 'maintenance' is not one you may use (allowed: course)" in html.unescape(forged.text)
    posted = bob.http.post(f"{flex_hub.url}/hub/spawn/bob", allow_redirects=False,
                           data={"profile": "cpu-flex", "cpu-flex--partition": "short", "cpu-flex--reservation": "course",
                                 "cpu-flex--cpus": "1", "cpu-flex--time_limit": "00:10:00", "_xsrf": xsrf})
    assert posted.status_code == 302, posted.text[:500]
    try:
        bob.wait_ready("bob", timeout=120)
        (row,) = _squeue(flex_hub.slurm_conf, "bob", "%P|%v|%C|%l")
        assert row == ["short", "course", "1", "10:00"]
    finally:
        stop_server(bob, "bob")


def test_a_start_pending_behind_a_full_node_is_cancelled_from_the_progress_page(flex_hub, browser, artifacts):
    conf = flex_hub.slurm_conf
    idle = int(slurm(conf, "sinfo", "-h", "-p", "cpu", "-o", "%C").strip().split("/")[1])
    for cores in range(idle, 0, -1):  # the reserved core counts as idle in sinfo: fill what others can use
        blocker = slurm(conf, "sbatch", "--parsable", "-p", "cpu", "-c", str(cores), "--mem=64M", "-o", "/dev/null",
                        "--wrap", "sleep 600", user="bob").strip()
        try:
            wait_for(lambda: [j["state"] for j in jobs(conf) if j["id"] == blocker] == ["RUNNING"], 10, "blocker pending")
            break
        except AssertionError:
            slurm(conf, "scancel", blocker)
    page = browser.new_page()
    page.set_default_timeout(60_000)
    try:
        browser_login(page, flex_hub, "alice")
        page.goto(f"{flex_hub.url}/hub/spawn")
        page.fill("#cpu-flex--cpus", "2")
        page.click("form#spawn_form [type=submit]")
        page.wait_for_url("**/hub/spawn-pending/alice**")
        assert "_xsrf" not in page.url, page.url  # the form's token stays out of the address bar and the logs
        page.get_by_text("pending (Resources").first.wait_for(timeout=90_000)  # SLURM's reason, on the progress page
        (pending,) = [j for j in jobs(conf) if j["user"] == "alice"]
        assert pending["state"] == "PENDING"
        page.screenshot(path=str(artifacts / "slurm-pending-cancel.png"))
        page.click("#hpclab-cancel")
        page.wait_for_url("**/hub/home", timeout=60_000)
        wait_for(lambda: not [j for j in jobs(conf) if j["user"] == "alice"], 30, "alice's job is still queued after Cancel")
        assert not login(flex_hub, "alice").api("GET", "/users/alice").json()["servers"].get("", {}).get("ready")
    finally:
        page.close()
        slurm(conf, "scancel", "-u", "bob")
        slurm(conf, "scancel", "-u", "alice")


def test_accounts_from_the_users_associations_and_a_qos_land_in_the_job_within_the_qos_time(flex_hub):
    """The dev cluster's accounting (slurmdbd): alice may charge physics or teaching, bob only teaching;
    QoS debug allows 30 minutes, which the hub holds a longer choice against before sbatch."""
    conf = flex_hub.slurm_conf
    alice, bob = login(flex_hub, "alice"), login(flex_hub, "bob")
    form = alice.http.get(f"{flex_hub.url}/hub/spawn/alice").text
    # "none": SLURM's default account of the user (physics for alice)
    assert re.search(r'<select name="funded--account"[^>]*>\s*<option value="" selected>none</option>\s*'
                     r'<option value="physics">physics</option>\s*<option value="teaching">teaching</option>\s*</select>', form)
    bob_form = bob.http.get(f"{flex_hub.url}/hub/spawn/bob").text
    assert re.search(r'<select name="funded--account"[^>]*>\s*<option value="" selected>none</option>\s*'
                     r'<option value="teaching">teaching</option>\s*</select>', bob_form)
    # bob has no association with physics; debug's MaxWall is 30 minutes: both refused, nothing submitted
    refused = bob.api("POST", "/users/bob/server", json={"profile": "funded", "account": "physics"})
    assert refused.status_code == 400 and "account: 'physics' is not one you may use (allowed: teaching)" in refused.json()["message"]
    too_long = alice.api("POST", "/users/alice/server", json={"profile": "funded", "qos": "debug", "time_limit": "01:00:00"})
    assert too_long.status_code == 400, too_long.text
    assert too_long.json()["message"] == ("Profile 'funded': time_limit: 01:00:00 is above QoS debug's MaxWall 00:30:00; "
                                          "choose at most 00:30:00")
    assert _squeue(conf, "alice", "%i") == [] and _squeue(conf, "bob", "%i") == []
    started = alice.api("POST", "/users/alice/server",
                        json={"profile": "funded", "account": "teaching", "qos": "debug", "time_limit": "00:20:00"})
    assert started.status_code in (201, 202), started.text
    try:
        alice.wait_ready("alice", timeout=120)
        (row,) = _squeue(conf, "alice", "%a|%q|%l")
        assert row == ["teaching", "debug", "20:00"]
        # an extension is held to the same MaxWall: 10 more minutes, not the profile's 02:00:00
        assert alice.api("GET", "/hpclab/servers/alice").json()["extendable_minutes"] == 10
        past = alice.api("POST", "/hpclab/servers/alice/extend", json={"minutes": 30})
        assert past.status_code == 400, past.text
        assert past.json()["message"] == ("minutes: 30 more would make the wall time 00:50:00, past QoS debug's MaxWall "
                                          "00:30:00 (00:10:00 may still be added)")
        assert _squeue(conf, "alice", "%l") == [["20:00"]]
        assert alice.api("POST", "/hpclab/servers/alice/extend", json={"minutes": 10}).json()["extendable_minutes"] == 0
        assert _squeue(conf, "alice", "%l") == [["30:00"]]
    finally:
        stop_server(alice, "alice")


def _form_choice(form: str, slug: str) -> str:
    """The form's entry of one profile (its label, with the disabled radio and the reason)."""
    match = re.search(rf'<label class="hpclab-profile[^"]*"[^>]*data-profile="{slug}".*?</label>', form, re.S)
    assert match, f"profile {slug} not on the form"
    return html.unescape(match.group(0))


def test_a_missing_or_down_partition_is_disabled_on_the_form_and_refused_before_sbatch(flex_hub):
    conf = flex_hub.slurm_conf
    bob = login(flex_hub, "bob")
    form = bob.http.get(f"{flex_hub.url}/hub/spawn/bob").text
    gone = _form_choice(form, "gone")
    assert re.search(r'id="profile-gone"[^>]*disabled', gone)
    assert "Not available here: The cluster has no partition 'nosuch'." in gone
    short = _form_choice(form, "short-only")
    assert not re.search(r'id="profile-short-only"[^>]*disabled', short) and "Partition short:" in short
    # a forged form and a REST start of it: a clear 400 with the form's reason, and no job
    forged = bob.post_spawn("bob", "gone")
    assert forged.status_code == 400, forged.status_code
    assert "Profile 'gone' cannot start here: The cluster has no partition 'nosuch'." in html.unescape(forged.text)
    refused = bob.api("POST", "/users/bob/server", json={"profile": "gone"})
    assert refused.status_code == 400, refused.text
    assert refused.json()["message"] == "Profile 'gone' cannot start here: The cluster has no partition 'nosuch'."
    assert _squeue(conf, "bob", "%i") == []
    assert bob.api("GET", "/users/bob").json()["servers"] == {}
    # the admins close a partition: its profile, and a choice of it, are refused until it reopens
    slurm(conf, "scontrol", "update", "PartitionName=short", "State=DOWN")
    try:
        down = "Partition short is down (the cluster's admins closed it)."
        form = bob.http.get(f"{flex_hub.url}/hub/spawn/bob").text
        short = _form_choice(form, "short-only")
        assert re.search(r'id="profile-short-only"[^>]*disabled', short) and f"Not available here: {down}" in short
        forged = bob.post_spawn("bob", "short-only")
        assert forged.status_code == 400 and f"Profile 'short-only' cannot start here: {down}" in html.unescape(forged.text)
        chosen = bob.api("POST", "/users/bob/server", json={"profile": "cpu-flex", "partition": "short"})
        assert chosen.status_code == 400, chosen.text
        assert chosen.json()["message"] == f"Profile 'cpu-flex' cannot start here: {down}"
        assert _squeue(conf, "bob", "%i") == []
        assert bob.api("GET", "/users/bob").json()["servers"] == {}
    finally:
        slurm(conf, "scontrol", "update", "PartitionName=short", "State=UP")


def test_the_clusters_answers_are_read_per_user_and_per_partition():
    """Parsers of scontrol's reservations and sinfo's typed GRES, on output shaped as SLURM 22.05 prints it."""
    from hpclab_hub.backends.slurm.outputs import parse_gpu_types, parse_reservations

    text = ("ReservationName=course StartTime=2026-12-01T08:00:00 EndTime=2026-12-02T08:00:00 Nodes=n1 CoreCnt=1 "
            "Users=alice,bob State=ACTIVE\n"
            "ReservationName=later StartTime=2027-01-01T08:00:00 Users=alice State=INACTIVE\n"
            "ReservationName=staff StartTime=2026-12-01T08:00:00 Users=-alice,carol State=ACTIVE\n")
    assert parse_reservations(text, "alice") == ["course"]
    assert parse_reservations(text, "carol") == ["staff"]
    assert parse_reservations(text, "dave") == []
    sinfo = {"nodes": [{"gres": "gpu:a100:4(S:0-1)", "partitions": ["gpu", "all"]},
                       {"gres": "gpu:v100:2,shard:8", "partitions": ["gpu"]},
                       {"gres": "gpu:2", "partitions": ["old"]}, {"gres": "", "partitions": ["cpu", "all"]}]}
    assert parse_gpu_types(sinfo) == {"gpu": ["a100", "v100"], "all": ["a100"], "old": [], "cpu": []}
