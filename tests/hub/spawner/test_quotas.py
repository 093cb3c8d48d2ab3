"""Quotas: pure rules, and a real hub refusing the second of two simultaneous GPU spawns."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from hpclab_hub.config import parse_deployment
from hpclab_hub.spawner.quotas import ActiveServer, QuotaExceeded, check_quotas

from support.hubtools import hub_yaml, login, singleuser_processes, started_hub, stop_server

YAML = """
backends: {local: {type: local}}
auth: {groups: {gpu-users: [alice, carol], staff: [dave]}}
profiles:
  - {slug: cpu, display_name: CPU, backend: local, cpus: 2}
  - {slug: gpu, display_name: GPU, backend: local, cpus: 4, gpus: 1}
quotas:
  groups: {gpu-users: {gpus: 2}}
  per_user: {servers: 1}
  users: {dave: {servers: 3}}
  profiles: {cpu: {cpus: 4}}
  admins_exempt: true
"""


@pytest.fixture
def deployment():
    return parse_deployment(YAML, Path("."))


def gpu_server(user: str, groups=("gpu-users",)) -> ActiveServer:
    return ActiveServer(user, frozenset(groups), "gpu", 4, 1)


def test_group_gpu_quota_counts_all_members_and_names_the_group(deployment):
    active = [gpu_server("alice"), gpu_server("carol")]
    with pytest.raises(QuotaExceeded, match=r"^gpu-users: 2 of 2 GPUs in use"):
        check_quotas(deployment.quotas, "erin", frozenset({"gpu-users"}), False, deployment.profile("gpu"), active)


def test_group_quota_does_not_apply_to_other_groups(deployment):
    active = [gpu_server("alice"), gpu_server("carol")]
    check_quotas(deployment.quotas, "dave", frozenset({"staff"}), False, deployment.profile("gpu"), active)


def test_per_user_server_limit_and_its_override(deployment):
    mine = [ActiveServer("bob", frozenset(), "cpu", 2, 0)]
    with pytest.raises(QuotaExceeded, match=r"your quota \(bob\): 1 of 1 servers in use"):
        check_quotas(deployment.quotas, "bob", frozenset(), False, deployment.profile("gpu"), mine)
    dave = [ActiveServer("dave", frozenset({"staff"}), "cpu", 2, 0)]
    check_quotas(deployment.quotas, "dave", frozenset({"staff"}), False, deployment.profile("gpu"), dave)


def test_profile_core_quota(deployment):
    active = [ActiveServer("x", frozenset(), "cpu", 2, 0), ActiveServer("y", frozenset(), "cpu", 2, 0)]
    with pytest.raises(QuotaExceeded, match=r"profile cpu: 4 of 4 cores in use"):
        check_quotas(deployment.quotas, "z", frozenset(), False, deployment.profile("cpu"), active)


def test_admins_exempt_only_when_configured(deployment):
    active = [gpu_server("alice"), gpu_server("carol")]
    check_quotas(deployment.quotas, "root", frozenset({"gpu-users"}), True, deployment.profile("gpu"), active)
    strict = deployment.quotas.model_copy(update={"admins_exempt": False})
    with pytest.raises(QuotaExceeded):
        check_quotas(strict, "root", frozenset({"gpu-users"}), True, deployment.profile("gpu"), active)


@pytest.fixture(scope="module")
def quota_hub(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("quota-hub")
    config = hub_yaml(workdir / "state")
    config["backends"]["local"]["gpus"] = ["fake0", "fake1"]  # fake GPU ids: this machine has none
    config["quotas"] = {"groups": {"gpu-users": {"gpus": 1}}}
    with started_hub(workdir, config, accounts=("alice",)) as hub:
        yield hub


@pytest.mark.hub
def test_two_group_members_spawning_at_once_get_exactly_one_gpu(quota_hub):
    clients = {name: login(quota_hub, name) for name in ("alice", "admin")}  # both in gpu-users
    responses: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def spawn(name: str) -> None:
        barrier.wait()
        responses[name] = clients[name].api("POST", f"/users/{name}/server", json={"profile": "gpu-1"})

    threads = [threading.Thread(target=spawn, args=(name,)) for name in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        codes = sorted(r.status_code for r in responses.values())
        assert codes[0] in (201, 202) and codes[1] == 429, {n: (r.status_code, r.text) for n, r in responses.items()}
        (refused,) = [n for n, r in responses.items() if r.status_code == 429]
        (granted,) = [n for n in responses if n != refused]
        assert "gpu-users: 1 of 1 GPUs in use" in responses[refused].text
        clients[granted].wait_ready(granted)
        data_dir = quota_hub.config["hub"]["data_dir"]
        assert singleuser_processes(data_dir, refused) == []
        assert clients[refused].api("GET", f"/users/{refused}").json()["servers"] == {}
    finally:
        for name, client in clients.items():
            if "" in client.api("GET", f"/users/{name}").json()["servers"]:
                stop_server(client, name)
