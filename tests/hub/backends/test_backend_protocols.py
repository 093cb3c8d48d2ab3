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


def test_the_spawner_is_a_plain_jupyterhub_spawner():
    """No mixin: HPCLabSpawner's one base is JupyterHub's Spawner; internal_ssl asks its backend (docs/design.md)."""
    from jupyterhub.spawner import Spawner

    assert HPCLabSpawner.__bases__ == (Spawner,)


def test_the_pages_reach_a_backend_only_through_the_protocol():
    """The admins' page, the home page's row, the history and the form's availability import no backend's own
    package (backends.local, backends.slurm): what they show comes from ServerBackend's members."""
    import ast
    from pathlib import Path

    import hpclab_hub

    root = Path(hpclab_hub.__file__).parent
    for module in ("web/admin_servers.py", "spawner/home.py", "spawner/history_record.py", "spawner/availability.py"):
        tree = ast.parse((root / module).read_text())
        imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        inside = [name for name in imported if name.startswith(("hpclab_hub.backends.local", "hpclab_hub.backends.slurm"))]
        assert not inside, f"{module} imports a backend's own modules: {inside}"
