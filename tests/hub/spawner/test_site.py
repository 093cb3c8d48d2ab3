"""One hub for the whole site: mixed backends in one YAML, named servers, a form that tells the truth,
links that preselect or open an example, and examples in every session (refreshed, edits kept).

The hub here is real (JupyterHub + configurable-http-proxy, servers as the users' own accounts);
its local backend has no GPU, as on this machine. The cluster half of a mixed site is exercised on
the real dev SLURM in tests/e2e/test_site_browser.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests
import yaml

from support.dltools import require_dl_venv
from support.hubtools import HUB_CLI, home_of, hub_yaml, login, started_hub, stop_server
from support.paths import REPO_ROOT

REPO = REPO_ROOT
KERNEL_TEMPLATES = REPO / "hub" / "hpclab_hub" / "kernels" / "templates"


def _site_yaml(workdir: Path, examples: Path) -> dict:
    config = hub_yaml(
        workdir / "state",
        backends={"local": {"type": "local", "cpus": "auto", "gpus": [], "home_dir": str(workdir / "homes" / "{username}")}},
        profiles=[
            {"slug": "cpu-small", "display_name": "CPU (small)", "backend": "local", "cpus": 1, "memory": "2G", "default": True},
            {"slug": "cpu-large", "display_name": "CPU (large)", "backend": "local", "cpus": 1, "memory": "3G"},
            {"slug": "gpu-1", "display_name": "GPU", "backend": "local", "cpus": 1, "gpus": 1, "groups": ["gpu-users"]},
        ],
        quotas={"per_user": {"servers": 2}},
        examples={"source": str(examples)},
    )
    logo = workdir / "site-logo.png"
    shutil.copy(KERNEL_TEMPLATES / "josephson" / "logo-64x64.png", logo)
    config["hub"].update(site_name="Test <Site> Hub", named_server_limit=2, logo=str(logo))
    return config


@pytest.fixture(scope="module")
def examples_source(tmp_path_factory) -> Path:
    """The deployment's copy of the examples (a copy of notebooks/, so a test can publish a new version)."""
    source = tmp_path_factory.mktemp("examples-source") / "notebooks"
    shutil.copytree(REPO / "notebooks", source)
    for path in [source, *source.parents]:
        path.chmod(path.stat().st_mode | 0o005)  # servers run as the users' own accounts
        if path == Path("/"):
            break
    return source


@pytest.fixture(scope="module")
def site(tmp_path_factory, examples_source):
    workdir = tmp_path_factory.mktemp("site")
    with started_hub(workdir, _site_yaml(workdir, examples_source)) as hub:
        yield hub


def _form_choice(html: str, slug: str) -> str:
    match = re.search(rf'<label class="hpclab-profile[^"]*"[^>]*data-profile="{slug}".*?</label>', html, re.S)
    assert match, f"profile {slug} not on the form"
    return match.group(0)


def _checked(html: str) -> list[str]:
    return re.findall(r'value="([a-z0-9-]+)"\s+checked', html)


# -- the YAML: any mix of backends ------------------------------------------------------------------
def test_the_seeds_site_yaml_mixes_a_cluster_and_a_gpu_server_and_checks_ok():
    proc = subprocess.run([str(HUB_CLI), "check", str(REPO / "deploy/examples/site.yaml")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cluster (slurm), gpu-server (local)" in proc.stdout
    config = yaml.safe_load((REPO / "deploy/examples/site.yaml").read_text())
    kinds = {name: backend["type"] for name, backend in config["backends"].items()}
    by_backend = {kinds[p["backend"]] for p in config["profiles"] if p.get("gpus")} | {kinds[p["backend"]] for p in config["profiles"] if not p.get("gpus")}
    assert by_backend == {"slurm", "local"}
    assert {(kinds[p["backend"]], bool(p.get("gpus"))) for p in config["profiles"]} == {
        ("slurm", False), ("slurm", True), ("local", False), ("local", True)}


def test_the_site_example_offers_a_profile_with_choices_and_checks_ok_in_place():
    """Issue 25 item 5: choices, cancelling a pending start and extending can be tried from site.yaml itself."""
    from hpclab_hub.config import load_deployment

    site = load_deployment(REPO / "deploy/examples/site.yaml")
    (flex,) = [p for p in site.profiles if p.choices is not None]
    assert {"cpus", "memory", "time_limit"} <= set(flex.choices.offered())
    assert site.backends[flex.backend].type == "slurm"  # a start waiting in the queue can be cancelled
    assert flex.choices.time_limit.max > flex.time_limit  # room to extend
    assert flex.choices.cpus.max <= 8 and max(flex.choices.memory) <= 16000 * 2**20  # fits the dev cluster's node
    # its relative runtimes resolve inside this checkout, where `check` looks for them
    assert {name: k.runtime.prefix for name, k in site.kernels.items()} == {
        "josephson": REPO / ".venv", "mri": REPO / ".venv", "dl": REPO / ".venv-dl"}
    require_dl_venv()  # `make test` builds .venv-dl; without it `check` rightly says the dl kernel cannot start
    proc = subprocess.run([str(HUB_CLI), "check", str(REPO / "deploy/examples/site.yaml")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{flex.slug}," in proc.stdout and proc.stderr == ""


def test_every_shipped_single_backend_yaml_still_checks_ok():
    for path in [REPO / "deploy/hub.yaml", REPO / "deploy/examples/slurm.yaml", REPO / "deploy/examples/gpu-server.yaml"]:
        proc = subprocess.run([str(HUB_CLI), "check", str(path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{path}: {proc.stdout}{proc.stderr}"


# -- the form tells the truth ----------------------------------------------------------------------
def test_gpu_profile_on_a_gpu_less_server_is_disabled_with_the_reason(site):
    alice = login(site, "alice")  # in gpu-users: allowed, but there is no GPU here
    html = alice.spawn_form()
    gpu = _form_choice(html, "gpu-1")
    assert re.search(r'id="profile-gpu-1"[^>]*disabled', gpu)
    assert "Not available here: This server has no GPU; the profile needs 1 GPU." in gpu
    cpu = _form_choice(html, "cpu-small")
    assert "disabled" not in cpu and re.search(r"This server: \d+ of \d+ cores? idle", cpu)
    # a forged form asking for it anyway: a clear 400, nothing starts, nothing is held
    response = alice.post_spawn("alice", "gpu-1")
    assert response.status_code == 400, response.status_code
    assert "cannot start here: This server has no GPU" in response.text
    assert alice.api("GET", "/users/alice").json()["servers"] == {}


def test_each_profile_says_its_resources_once_and_the_site_name_is_escaped(site):
    html = login(site, "bob").spawn_form()
    small = _form_choice(html, "cpu-small")
    assert small.count("1 core") == 1 and small.count("2 GB") == 1
    assert 'data-profile="gpu-1"' not in html  # bob is not in gpu-users: not even shown
    assert "Test &lt;Site&gt; Hub" in html and "<Site>" not in html
    assert "<title>Test &lt;Site&gt; Hub</title>" in html.replace("\n", "")


def test_the_sites_logo_is_served_on_every_page(site):
    logo = login(site, "bob").http.get(f"{site.url}/hub/logo")
    assert logo.status_code == 200
    assert logo.content == Path(site.config["hub"]["logo"]).read_bytes()


def test_a_link_preselects_a_profile_without_starting_anything(site):
    bob = login(site, "bob")
    page = bob.http.get(f"{site.url}/hub/spawn?profile=cpu-large")
    assert page.status_code == 200 and _checked(page.text) == ["cpu-large"]
    assert bob.api("GET", "/users/bob").json()["servers"] == {}
    # a profile bob may not use, preselected by a link, is not offered (and the default is checked)
    page = bob.http.get(f"{site.url}/hub/spawn?profile=gpu-1")
    assert _checked(page.text) == ["cpu-small"] and 'data-profile="gpu-1"' not in page.text


def test_open_link_refuses_paths_outside_the_server(site):
    bob = login(site, "bob")
    for path in ["../../etc/passwd", "", "/..", "examples/..\\..\\x"]:
        response = bob.http.get(f"{site.url}/hub/hpclab/open", params={"profile": "cpu-small", "path": path}, allow_redirects=False)
        assert response.status_code == 400, (path, response.status_code)


def test_open_link_to_a_restricted_profile_says_why_and_links_to_the_form(site):
    bob = login(site, "bob")  # not in gpu-users
    response = bob.http.get(f"{site.url}/hub/hpclab/open", params={"profile": "gpu-1", "path": "examples/josephson-sweep.ipynb"})
    assert response.status_code == 403
    assert "Profile &#39;gpu-1&#39; is restricted to the groups: gpu-users." in response.text
    assert re.search(r'<a href="/hub/spawn" id="hpclab-choose-profile">Choose a profile you may use</a>', response.text)
    assert bob.api("GET", "/users/bob").json()["servers"] == {}
    # a plain spawn link to it shows the form with another profile selected, and says why
    form = bob.http.get(f"{site.url}/hub/spawn/bob?profile=gpu-1")
    assert form.status_code == 200 and _checked(form.text) != ["gpu-1"]
    assert "The link asked for the profile gpu-1, which your account may not use; another is selected." in form.text


# -- named servers, quotas over all of them, the home page -----------------------------------------
def test_two_servers_side_by_side_listed_on_the_home_page_and_counted_by_quotas(site):
    alice = login(site, "alice")
    assert alice.post_spawn("alice", "cpu-small").status_code == 302
    assert alice.post_spawn("alice", "cpu-large", server_name="second").status_code == 302
    try:
        alice.wait_ready("alice")
        alice.wait_ready("alice", server_name="second")
        servers = alice.api("GET", "/users/alice").json()["servers"]
        assert servers[""]["user_options"]["profile"] == "cpu-small"
        assert servers["second"]["user_options"]["profile"] == "cpu-large"
        home = alice.http.get(f"{site.url}/hub/home").text
        table = re.search(r'<table class="table table-sm" id="hpclab-servers">.*?</table>', home, re.S).group(0)
        rows = {m.group(1): m.group(0) for m in re.finditer(r'data-server-name="([^"]*)">.*?</tr>', table, re.S)}
        assert set(rows) == {"", "second"}
        for name, profile in (("", "CPU (small)"), ("second", "CPU (large)")):
            assert profile in rows[name] and "local (this server)" in rows[name] and "running" in rows[name]
        # per_user servers: 2 — a third server (named) is refused with what is in use
        third = alice.post_spawn("alice", "cpu-small", server_name="third")
        assert third.status_code == 429 and "2 of 2 servers in use" in third.text
        assert "third" not in alice.api("GET", "/users/alice?include_stopped_servers=1").json()["servers"]  # nothing left behind
        # the same through the REST API: refused, and no stopped "fourth" left behind to count against the limit
        fourth = alice.api("POST", "/users/alice/servers/fourth", json={"profile": "cpu-small"})
        assert fourth.status_code == 429, fourth.text
        assert "fourth" not in alice.api("GET", "/users/alice?include_stopped_servers=1").json()["servers"]
        assert "fourth" not in alice.http.get(f"{site.url}/hub/home").text
        # the form remembers the last profile chosen (cpu-large, for "second")
        assert _checked(alice.http.get(f"{site.url}/hub/spawn/alice/third").text) == ["cpu-large"]
        # an "open this example" link for a profile already running goes straight to that server's notebook
        response = alice.http.get(f"{site.url}/hub/hpclab/open", params={"profile": "cpu-large", "path": "examples/josephson-sweep.ipynb"},
                                  allow_redirects=False)
        assert response.status_code == 302
        assert response.headers["Location"].endswith("/user/alice/second/lab/tree/examples/josephson-sweep.ipynb")
    finally:
        stop_server(alice, "alice", server_name="second")
        stop_server(alice, "alice")
        alice.api("DELETE", "/users/alice/servers/third")


def test_open_link_starts_a_server_of_that_profile_and_then_opens_the_notebook(site):
    bob = login(site, "bob")
    response = bob.http.get(f"{site.url}/hub/hpclab/open", params={"profile": "cpu-large", "path": "examples/josephson-sweep.ipynb"},
                            allow_redirects=False)
    assert response.status_code == 302
    target = urlparse(response.headers["Location"])
    assert target.path == "/hub/spawn/bob"
    query = parse_qs(target.query)
    assert query["opt-profile"] == ["cpu-large"] and query["next"] == [site.user_url("bob") + "lab/tree/examples/josephson-sweep.ipynb"]
    try:
        landed = bob.follow_spawn_link(f"{target.path}?{target.query}")  # the form, filled in; bob presses Start
        assert landed.status_code == 302, landed.text[:300]
        server = bob.wait_ready("bob")
        assert server["user_options"]["profile"] == "cpu-large"
    finally:
        stop_server(bob, "bob")


def test_a_spawn_link_from_another_site_only_shows_the_form(site):
    """Issue 26: a page on another origin that navigates to a spawn link (JupyterHub 6 starts a server for a GET with
    ``opt-`` arguments) must not start anything; the form shows the link's choices and only its POST starts."""
    bob = login(site, "bob")
    elsewhere = {"Referer": "http://attacker.example/cats.html", "Sec-Fetch-Site": "cross-site"}  # a top-level navigation
    for link in ("/hub/spawn/bob/x?opt-profile=cpu-large", "/hub/spawn/bob?opt-profile=cpu-large", "/hub/spawn?profile=cpu-large"):
        page = bob.http.get(f"{site.url}{link}", headers=elsewhere, allow_redirects=False)
        assert page.status_code == 200 and 'id="hpclab-link-note"' in page.text, (link, page.status_code)
        assert _checked(page.text) == ["cpu-large"]  # the link's choice, shown
        assert bob.api("GET", "/users/bob").json()["servers"] == {}, link  # nothing started
        assert not set(bob.api("GET", "/users/bob?include_stopped_servers=1").json()["servers"]) - {""}, link  # no named record
    # the form's POST from another site carries no XSRF token (and no cookie: SameSite=Lax): refused
    forged = requests.post(f"{site.url}/hub/spawn/bob/x", data={"profile": "cpu-large"}, cookies=bob.http.cookies,
                           headers=elsewhere, allow_redirects=False)
    assert forged.status_code == 403
    assert bob.api("GET", "/users/bob").json()["servers"] == {}


# -- examples in every session ------------------------------------------------------------------------
def test_examples_arrive_and_a_users_edit_survives_a_restart_and_an_update(site, examples_source):
    alice = login(site, "alice")
    examples = home_of(site.config["hub"]["data_dir"], "alice") / "examples"
    assert alice.post_spawn("alice", "cpu-small").status_code == 302
    alice.wait_ready("alice")
    notebook = examples / "josephson-sweep.ipynb"
    delivered = json.loads(notebook.read_text())
    assert delivered["metadata"]["kernelspec"]["name"] == "josephson"  # opens in the curated kernel
    assert {p.name for p in examples.glob("*.ipynb")} >= {"josephson-sweep.ipynb", "mri-pipeline.ipynb", "resnet-horovod.ipynb"}
    # alice edits the notebook (as her own account: the file is hers)
    owner = notebook.stat().st_uid
    delivered["cells"][0]["source"] = "# alice's own notes\n"
    notebook.write_text(json.dumps(delivered))
    stop_server(alice, "alice")
    # the deployment publishes a new version of both notebooks meanwhile
    for name in ("josephson-sweep.ipynb", "mri-pipeline.ipynb"):
        published = json.loads((examples_source / name).read_text())
        published["cells"][0]["source"] = "# version 2 of the example\n"
        (examples_source / name).write_text(json.dumps(published, indent=1))
    assert alice.post_spawn("alice", "cpu-small").status_code == 302
    try:
        alice.wait_ready("alice")
        mine = json.loads(notebook.read_text())
        assert mine["cells"][0]["source"] in ("# alice's own notes\n", ["# alice's own notes\n"])
        assert notebook.stat().st_uid == owner
        beside = json.loads((examples / "josephson-sweep.updated.ipynb").read_text())
        assert "version 2" in "".join(beside["cells"][0]["source"])
        # the notebook she never touched is simply upgraded
        upgraded = json.loads((examples / "mri-pipeline.ipynb").read_text())
        assert "version 2" in "".join(upgraded["cells"][0]["source"])
    finally:
        stop_server(alice, "alice")


# -- availability, from the backends' own answers (pure functions over real parsed shapes) ----------
def _profile(**fields):
    from hpclab_hub.config.model import Profile

    return Profile(**{"slug": "p", "display_name": "P", "backend": "b", **fields})


def test_slurm_availability_disables_missing_down_and_gpu_less_partitions():
    from hpclab_hub.backends.slurm.availability import slurm_availability
    from hpclab_hub.backends.slurm.outputs import PartitionState, parse_partition_lines

    settings = parse_partition_lines("PartitionName=cpu State=UP MaxTime=UNLIMITED\nPartitionName=old State=DOWN MaxTime=1:00:00\n"
                                     "PartitionName=gpu State=UP\n")
    states = {"cpu": PartitionState("cpu", 2, 8, 5, 0, 0), "old": PartitionState("old", 1, 4, 4, 0, 0),
              "gpu": PartitionState("gpu", 1, 4, 4, 2, 1)}
    assert slurm_availability(_profile(), "cpu", states, settings).note == "Partition cpu: 2 nodes, 5 of 8 cores free now."
    assert slurm_availability(_profile(), "old", states, settings).blocked == "Partition old is down (the cluster's admins closed it)."
    assert slurm_availability(_profile(), "nope", states, settings).blocked == "The cluster has no partition 'nope'."
    assert "has no GPUs" in slurm_availability(_profile(gpus=1), "cpu", states, settings).blocked
    gpu = slurm_availability(_profile(gpus=1), "gpu", states, settings)
    assert not gpu.blocked and gpu.note.endswith("1 of 2 GPUs free now.")


def test_local_availability_counts_idle_cores_and_free_gpus():
    from hpclab_hub.backends.local.availability import local_availability, local_blocked
    from hpclab_hub.backends.local.resources import ResourcePool

    pool = ResourcePool((0, 1, 2, 3), ("0", "1"))
    pool.allocate("alice/", 2, 1)
    assert local_availability(_profile(), pool).note == "This server: 2 of 4 cores idle, 1 of 2 GPUs free."
    assert local_blocked(_profile(gpus=3), pool) == "This server has only 2 GPUs; the profile needs 3 GPUs."
    pool.allocate("bob/", 1, 1)
    busy = local_availability(_profile(gpus=1), pool)
    assert not busy.blocked and "all GPUs are in use now" in busy.note  # a wait, not a refusal
    assert local_blocked(_profile(gpus=1), ResourcePool((0,), ())) == "This server has no GPU; the profile needs 1 GPU."


def test_gpus_auto_without_an_nvidia_driver_disables_gpu_profiles(tmp_path, monkeypatch):
    """`gpus: auto` (deploy/examples/site.yaml's gpu-server) on a machine without nvidia-smi: no GPUs,
    so the GPU profile is disabled with the reason; with a driver that lists two, it is not."""
    from hpclab_hub.backends.local import resources
    from hpclab_hub.backends.local.availability import local_blocked

    monkeypatch.setattr(resources, "_POOLS", {})
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi anywhere
    pool = resources.pool_for("gpu-server", [0, 1], "auto")
    assert pool.gpu_ids == ()
    assert local_blocked(_profile(gpus=1), pool) == "This server has no GPU; the profile needs 1 GPU."
    fake = tmp_path / "nvidia-smi"  # a driver's answer to --query-gpu=index --format=csv,noheader
    fake.write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(resources, "_POOLS", {})
    pool = resources.pool_for("gpu-server", [0, 1], "auto")
    assert pool.gpu_ids == ("0", "1") and local_blocked(_profile(gpus=1), pool) == ""


# -- the same rule on the form and at start: a forged POST / REST start of a blocked SLURM profile ----
_SINFO = {"nodes": [  # `sinfo --json` as SLURM 22.05 prints it (the fields the hub reads)
    {"state": "idle", "cpus": 8, "alloc_cpus": 0, "gres": "", "gres_used": "", "partitions": ["cpu", "old"]},
    {"state": "mixed", "cpus": 4, "alloc_cpus": 1, "gres": "gpu:2", "gres_used": "gpu:0", "partitions": ["gpu"]},
]}
_PARTITIONS = ("PartitionName=cpu State=UP MaxTime=UNLIMITED\nPartitionName=old State=DOWN MaxTime=1:00:00\n"
               "PartitionName=gpu State=UP MaxTime=2-00:00:00\n")


def _slurm_site_spawner(tmp_path: Path, answer, profiles: list[dict] | None = None):
    """The hub's real spawner on a SLURM-only YAML, its cluster answering ``answer`` (no SLURM here)."""
    from types import SimpleNamespace

    from hpclab_hub.spawner.spawner import HPCLabSpawner

    config = hub_yaml(
        tmp_path / "state",
        backends={"cluster": {"type": "slurm", "partition": "cpu"}},
        profiles=profiles or [
            {"slug": "cpu", "display_name": "CPU", "backend": "cluster", "cpus": 1, "default": True},
            {"slug": "old", "display_name": "Old nodes", "backend": "cluster", "cpus": 1, "slurm": {"partition": "old"}},
            {"slug": "gone", "display_name": "Gone", "backend": "cluster", "cpus": 1, "slurm": {"partition": "nosuch"}},
            {"slug": "gpu-on-cpu", "display_name": "GPU", "backend": "cluster", "cpus": 1, "gpus": 1},
            {"slug": "gpu", "display_name": "GPU", "backend": "cluster", "cpus": 1, "gpus": 1, "slurm": {"partition": "gpu"}},
        ],
    )
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(config))

    class Spawner(HPCLabSpawner):
        async def cluster_state(self, backend_name):  # what sinfo and scontrol would say (parsed by the real parsers)
            return answer

    return Spawner(deployment_file=str(path), user=SimpleNamespace(name="alice", groups=[], admin=False, settings={}))


def _run(coroutine):
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # a fresh loop in its own thread (another tool may own this thread's loop)
        return pool.submit(asyncio.run, coroutine).result()


def _backend(spawner, name: str):
    """A backend object of the spawner's for the YAML's backend ``name`` (what the form asks for availability)."""
    from hpclab_hub.spawner.spawner import BACKENDS

    return BACKENDS[spawner.deployment.backends[name].type](spawner)


def test_a_slurm_profile_the_form_disables_is_refused_at_start_with_the_same_reason(tmp_path):
    from tornado import web

    from hpclab_hub.backends.slurm.outputs import parse_partition_lines, parse_sinfo_json
    from hpclab_hub.spawner.availability import form_availability

    spawner = _slurm_site_spawner(tmp_path, (parse_sinfo_json(_SINFO), parse_partition_lines(_PARTITIONS)))
    shown = _run(form_availability(spawner.deployment, lambda name: _backend(spawner, name)))
    assert shown["old"].blocked == "Partition old is down (the cluster's admins closed it)."
    assert shown["gone"].blocked == "The cluster has no partition 'nosuch'."
    assert shown["gpu-on-cpu"].blocked == "Partition cpu has no GPUs; the profile needs 1 GPU."
    for slug in ("old", "gone", "gpu-on-cpu"):  # what a forged form or a REST start sends
        with pytest.raises(web.HTTPError) as refused:
            _run(spawner._run_apply_user_options({"profile": slug}))
        assert refused.value.status_code == 400
        assert refused.value.log_message == f"Profile {slug!r} cannot start here: {shown[slug].blocked}"
        assert spawner.profile_slug == ""  # refused in apply_user_options: start (sbatch) is never reached, nothing held
    assert not shown["cpu"].blocked and not shown["gpu"].blocked
    _run(spawner._run_apply_user_options({"profile": "gpu"}))
    assert spawner.profile_slug == "gpu"


_FLEX_SLURM = {  # deploy/examples/slurm.yaml's shape: partition short (MaxTime 1 h) may be picked with up to 8 h
    "slug": "flex", "display_name": "CPU, your choice", "backend": "cluster", "cpus": 1, "time_limit": "00:30:00",
    "slurm": {"partition": "cpu"},
    "choices": {"time_limit": {"min": "00:15:00", "max": "08:00:00"}, "partition": ["cpu", "short"]},
}
_SHORT = "PartitionName=short State=UP MaxTime=1:00:00\n"


def _with_short(sinfo: dict) -> dict:
    return {"nodes": [{**node, "partitions": node["partitions"] + ["short"]} if "cpu" in node["partitions"] else node
                      for node in sinfo["nodes"]]}


def test_a_time_limit_above_the_chosen_partitions_max_time_is_refused_at_start(tmp_path):
    from tornado import web

    from hpclab_hub.backends.slurm.outputs import parse_partition_lines, parse_sinfo_json

    answer = (parse_sinfo_json(_with_short(_SINFO)), parse_partition_lines(_PARTITIONS + _SHORT))
    spawner = _slurm_site_spawner(tmp_path, answer, profiles=[_FLEX_SLURM])
    with pytest.raises(web.HTTPError) as refused:  # within the profile's bounds (8 h), past the partition's
        _run(spawner._run_apply_user_options({"profile": "flex", "partition": "short", "time_limit": "02:00:00"}))
    assert refused.value.status_code == 400
    assert refused.value.log_message == ("Profile 'flex': time_limit: 02:00:00 is above partition short's MaxTime 01:00:00; "
                                         "choose at most 01:00:00")
    assert spawner.profile_slug == ""  # refused before anything is held or submitted
    _run(spawner._run_apply_user_options({"profile": "flex", "partition": "short", "time_limit": "01:00:00"}))
    assert spawner.profile_slug == "flex" and spawner.profile.time_limit == 3600
    (tmp_path / "cpu").mkdir()
    (tmp_path / "silent").mkdir()
    other = _slurm_site_spawner(tmp_path / "cpu", answer, profiles=[_FLEX_SLURM])  # cpu: MaxTime=UNLIMITED
    _run(other._run_apply_user_options({"profile": "flex", "time_limit": "08:00:00"}))
    assert other.profile_slug == "flex"
    silent = _slurm_site_spawner(tmp_path / "silent", "scontrol did not answer within 30 s", profiles=[_FLEX_SLURM])
    _run(silent._run_apply_user_options({"profile": "flex", "partition": "short", "time_limit": "02:00:00"}))
    assert silent.profile_slug == "flex"  # a cluster that cannot answer refuses nothing (sbatch decides)


def test_partition_max_time_and_the_live_checks_warning_for_time_choices():
    from hpclab_hub.backends.slurm.availability import partition_max_time
    from hpclab_hub.backends.slurm.live_check import time_choice_warnings
    from hpclab_hub.backends.slurm.outputs import parse_partition_lines
    from hpclab_hub.config.model import Profile

    settings = parse_partition_lines("PartitionName=cpu State=UP Default=YES MaxTime=UNLIMITED\n" + _SHORT
                                     + "PartitionName=gpu State=UP MaxTime=2-00:00:00\n")
    assert partition_max_time("short", settings) == ("short", 3600)
    assert partition_max_time("gpu", settings) == ("gpu", 172800)
    assert partition_max_time("cpu", settings) is None and partition_max_time(None, settings) is None  # unlimited default
    assert partition_max_time("nosuch", settings) is None
    profile = Profile.model_validate(_FLEX_SLURM)
    assert time_choice_warnings(profile, ["cpu", "short"], settings) == [
        "up to 08:00:00 may be chosen, but partition short's MaxTime is 01:00:00: longer requests there are refused at start"]
    assert time_choice_warnings(profile, ["cpu", "gpu"], settings) == []
    fixed = Profile.model_validate({k: v for k, v in _FLEX_SLURM.items() if k != "choices"})
    assert time_choice_warnings(fixed, ["short"], settings) == []  # a fixed time_limit is live_report's error, not this


def test_a_cluster_that_cannot_answer_blocks_no_start(tmp_path):
    from hpclab_hub.backends import Availability
    from hpclab_hub.spawner.availability import form_availability

    spawner = _slurm_site_spawner(tmp_path, "sinfo did not answer within 30 s")
    assert _run(form_availability(spawner.deployment, lambda name: _backend(spawner, name)))["old"] == Availability(note="Cluster state unavailable: sinfo did not answer within 30 s")
    _run(spawner._run_apply_user_options({"profile": "old"}))  # SLURM's own answer (sbatch) decides
    assert spawner.profile_slug == "old"


def test_an_old_yaml_whose_names_hold_the_resources_says_them_once_on_the_form():
    """Display names as deploy/hub.yaml wrote them before the form showed resources itself."""
    from hpclab_hub.config.model import Profile
    from hpclab_hub.spawner.form import render_profile_form

    profiles = [
        Profile(slug="cpu-small", display_name="CPU — 1 core, 2 GB", backend="local", cpus=1, memory="2G", default=True),
        Profile(slug="gpu-1", display_name="GPU — 1 GPU, 4 cores, 16 GB", backend="local", cpus=4, memory="16G", gpus=1,
                time_limit="04:00:00"),
        Profile(slug="cpu-new", display_name="CPU (small)", backend="local", cpus=1, memory="2G"),
    ]
    html = render_profile_form(profiles)
    small = _form_choice(html, "cpu-small")
    assert small.count("1 core") == 1 and small.count("2 GB") == 1 and "hpclab-resources" not in small
    gpu = _form_choice(html, "gpu-1")
    assert gpu.count("1 GPU") == 1 and gpu.count("4 cores") == 1 and gpu.count("16 GB") == 1
    assert re.search(r'class="hpclab-resources"[^>]*>up to 04:00:00</div>', gpu)  # only what the name leaves out
    new = _form_choice(html, "cpu-new")
    assert re.search(r'class="hpclab-resources"[^>]*>1 core, 2 GB memory</div>', new)


def test_a_spawn_link_to_a_profile_one_cannot_start_says_why_on_the_form():
    """Issue 25 (smaller item): a link naming a profile the user may not use, or one blocked now, preselects another
    profile and says so, with the reason; the slug from the link is shown escaped."""
    from hpclab_hub.backends import Availability
    from hpclab_hub.config.model import Profile
    from hpclab_hub.spawner.form import render_profile_form

    profiles = [
        Profile(slug="cpu-small", display_name="CPU (small)", backend="local", cpus=1, memory="2G", default=True),
        Profile(slug="gpu-1", display_name="One GPU", backend="local", cpus=1, memory="2G", gpus=1),
    ]
    blocked = {"gpu-1": Availability(blocked="no GPU on this machine is free")}
    html = render_profile_form(profiles, selected="gpu-1", availability=blocked, link_choices={}, link_profile="gpu-1")
    assert _checked(html) == ["cpu-small"]
    assert 'id="hpclab-link-refused"' in html and "The link asked for One GPU, which cannot start now: no GPU" in html
    hostile = "<b>gpu-9</b>"
    html = render_profile_form(profiles, selected=hostile, link_choices={}, link_profile=hostile)
    assert "The link asked for the profile &lt;b&gt;gpu-9&lt;/b&gt;, which your account may not use" in html
    assert "<b>gpu-9</b>" not in html
    # a link to a profile that starts, and a form without a link, say nothing of it
    for html in (render_profile_form(profiles, selected="cpu-small", link_choices={}, link_profile="cpu-small"),
                 render_profile_form(profiles, selected="gpu-1", availability=blocked)):
        assert "hpclab-link-refused" not in html
