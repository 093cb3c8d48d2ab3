"""Choices within bounds on a local backend: validated the same for form and REST API, applied to the
server (cores, wall time), extended within the profile's maximum, relaunched with the same choices."""

from __future__ import annotations

import json
import re
import time
from urllib.parse import parse_qs, urlparse

import pytest

from hpclab_hub.config.user_choices import ChoiceRefused, stored_form, validate_choices, with_choices
from hpclab_hub.config.errors import ConfigError
from hpclab_hub.config.loader import load_deployment
from hpclab_hub.config.model import Profile

from support.hubtools import hub_yaml, login, started_hub, stop_server
from support.kerneltools import run_in_kernel, user_token

pytestmark = pytest.mark.hub

FLEX = {
    "slug": "flex", "display_name": "Flexible CPU", "backend": "local", "cpus": 1, "memory": "1G", "time_limit": "00:10:00",
    "choices": {"cpus": {"min": 1, "max": 2}, "memory": ["1G", "2G"], "time_limit": {"min": "00:05:00", "max": "00:30:00"}},
}


def _profile(**overrides) -> Profile:
    return Profile.model_validate({**FLEX, **overrides})


# -- the rules, on their own ----------------------------------------------------------------------------
def test_choices_within_bounds_are_applied_and_stored_readably():
    profile = _profile()
    chosen = validate_choices(profile, {"profile": "flex", "cpus": "2", "memory": "2G", "time_limit": "00:20:00"})
    assert chosen == {"cpus": 2, "memory": 2 * 2**30, "time_limit": 1200}
    effective = with_choices(profile, chosen)
    assert (effective.cpus, effective.memory, effective.time_limit) == (2, 2 * 2**30, 1200)
    assert stored_form(chosen) == {"cpus": 2, "memory": "2G", "time_limit": "00:20:00"}
    assert validate_choices(profile, {"profile": "flex"}) == {}  # nothing asked: the profile's own values


@pytest.mark.parametrize(("options", "message"), [
    ({"cpus": 99999}, "cpus: 99999 is above the maximum 2"),
    ({"cpus": 0}, "cpus: 0 is below the minimum 1"),
    ({"cpus": "two"}, "cpus: 'two' is not valid"),
    ({"cpus": True}, "cpus: 'True' is not valid"),
    ({"memory": "3G"}, "memory: 3G is not one of the allowed values (1G, 2G)"),
    ({"time_limit": "01:00:00"}, "time_limit: 01:00:00 is above the maximum 00:30:00"),
    ({"time_limit": "soon"}, "time_limit: 'soon' is not valid"),
    ({"gpus": 1}, "gpus: profile 'flex' does not let you choose this"),
    ({"partition": "gpu"}, "partition: profile 'flex' does not let you choose this"),
    ({"cores": 6}, "cores: not an option; profile 'flex' accepts: profile, cpus, memory, time_limit"),
    ({"walltime": "01:00:00", "cores": 6}, "cores: not an option (nor is walltime); profile 'flex' accepts: profile, cpus,"),
    ({"cores": ""}, "cores: not an option"),  # even empty: a misspelt key never means "the default"
])
def test_choices_out_of_bounds_are_refused_naming_the_key_and_the_bound(options, message):
    with pytest.raises(ChoiceRefused) as refused:
        validate_choices(_profile(), {"profile": "flex", **options})
    assert str(refused.value).startswith(message), str(refused.value)


def test_the_form_passes_on_fields_it_never_has_so_that_the_start_refuses_them():
    from hpclab_hub.spawner.form import profile_from_form

    posted = {"_xsrf": ["token"], "profile": ["flex"], "flex--cpus": ["2"], "flex--memory": ["1G"], "gpu-1--cpus": ["1"]}
    assert profile_from_form(posted) == {"profile": "flex", "cpus": "2", "memory": "1G"}  # JupyterHub's and other profiles' fields
    assert profile_from_form({**posted, "flex--cores": ["6"]}) == {"profile": "flex", "cpus": "2", "memory": "1G", "flex--cores": "6"}
    assert profile_from_form({"profile": ["flex"], "cores": ["6"]}) == {"profile": "flex", "cores": "6"}  # a link's opt-cores
    assert profile_from_form({"_xsrf": ["token"]}) == {}
    with pytest.raises(ChoiceRefused, match="^flex--cores: not an option"):
        validate_choices(_profile(), profile_from_form({**posted, "flex--cores": ["6"]}))


def _local_spawner(tmp_path, ready: bool = True, extend_delay: float = 0.0):
    """The hub's real spawner on a local YAML with FLEX, running, without a hub around it."""
    import asyncio
    from types import SimpleNamespace

    import yaml

    from hpclab_hub.spawner.spawner import HPCLabSpawner

    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(hub_yaml(tmp_path / "state", profiles=[{**FLEX, "default": True}])))

    class Spawner(HPCLabSpawner):
        @property
        def ready(self):
            return ready

    spawner = Spawner(deployment_file=str(path), user=SimpleNamespace(name="alice", groups=[], admin=False, settings={}))
    spawner.profile_slug = "flex"

    async def slow_extend(seconds):  # SLURM's scontrol takes a while: a second request can arrive meanwhile
        await asyncio.sleep(extend_delay)

    spawner.server_backend.extend = slow_extend
    return spawner


def _run(coroutine):
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # a fresh loop in its own thread (another tool may own this thread's loop)
        return pool.submit(asyncio.run, coroutine).result()


def test_two_extensions_at_once_cannot_both_pass_the_maximum(tmp_path):
    import asyncio

    from tornado import web

    spawner = _local_spawner(tmp_path, extend_delay=0.1)
    spawner.user_choices = {"time_limit": 1200}  # 20 min of a 30 min maximum
    spawner.job_end_epoch = end = time.time() + 1200

    async def both():
        return await asyncio.gather(spawner.extend_walltime(10), spawner.extend_walltime(10), return_exceptions=True)

    first, second = _run(both())
    assert first == end + 600
    assert isinstance(second, web.HTTPError) and second.status_code == 400, second
    assert "10 more would make the wall time 00:40:00, past this profile's maximum 00:30:00 (00:00:00 may" in second.log_message
    assert spawner.extended_seconds == 600 and spawner.job_end_epoch == end + 600


def test_the_local_time_limit_message_says_the_extended_limit(tmp_path, monkeypatch):
    spawner = _local_spawner(tmp_path)
    spawner.extended_seconds = 600  # 00:10:00 of the profile, extended by 10 minutes
    spawner.job_end_epoch = time.time() - 1
    stopped = []

    async def stop(now=False):
        stopped.append(now)

    backend = spawner.server_backend  # the local backend object of this server
    monkeypatch.setattr(backend.process, "poll", lambda: None)  # its process still runs
    monkeypatch.setattr(backend, "stop", stop)
    assert _run(backend.poll()) == 0 and stopped
    assert spawner.end_reason == "the server reached its time limit (00:20:00) and was stopped."


def test_the_yaml_refuses_a_default_outside_its_choices_and_slurm_choices_on_a_local_backend(tmp_path):
    config = hub_yaml(tmp_path / "state", profiles=[
        {**FLEX, "cpus": 4},
        {**FLEX, "slug": "named", "choices": {"partition": ["cpu", "short"]}},
    ])
    path = tmp_path / "hub.yaml"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError) as error:
        load_deployment(path)
    text = str(error.value)
    assert "profiles[0].choices.cpus: the profile's own value must be allowed: cpus: 4 is above the maximum 2" in text
    assert "profiles[1].choices.partition: partition is a SLURM choice; profile 'named' runs on a local backend" in text


# -- on a real hub ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flex_hub(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("choices")
    config = hub_yaml(workdir / "state", profiles=[
        {**FLEX, "default": True},
        {"slug": "gpu-1", "display_name": "GPU one", "backend": "local", "cpus": 1, "gpus": 1, "groups": ["gpu-users"],
         "choices": {"cpus": [1, 2]}},
    ])
    with started_hub(workdir, config) as hub:
        yield hub


def test_form_shows_the_choices_with_their_bounds_and_defaults(flex_hub):
    html = login(flex_hub, "alice").spawn_form()
    assert re.search(r'<input type="number" name="flex--cpus" id="flex--cpus" value="1" min="1" max="2"', html)
    assert re.search(r'<select name="flex--memory" id="flex--memory">\s*<option value="1G" selected>1G</option>\s*'
                     r'<option value="2G">2G</option>', html)
    assert 'name="flex--time_limit" id="flex--time_limit" value="00:10:00"' in html and "00:05:00 to 00:30:00" in html


def test_forged_choices_are_refused_and_nothing_starts(flex_hub):
    alice, bob = login(flex_hub, "alice"), login(flex_hub, "bob")
    form = alice.http.get(f"{flex_hub.url}/hub/spawn/alice")
    xsrf = alice._xsrf(form.text)
    posted = alice.http.post(f"{flex_hub.url}/hub/spawn/alice", data={"profile": "flex", "flex--cpus": "99999", "_xsrf": xsrf},
                             allow_redirects=False)
    assert posted.status_code == 400 and "cpus: 99999 is above the maximum 2" in posted.text
    api = alice.api("POST", "/users/alice/server", json={"profile": "flex", "time_limit": "05:00:00"})
    assert api.status_code == 400 and "time_limit: 05:00:00 is above the maximum 00:30:00" in api.json()["message"]
    # a misspelt key is refused, naming it, by the REST API and the form alike (not started with the defaults)
    misspelt = alice.api("POST", "/users/alice/server", json={"profile": "flex", "cores": 2})
    assert misspelt.status_code == 400
    assert "cores: not an option; profile 'flex' accepts: profile, cpus, memory, time_limit" in misspelt.json()["message"]
    posted = alice.http.post(f"{flex_hub.url}/hub/spawn/alice", data={"profile": "flex", "flex--cores": "2", "_xsrf": xsrf},
                             allow_redirects=False)
    assert posted.status_code == 400 and "flex--cores: not an option" in posted.text
    # bob may not use gpu-1 at all: its choices do not open it to him
    forbidden = bob.api("POST", "/users/bob/server", json={"profile": "gpu-1", "cpus": 1})
    assert forbidden.status_code == 403
    for client, name in ((alice, "alice"), (bob, "bob")):
        assert client.api("GET", f"/users/{name}").json()["servers"] == {}
    # the whole form as a browser posts it (JupyterHub's _xsrf, every profile's fields) is not refused
    full = {"_xsrf": xsrf, "profile": "flex", "flex--cpus": "2", "flex--memory": "1G", "flex--time_limit": "00:10:00",
            "gpu-1--cpus": "1"}
    try:
        assert alice.http.post(f"{flex_hub.url}/hub/spawn/alice", data=full, allow_redirects=False).status_code == 302
        server = alice.wait_ready("alice")
        assert server["user_options"] == {"profile": "flex", "cpus": 2, "memory": "1G", "time_limit": "00:10:00"}
    finally:
        stop_server(alice, "alice")


def test_choices_reach_the_server_and_its_wall_time_extends_within_the_maximum(flex_hub):
    alice = login(flex_hub, "alice")
    started = alice.api("POST", "/users/alice/server", json={"profile": "flex", "cpus": 2, "time_limit": "00:20:00"})
    assert started.status_code in (201, 202), started.text
    try:
        server = alice.wait_ready("alice")
        assert server["user_options"] == {"profile": "flex", "cpus": 2, "time_limit": "00:20:00"}
        out, errors = run_in_kernel(alice, "alice", "import hpclab; s = hpclab.session(); "
                                    "print(s.cores, int(s.walltime_left.total_seconds()), s.walltime_source)")
        assert not errors, errors
        cores, left, source = out.split()
        assert int(cores) == min(2, len(__import__("os").sched_getaffinity(0))) and 1100 < int(left) <= 1200, out

        wall = alice.api("GET", "/hpclab/servers/alice").json()
        assert wall["time_limit"] == "00:20:00" and wall["max_time_limit"] == "00:30:00" and wall["extendable_minutes"] == 10
        too_far = alice.api("POST", "/hpclab/servers/alice/extend", json={"minutes": 15})
        assert too_far.status_code == 400
        assert "past this profile's maximum 00:30:00 (00:10:00 may still be added)" in too_far.json()["message"]
        # the widget's way: through the server, which asks the hub with its own token
        token = user_token(alice, "alice")
        xsrf = {"Authorization": f"token {token}"}
        extended = alice.http.post(flex_hub.user_url("alice") + "hpclab/walltime/extend", json={"minutes": 10}, headers=xsrf)
        assert extended.status_code == 200, extended.text
        answer = extended.json()
        assert answer["time_limit"] == "00:30:00" and answer["extendable_minutes"] == 0
        assert abs(answer["end"] - (wall["end"] + 600)) < 2
        out, errors = run_in_kernel(alice, "alice", "import hpclab; s = hpclab.session(); "
                                    "print(int(s.walltime_left.total_seconds()), s.walltime_source)")
        left, source = out.split()
        assert source == "hub" and 1700 < int(left) <= 1800, out  # a kernel sees the new end
        assert alice.api("GET", "/hpclab/servers/alice").json()["end"] == answer["end"]
        # someone else's server is not theirs to extend
        bob = login(flex_hub, "bob")
        assert bob.api("POST", "/hpclab/servers/alice/extend", json={"minutes": 1}).status_code == 403
    finally:
        stop_server(alice, "alice")


def test_the_home_page_starts_a_stopped_server_again_with_the_same_choices(flex_hub):
    alice = login(flex_hub, "alice")
    assert alice.api("POST", "/users/alice/server", json={"profile": "flex", "memory": "2G", "time_limit": "00:15:00"}).status_code in (201, 202)
    alice.wait_ready("alice")
    stop_server(alice, "alice")
    home = alice.http.get(f"{flex_hub.url}/hub/home").text
    link = re.search(r'<a class="btn btn-sm btn-outline-primary hpclab-relaunch" href="([^"]+)"', home)
    assert link, home
    url = link.group(1).replace("&amp;", "&")
    assert parse_qs(urlparse(url).query) == {"opt-profile": ["flex"], "opt-memory": ["2G"], "opt-time_limit": ["00:15:00"]}
    try:
        assert alice.follow_spawn_link(url).status_code == 302  # the form, filled in with the same choices; Start
        server = alice.wait_ready("alice")
        # the same choices, and the form's own value for the one the first start left at its default
        assert server["user_options"] == {"profile": "flex", "cpus": 1, "memory": "2G", "time_limit": "00:15:00"}
        left = alice.api("GET", "/hpclab/servers/alice").json()
        assert left["time_limit"] == "00:15:00" and left["end"] - time.time() > 800
    finally:
        stop_server(alice, "alice")
