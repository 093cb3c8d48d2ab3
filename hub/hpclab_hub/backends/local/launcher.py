"""A local server's process started, and waited for until it answers.

Forked from the backend's zygote (``backends.<name>.zygote``: the server's imports already made) when
the command is the hub's default one, else a fresh process; both run the same preexec before any user
code (preexec.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from tornado import web

from hpclab_hub.backends.local.cgroups import ServerCgroup
from hpclab_hub.backends.local.preexec import server_preexec
from hpclab_hub.backends.local.process import ServerProcess
from hpclab_hub.backends.local.resources import Allocation
from hpclab_hub.backends.local.server_namespace import PrivateMounts
from hpclab_hub.backends.local.unix_accounts import UnixAccount
from hpclab_hub.backends.local.zygote import PROGRAM, SERVER_COMMAND, ZygoteUnavailable, request_for, zygote_for
from hpclab_hub.config.model import LocalBackend


async def start_process(
    process: ServerProcess,
    backend_name: str,
    backend: LocalBackend,
    command: list[str],
    env: dict[str, str],
    account: UnixAccount,
    group: ServerCgroup | None,
    allocation: Allocation,
    memory: int | None,
    mounts: PrivateMounts | None,
    log: Any,
) -> None:
    """Start the server as ``account``: from the zygote where there is one for this command, else a fresh process."""
    default = list(SERVER_COMMAND)
    if backend.zygote and command[: len(default)] == default:
        request = request_for(
            [PROGRAM, *command[len(default) :]], env, account, group, allocation, memory, backend.server_nice, mounts
        )
        try:
            pid, spare = await asyncio.to_thread(zygote_for(backend_name, backend.zygote == "spare").spawn, request)
        except ZygoteUnavailable as why:
            log.warning("%s: starting without the zygote: %s", process.log_name, why)
        else:
            if spare is not None:
                process.take(spare)
                log.info("Started %s from a spare of backend %s: pid %s", process.log_name, backend_name, pid)
            else:
                process.adopt(pid)
                log.info("Started %s from the zygote of backend %s: pid %s", process.log_name, backend_name, pid)
            return
    preexec = server_preexec(account, group, allocation.cpu_ids, memory, backend.server_nice, mounts)
    try:
        process.start(command, env, preexec)
    except PermissionError as error:
        raise web.HTTPError(
            500,
            f"The Unix account {account.name} cannot run {command[0]} ({error.strerror}): the hub's Python and "
            "its folders must be readable and searchable by other users (e.g. not under /root).",
        ) from None


async def wait_listening(process: ServerProcess, ip: str, port: int, timeout: float) -> None:
    """Return as soon as the server accepts connections (polled every 0.1 s), or fail at once if it exits.

    JupyterHub's own readiness check backs off randomly up to seconds between tries; answering it
    only after the port is open saves that wait, and a crashed server is reported with its exit code.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        code = process.exited()
        if code is not None:
            said = f"with code {code}" if code >= 0 else "(its exit code went to the zygote)"
            raise web.HTTPError(500, f"JupyterLab exited during start-up {said}; see the hub log")
        try:
            _, writer = await asyncio.open_connection(ip, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
