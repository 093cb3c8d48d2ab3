"""A start refused with a reason the user reads as written, on the form and on the pending page."""

from __future__ import annotations

from tornado import web


def refusal(status: int, message: str) -> web.HTTPError:
    """An HTTPError whose ``message`` JupyterHub shows as is (not as "HTTP 429: error (message)")."""
    error = web.HTTPError(status, message)
    error.jupyterhub_message = message  # type: ignore[attr-defined]  # read by jupyterhub.utils.format_exception
    return error
