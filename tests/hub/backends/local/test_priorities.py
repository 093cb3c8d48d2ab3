"""Issue 31, item 1: priorities in the line. Groups get a priority in the YAML; when a local backend's GPUs (or memory)
are short, waiting starts are served highest priority first, then first come, and the progress page says where each
stands and why. On SLURM a group's priority is the QoS (or account) its jobs are submitted with.

The real-hub test uses the test hubs' one GPU, ``fake0``: a named fake, since this machine has no GPU.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from hpclab_hub.backends.local.resources import ResourcePool
from hpclab_hub.backends.local.waiting_line import WaitingLine, Waiter, ordinal
from hpclab_hub.backends.slurm.batch_script import job_spec
from hpclab_hub.config.errors import ConfigError
from hpclab_hub.config.loader import parse_deployment
from hpclab_hub.config.model import Deployment
from hpclab_hub.ops.events import parse_event
from support.hubtools import hub_yaml, login, started_hub, stop_server


# --- the YAML ------------------------------------------------------------------------------------

SLURM_YAML = """
auth: {groups: {cms: [ana], students: [ana, ben]}}
backends: {cluster: {type: slurm, qos: normal}}
profiles:
  - {slug: gpu, display_name: GPU, backend: cluster, gpus: 1}
  - {slug: pinned, display_name: Pinned, backend: cluster, slurm: {qos: debug, account: physics}}
priorities:
  groups: {cms: 10, students: 1}
  wait: "05:00"
  slurm_qos: {cms: high, students: low}
  slurm_account: {cms: cms}
"""


def load(text: str) -> Deployment:
    return parse_deployment(text, Path("/tmp"))


def test_a_person_has_the_highest_priority_of_their_groups():
    deployment = load(SLURM_YAML)
    priorities = deployment.priorities
    assert priorities.wait == 300
    assert priorities.priority_of({"cms", "students"}) == 10
    assert priorities.priority_of({"students"}) == 1
    assert priorities.priority_of({"nobody-lists-this"}) == 0 and priorities.priority_of(()) == 0
    assert priorities.qos_for({"cms", "students"}) == "high" and priorities.qos_for({"students"}) == "low"
    assert priorities.account_for({"students"}) is None


def test_bad_priorities_are_refused_with_the_key():
    with pytest.raises(ConfigError) as refused:
        load(SLURM_YAML.replace("students: 1}", "students: yes}"))
    assert "priorities.groups.students" in str(refused.value) and "boolean" in str(refused.value)
    with pytest.raises(ConfigError) as refused:
        load(SLURM_YAML.replace('wait: "05:00"', "wiat: 5"))
    assert "priorities.wiat: unknown key" in str(refused.value)


def test_on_slurm_a_groups_priority_is_its_qos_and_account_unless_the_profile_names_one():
    deployment: Deployment = load(SLURM_YAML)
    backend, (gpu, pinned) = deployment.backends["cluster"], deployment.profiles
    cms = (deployment.priorities.qos_for({"cms", "students"}), deployment.priorities.account_for({"cms", "students"}))

    def options(profile, *by_group):
        return job_spec(profile, backend, "ana", "/home/ana", "", "", 0, *by_group).directives()

    assert "--qos=high" in options(gpu, *cms) and "--account=cms" in options(gpu, *cms)
    assert "--qos=normal" in options(gpu)  # no group entry: the backend's
    pinned_options = options(pinned, *cms)
    assert "--qos=debug" in pinned_options and "--account=physics" in pinned_options  # the profile's own wins


# --- the line, on a real pool ----------------------------------------------------------------------


def test_ordinals():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101)] == [
        "1st",
        "2nd",
        "3rd",
        "4th",
        "11th",
        "12th",
        "13th",
        "21st",
        "22nd",
        "101st",
    ]


def test_the_line_serves_priority_first_then_first_come_and_cpu_starts_do_not_wait_behind_gpus():
    pool, line = ResourcePool((0, 1, 2, 3), ("g0",)), WaitingLine()
    assert pool.allocate("holder/", 1, 1) is not None
    bob, carol, dave = (
        Waiter(f"{name}/", priority, arrival, 1, 0)
        for arrival, (name, priority) in enumerate((("bob", 0), ("carol", 0), ("dave", 10)))
    )
    line.waiting += [bob, carol, dave]
    for waiter in (bob, carol, dave):
        assert line.take_now(pool, waiter, 1) is None
    assert dave.message.startswith("1st in line for a GPU on this server; its one GPU is in use.")
    assert bob.message.startswith("2nd in line for a GPU on this server; a higher-priority group is ahead.")
    assert carol.message.startswith("3rd in line for a GPU on this server; a higher-priority group is ahead.")
    cpu = Waiter("erin/", 0, 99, 0, 0)
    assert line.take_now(pool, cpu, 1) is not None  # a CPU start does not queue behind the GPU line
    pool.release("holder/")
    assert line.take_now(pool, bob, 1) is None and line.take_now(pool, carol, 1) is None  # not their turn
    assert line.take_now(pool, dave, 1).gpu_ids == ("g0",)
    line.waiting.remove(dave)
    pool.release("dave/")
    assert line.take_now(pool, carol, 1) is None
    assert carol.message.startswith("2nd in line for a GPU on this server; an earlier start is ahead.")
    assert line.take_now(pool, bob, 1).gpu_ids == ("g0",)


def test_memory_is_waited_for_like_gpus():
    pool, line = ResourcePool((0, 1), (), memory=4 * 2**30), WaitingLine()
    pool.allocate("holder/", 1, 0, 3 * 2**30)
    low, high = Waiter("low/", 0, 0, 0, 2 * 2**30), Waiter("high/", 5, 1, 0, 2 * 2**30)
    line.waiting += [low, high]
    assert line.take_now(pool, low, 1) is None and line.take_now(pool, high, 1) is None
    assert low.message.startswith("2nd in line for memory on this server; a higher-priority group is ahead.")
    assert high.message.startswith("1st in line for memory on this server; its running servers hold the memory it shares out.")
    small = Waiter("small/", 0, 2, 0, 0)  # no memory limit: nothing of what the line waits for
    assert line.take_now(pool, small, 1) is not None


# --- a real hub: a 1-GPU pool and a line of mixed priorities ------------------------------------------


def _wait_for_message(client, name: str, expected: str, timeout: float = 60) -> str:
    """Read the user's progress stream (what the progress page shows) until a message contains ``expected``."""
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        with client.api("GET", f"/users/{name}/server/progress", stream=True, timeout=timeout) as response:
            if response.status_code == 200:
                for line in response.iter_lines(decode_unicode=True):
                    if line and line.startswith("data:"):
                        message = json.loads(line[5:]).get("message", "")
                        seen.append(message)
                        if expected in message:
                            return message
                        if time.monotonic() > deadline:
                            break
        time.sleep(0.3)
    raise AssertionError(f"{name}'s progress never said {expected!r}; it said {seen[-5:]}")


def _pending(client, name: str) -> str | None:
    return client.api("GET", f"/users/{name}").json()["servers"].get("", {}).get("pending")


@pytest.mark.hub
@pytest.mark.timeout(600)
def test_a_line_of_mixed_priorities_on_one_gpu(tmp_path):
    people = ("alice", "bob", "carol", "dave")
    config = hub_yaml(tmp_path / "state")
    config["auth"]["groups"] = {"gpu-users": list(people), "physics": ["dave"]}
    config["profiles"][1].update({"spawn_timeout": 400})
    config["priorities"] = {"groups": {"physics": 10}, "wait": "06:00"}
    with started_hub(tmp_path, config, accounts=people) as hub:
        clients = {name: login(hub, name) for name in people}
        answers: dict[str, int] = {}

        def press_start(name: str) -> threading.Thread:
            def post() -> None:
                answers[name] = clients[name].api("POST", f"/users/{name}/server", json={"profile": "gpu-1"}).status_code

            thread = threading.Thread(target=post)
            thread.start()
            return thread

        try:
            press_start("alice").join()
            clients["alice"].wait_ready("alice")  # alice holds the one GPU
            threads = [press_start("bob")]
            _wait_for_message(clients["bob"], "bob", "1st in line for a GPU on this server; its one GPU is in use.")
            threads.append(press_start("carol"))
            _wait_for_message(clients["carol"], "carol", "2nd in line for a GPU on this server; an earlier start is ahead.")
            threads.append(press_start("dave"))  # last to come, first in line: his group's priority is higher
            _wait_for_message(clients["dave"], "dave", "1st in line for a GPU on this server; its one GPU is in use.")
            _wait_for_message(clients["bob"], "bob", "2nd in line for a GPU on this server; a higher-priority group is ahead.")
            _wait_for_message(
                clients["carol"], "carol", "3rd in line for a GPU on this server; a higher-priority group is ahead."
            )

            served = []
            for holder in ("alice", "dave", "bob"):
                stop_server(clients[holder], holder)
                nxt = next(name for name in ("dave", "bob", "carol") if name not in served)
                clients[nxt].wait_ready(nxt, timeout=120)
                served.append(nxt)
                waiting = [name for name in ("dave", "bob", "carol") if name not in served]
                assert all(_pending(clients[name], name) == "spawn" for name in waiting), (served, hub.log_tail())
            assert served == ["dave", "bob", "carol"]
            for thread in threads:
                thread.join()
            assert set(answers.values()) <= {201, 202}, answers
            log = hub.log_path.read_text(errors="replace")
            starts = [event["user"] for event in map(parse_event, log.splitlines()) if event and event["kind"] == "start"]
            assert starts == ["alice", "dave", "bob", "carol"], starts
        finally:
            for name, client in clients.items():
                if "" in client.api("GET", f"/users/{name}").json()["servers"]:
                    stop_server(client, name)
