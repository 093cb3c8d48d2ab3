"""hub.concurrent_spawn_limit: starts past the limit wait in line (never a bare 429) and their progress page says
where they stand; a real hub on the local backend with a limit of 1 and two users pressing Start at once."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from hpclab_hub.ops.spawn_queue import SpawnLine, queued_message
from support.hubtools import hub_yaml, login, started_hub, stop_server


def test_the_queued_message_says_how_many_start_and_who_is_ahead():
    assert queued_message(20, 20, 1) == ("The hub is starting 20 servers (at most 20 at once); yours is queued and "
                                         "starts as soon as one of them is up: you are next.")
    assert queued_message(20, 20, 2).endswith("1 start is ahead of yours.")
    assert queued_message(20, 20, 4).endswith("3 starts are ahead of yours.")


def _progress_messages(client, name: str) -> list[dict]:
    """The events of the user's progress stream (what the progress page shows), until ready or failed."""
    events = []
    with client.api("GET", f"/users/{name}/server/progress", stream=True, timeout=120) as response:
        if response.status_code != 200:
            return events
        for line in response.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                events.append(event)
                if event.get("ready") or event.get("failed"):
                    break
    return events


@pytest.mark.hub
@pytest.mark.timeout(300)
def test_a_start_past_the_limit_waits_in_line_and_says_so(tmp_path):
    config = hub_yaml(tmp_path / "state")
    config["hub"]["concurrent_spawn_limit"] = 1
    with started_hub(tmp_path, config, accounts=("alice", "bob")) as hub:
        clients = {name: login(hub, name) for name in ("alice", "bob")}
        responses, events = {}, {}
        barrier = threading.Barrier(4)

        def press_start(name: str) -> None:
            barrier.wait()
            responses[name] = clients[name].api("POST", f"/users/{name}/server", json={"profile": "cpu-small"})

        def watch_progress(name: str) -> None:  # as the progress page does, while the start is under way
            barrier.wait()
            deadline = time.monotonic() + 60
            while not (found := _progress_messages(clients[name], name)) and time.monotonic() < deadline:
                time.sleep(0.2)  # not pending yet
            events[name] = found

        threads = [threading.Thread(target=act, args=(name,)) for name in clients for act in (press_start, watch_progress)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        try:
            assert {r.status_code for r in responses.values()} <= {201, 202}, {n: r.text for n, r in responses.items()}
            for name in clients:
                assert events[name][-1].get("ready"), (name, events[name], hub.log_tail())
            queued = {name: [e["message"] for e in ev if "yours is queued" in e.get("message", "")]
                      for name, ev in events.items()}
            waited = [name for name, messages in queued.items() if messages]
            assert len(waited) == 1, queued  # one started at once, the other waited its turn
            assert queued[waited[0]][0] == queued_message(1, 1, 1)
            for name in clients:
                clients[name].wait_ready(name)
        finally:
            for name, client in clients.items():
                if "" in client.api("GET", f"/users/{name}").json()["servers"]:
                    stop_server(client, name)


class StandIn:
    """Stands in for a spawner in the line's bookkeeping: only JupyterHub's ``pending`` state is read."""

    def __init__(self) -> None:
        self.pending: str | None = "spawn"


def test_the_line_lets_the_limit_through_and_then_the_first_in_line():
    async def scenario() -> list[str]:
        line, order, seen = SpawnLine(), [], {}
        spawners = {name: StandIn() for name in "abcd"}

        async def start(name: str) -> None:
            await line.wait_turn(spawners[name], 2, lambda starting, place: seen.setdefault(name, (starting, place)),
                                 interval=0.01)
            order.append(name)

        tasks = []
        for name in "abcd":
            tasks.append(asyncio.create_task(start(name)))
            await asyncio.sleep(0.02)
        assert order == ["a", "b"] and seen == {"c": (2, 1), "d": (2, 2)}
        spawners["b"].pending = None  # b's server answered
        await asyncio.sleep(0.05)
        assert order == ["a", "b", "c"]
        spawners["a"].pending = None  # a's start failed
        await asyncio.gather(*tasks)
        assert line.waiting == [] and line.starting() == 2  # c and d still starting
        return order

    assert asyncio.run(scenario()) == ["a", "b", "c", "d"]
