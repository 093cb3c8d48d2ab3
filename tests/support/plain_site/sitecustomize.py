"""On a hub's PYTHONPATH (support.plain_backend.PLAIN_PYTHONPATH): registers the third-backend test double at startup."""

from support.plain_backend import register

register()
