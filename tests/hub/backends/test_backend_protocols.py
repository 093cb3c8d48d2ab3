"""The spawner offers every member of ``backends.ServerContext``.

mypy checks LocalServer and SlurmServer against ``ServerBackend`` (spawner.BACKENDS' type), but it takes
HPCLabSpawner for a ServerContext wholesale: its base, JupyterHub's Spawner, has no type hints, so to mypy
any member may come from there. The names are checked here instead.
"""

from __future__ import annotations

from hpclab_hub.backends import ServerBackend, ServerContext
from hpclab_hub.spawner.spawner import BACKENDS, HPCLabSpawner


def _members(protocol: type) -> set[str]:
    declared = set(protocol.__dict__.get("__annotations__", {}))
    return declared | {name for name in vars(protocol) if not name.startswith("_")}


def test_the_spawner_has_every_member_a_backend_may_ask_for():
    missing = sorted(name for name in _members(ServerContext) if not hasattr(HPCLabSpawner, name))
    assert not missing, f"HPCLabSpawner lacks ServerContext members: {missing}"


def test_every_backend_has_every_member_of_server_backend():
    for kind, backend in BACKENDS.items():
        assert isinstance(backend, type)
        missing = sorted(name for name in _members(ServerBackend) if not hasattr(backend, name))
        assert not missing, f"{backend.__name__} lacks ServerBackend members: {missing}"
        assert backend.kind == kind
