"""A test double of a third backend: ``PlainServer`` runs the server as a plain subprocess of the hub (no account, no
cgroup, no pool), under the YAML's ``backends.<name>.type: plain``. It implements ``ServerBackend`` and nothing more,
so a real hub that runs a server of it shows that the spawner, the form, the home and admin pages and the history
need nothing of a backend beyond the protocol (docs/design.md, "A third backend").

``register()`` does the two edits docs/design.md lists for a real third backend without touching the package: the
config model's ``backends`` union gains ``PlainSettings``, and ``spawner.BACKENDS`` gains ``plain``. A hub picks it up
through ``plain_site/sitecustomize.py`` on its PYTHONPATH (``PLAIN_PYTHONPATH``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import Field

from hpclab_hub.backends import Availability, Launch, Refusals, ServerContext, ServerUse, Whereabouts
from hpclab_hub.config.fields import Strict

#: what a hub's PYTHONPATH needs for the double: its sitecustomize, and this package (``support``)
PLAIN_PYTHONPATH = os.pathsep.join([str(Path(__file__).parent / "plain_site"), str(Path(__file__).parents[1])])
#: what the double's servers say on the home page (ServerBackend.label)
LABEL = "a plain process (test double)"


class PlainSettings(Strict):
    """``backends.<name>`` of the double: its type and the poll interval every backend has."""

    type: Literal["plain"]
    poll_interval: int = Field(1, ge=1)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


class PlainServer:
    """One server as a plain subprocess of the hub, run as the hub's own account in a folder of its own."""

    kind: ClassVar[str] = "plain"
    label: ClassVar[str] = LABEL
    id_key: ClassVar[str] = "pid"
    picks_port: ClassVar[bool] = True

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.proc: asyncio.subprocess.Process | None = None
        self.pid = 0

    def get_state(self) -> dict[str, Any]:
        return {"pid": self.pid} if self.pid else {}

    def load_state(self, state: dict[str, Any]) -> None:
        self.pid = int(state.get("pid", 0))

    def clear_state(self) -> None:
        self.proc, self.pid = None, 0

    def holds_server(self) -> bool:
        return bool(self.pid)

    def home(self) -> str:
        return str(Path(self.ctx.deployment.hub.data_dir) / "plain-homes" / self.ctx.user_name)

    def environment(self, hub_env: dict[str, str], profile_env: dict[str, str]) -> dict[str, str]:
        return {**hub_env, **profile_env, "HOME": self.home(), "PATH": os.environ["PATH"]}

    async def refusals(self, profile: Any) -> Refusals:
        return Refusals()

    async def start(self, launch: Launch) -> tuple[str, int]:
        Path(self.home()).mkdir(parents=True, exist_ok=True)
        root = ["--allow-root"] if os.geteuid() == 0 else []
        self.ctx.start_wall_clock()
        self.proc = await asyncio.create_subprocess_exec(
            *launch.command, *root, env=self.environment(launch.hub_env, launch.profile_env), cwd=self.home()
        )
        self.pid = self.proc.pid
        deadline = time.monotonic() + self.ctx.http_timeout
        while time.monotonic() < deadline and self.proc.returncode is None:
            try:
                _, writer = await asyncio.open_connection(launch.ip, launch.port)
            except OSError:
                await asyncio.sleep(0.2)
                continue
            writer.close()
            return launch.ip, launch.port
        await self.stop(now=True)
        raise RuntimeError(f"the plain server of {self.ctx.log_name} did not listen on {launch.port}")

    async def poll(self) -> int | None:
        if self.proc is not None:
            return self.proc.returncode
        try:
            os.kill(self.pid, 0)
        except OSError:
            return 0
        return None

    async def stop(self, now: bool = False) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 30)

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        yield {"progress": 50, "message": "Starting a plain process…"}

    async def extend(self, seconds: int) -> None:
        """The hub's own deadline is all there is."""

    def running_note(self) -> str:
        return f"pid {self.pid}" if self.pid else ""

    async def availability(self, profiles: list[Any]) -> dict[str, Availability]:
        return {p.slug: Availability(note="runs as a plain process (test double)") for p in profiles}

    async def whereabouts(self) -> Whereabouts:
        return Whereabouts(f"pid {self.pid}" if self.pid else "", socket.gethostname() if self.pid else "")

    @classmethod
    async def measure(cls, servers: list[PlainServer]) -> list[ServerUse]:
        return [ServerUse(_cpu_seconds(s.pid), 0, 0, time.monotonic()) if s.pid else ServerUse() for s in servers]

    async def settle(self, engine: Any, row_id: int, job_id: str) -> None:
        """Leaves a note that the hub asked (``settled-<row id>`` in the data folder, holding the job id)."""
        (Path(self.ctx.deployment.hub.data_dir) / f"settled-{row_id}").write_text(job_id)

    async def cert_alt_names(self) -> list[str]:
        return []


def register() -> None:
    """The double's settings in the config model's ``backends`` union, and its class in ``spawner.BACKENDS``."""
    from hpclab_hub.config import backend_model, model
    from hpclab_hub.spawner.spawner import BACKENDS

    field = model.Deployment.model_fields["backends"]
    union = Annotated[backend_model.LocalBackend | backend_model.SlurmBackend | PlainSettings, Field(discriminator="type")]
    field.annotation = dict[get_args(field.annotation)[0], union]  # type: ignore[misc,valid-type]
    model.Deployment.model_rebuild(force=True)
    BACKENDS["plain"] = PlainServer
