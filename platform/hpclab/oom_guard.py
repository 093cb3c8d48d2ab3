"""Jupyter Server extension: kernels are the first to go when a server runs out of memory.

A server's processes share one memory limit (its cgroup). When they go over it, the kernel's OOM
killer picks the process with the highest score, which can be the Jupyter server itself: the user's
session would end. Each kernel started here gets ``oom_score_adj`` 500 (raising it needs no
privilege; its children inherit it), so a runaway kernel or its workers are stopped instead, and
JupyterLab reports a dead kernel the user can restart.
"""

from __future__ import annotations

from typing import Any

KERNEL_ACTIONS = "https://events.jupyter.org/jupyter_server/kernel_actions/v1"
KERNEL_OOM_SCORE_ADJ = 500


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "hpclab.oom_guard"}]


def raise_oom_score(pid: int, value: int = KERNEL_OOM_SCORE_ADJ) -> bool:
    """Make ``pid`` a preferred OOM victim; False if the process is gone or the file cannot be written."""
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as handle:
            handle.write(str(value))
    except OSError:
        return False
    return True


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Raise each new kernel's OOM score as soon as it has started."""

    async def on_kernel_action(logger: Any, schema_id: str, data: dict) -> None:
        if data.get("action") not in ("start", "restart") or data.get("status") != "success":
            return
        try:
            kernel = serverapp.kernel_manager.get_kernel(data.get("kernel_id"))
        except KeyError:
            return
        pid = getattr(getattr(kernel, "provisioner", None), "pid", None)
        if pid and not raise_oom_score(pid):
            serverapp.log.debug("hpclab.oom_guard: could not raise the OOM score of kernel pid %s", pid)

    serverapp.event_logger.add_listener(schema_id=KERNEL_ACTIONS, listener=on_kernel_action)
