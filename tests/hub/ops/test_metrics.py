"""Prometheus metrics on /hub/metrics after real spawns on a real hub."""

from __future__ import annotations

import re
import time

import pytest

from support.hubtools import hub_yaml, login, started_hub, stop_server
from support.paths import REPO_ROOT

pytestmark = pytest.mark.hub


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (labels in any order); 0 when absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def metrics_hub(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("metrics-hub")
    with started_hub(workdir, hub_yaml(workdir / "state")) as hub:
        yield hub


def test_metrics_count_spawns_failures_and_usage_per_group_and_profile(metrics_hub):
    alice, bob, admin = login(metrics_hub, "alice"), login(metrics_hub, "bob"), login(metrics_hub, "admin")
    assert alice.post_spawn("alice", "gpu-1").status_code == 302  # takes the only (fake) GPU id
    alice.wait_ready("alice")
    assert bob.post_spawn("bob", "gpu-1").status_code == 403  # not in gpu-users
    assert bob.post_spawn("bob", "cpu-small").status_code == 302
    bob.wait_ready("bob")
    assert "No free GPU" in admin.post_spawn("admin", "gpu-1").text
    try:
        # a spawn's duration is recorded by a task that sees the spawn no longer pending (every 0.1 s): wait for it
        deadline = time.monotonic() + 15
        while True:
            text = admin.http.get(f"{metrics_hub.url}/hub/metrics").text
            counts = [
                sample(text, "hpclab_spawn_duration_seconds_count", profile=p, backend="local") for p in ("gpu-1", "cpu-small")
            ]
            if counts == [1, 1] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sample(text, "hpclab_spawn_duration_seconds_count", profile="gpu-1", backend="local") == 1
        assert sample(text, "hpclab_spawn_duration_seconds_count", profile="cpu-small", backend="local") == 1
        assert 1 < sample(text, "hpclab_spawn_duration_seconds_sum", profile="cpu-small", backend="local") < 120
        assert sample(text, "hpclab_spawn_failures_total", profile="gpu-1", reason="forbidden") == 1
        assert sample(text, "hpclab_spawn_failures_total", profile="gpu-1", reason="no_free_gpu") == 1
        assert sample(text, "hpclab_servers_in_use", group="gpu-users", profile="gpu-1") == 1
        assert sample(text, "hpclab_gpus_in_use", group="gpu-users", profile="gpu-1") == 1
        assert sample(text, "hpclab_servers_in_use", group="(none)", profile="cpu-small") == 1
        assert sample(text, "hpclab_gpus_in_use", group="(none)", profile="cpu-small") == 0
    finally:
        stop_server(alice, "alice")
        stop_server(bob, "bob")
    text = admin.http.get(f"{metrics_hub.url}/hub/metrics").text
    assert sample(text, "hpclab_servers_in_use", group="gpu-users", profile="gpu-1") == 0


def exported_names(text: str) -> set[str]:
    """Every sample name a scrape of /hub/metrics can hold: its families (``# TYPE`` lines, present before any sample)
    with the suffixes of their kind, and the sample lines themselves."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
            names.update({name} | {name + s for s in suffixes.get(kind, ())})
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_grafana_dashboard_only_queries_metrics_the_hub_exports(metrics_hub):
    import json

    admin = login(metrics_hub, "admin")
    response = admin.http.get(f"{metrics_hub.url}/hub/metrics")
    assert response.status_code == 200
    exported = exported_names(response.text)
    dashboard = json.loads((REPO_ROOT / "deploy" / "monitoring" / "hpclab-dashboard.json").read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), ids
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bhpclab_\w+", target["expr"])
    }
    assert queried and queried <= exported, queried - exported
    # the usage from the history (issue 31): core-hours, GPU-hours and servers started per group
    assert {"hpclab_core_hours_total", "hpclab_gpu_hours_total", "hpclab_sessions_total"} <= queried
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
