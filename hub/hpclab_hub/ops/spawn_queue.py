"""At most ``hub.concurrent_spawn_limit`` servers start at once; later starts wait in line, first come first
served, and their progress page says where they stand instead of a bare 429.

JupyterHub's own ``concurrent_spawn_limit`` refuses a start past the limit ("Too many users trying to
log in right now"), which a class of 60 pressing Start at 9:00 meets as an error page. Here a start
past the limit waits inside ``Spawner.start`` until fewer than the limit of the starts let through
are still starting (JupyterHub's pending spawn: until the server answers, or fails) and it is first in
line. Only the starts let through are looked at, never every user. The wait counts towards the
profile's start timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any


class SpawnLine:
    """The starts let through and still starting, and those waiting for their turn, in order of arrival."""

    def __init__(self) -> None:
        self.waiting: list[object] = []
        self.admitted: set[Any] = set()

    def starting(self) -> int:
        """Starts let through that JupyterHub still counts as pending (not yet answering, not failed)."""
        self.admitted = {spawner for spawner in self.admitted if spawner.pending == "spawn"}
        return len(self.admitted)

    async def wait_turn(self, spawner: Any, limit: int, on_wait: Any, interval: float = 0.5) -> None:
        """Return when ``spawner`` may start; ``on_wait(starting, place in line)`` is called while it waits."""
        if limit <= 0:
            return
        ticket = object()
        self.waiting.append(ticket)
        try:
            while True:
                starting, place = self.starting(), self.waiting.index(ticket) + 1
                if place == 1 and starting < limit:
                    self.admitted.add(spawner)
                    return
                on_wait(starting, place)
                await asyncio.sleep(interval)
        finally:
            self.waiting.remove(ticket)


#: the hub's one line
LINE = SpawnLine()


def queued_message(starting: int, limit: int, place: int) -> str:
    """What the progress page shows while a start waits."""
    ahead = "you are next" if place == 1 else f"{place - 1} {'start is' if place == 2 else 'starts are'} ahead of yours"
    return (
        f"The hub is starting {starting} servers (at most {limit} at once); yours is queued and starts "
        f"as soon as one of them is up: {ahead}."
    )
