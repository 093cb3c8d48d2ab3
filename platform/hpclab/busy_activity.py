"""Jupyter server extension: a kernel that is busy counts as activity, so idle culling never stops running work.

Jupyter Server only records kernel *messages* as activity; a kernel computing silently for an hour
looks idle to the hub and jupyterhub-idle-culler would stop it. Every ``interval`` seconds this
extension stamps ``hpclab_busy_last_activity`` (Jupyter Server counts every ``*_last_activity``
setting) while any kernel is busy.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from tornado.ioloop import PeriodicCallback


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "hpclab.busy_activity"}]


def _stamp_if_busy(serverapp: Any) -> None:
    manager = serverapp.kernel_manager
    for kernel_id in list(manager.list_kernel_ids()):
        if getattr(manager.get_kernel(kernel_id), "execution_state", "") == "busy":
            serverapp.web_app.settings["hpclab_busy_last_activity"] = datetime.now(UTC)
            return


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Start the periodic busy check (interval from HPCLAB_BUSY_CHECK_SECONDS, default 30 s)."""
    interval = float(os.environ.get("HPCLAB_BUSY_CHECK_SECONDS", "30"))
    callback = PeriodicCallback(lambda: _stamp_if_busy(serverapp), interval * 1000)
    callback.start()
    serverapp.log.info("hpclab: busy kernels count as activity (checked every %.0f s)", interval)
