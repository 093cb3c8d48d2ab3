"""Jobs that run the server from a shared software prefix (``backends.<name>.node_prefix``), not the hub's venv.

``hpclab-hub node-install PREFIX`` (cli/node_install.py) makes the prefix: a venv of the same Python with the server's
packages from the lock, hpclab itself (not editable: the nodes need no source tree) and the curated kernelspecs. The
hub then writes the prefix's paths into each job where it would write its own: the job command
(PREFIX/bin/hpclab-singleuser), the server's Python, JupyterLab's settings and labextension folders (in the prefix's
site-packages) and the job's PATH; so compute nodes need the prefix, never the hub's venv.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hpclab
import hpclab_hub
from hpclab_hub.config.backend_model import SlurmBackend


def site_packages(prefix: str) -> str:
    """The prefix's site-packages: a venv of the hub's own Python version (node-install makes it so)."""
    return f"{prefix}/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"


def path_map(prefix: str) -> list[tuple[str, str]]:
    """(the hub's path, the prefix's), longest first: packages by their installed folders, then the venv itself."""
    site = site_packages(prefix)
    pairs = [
        (str(Path(hpclab.__file__).resolve().parent), f"{site}/hpclab"),
        (str(Path(hpclab_hub.__file__).resolve().parent), f"{site}/hpclab_hub"),
        (str(Path(hpclab.__file__).parent), f"{site}/hpclab"),
        (str(Path(hpclab_hub.__file__).parent), f"{site}/hpclab_hub"),
        (sys.prefix, prefix),
    ]
    return sorted(dict(pairs).items(), key=lambda pair: -len(pair[0]))


def on_nodes(value: str, prefix: str) -> str:
    """``value`` (an argument, a PATH) with each of the hub's own paths replaced by the prefix's."""
    for hub_path, node_path in path_map(prefix):
        value = value.replace(hub_path, node_path)
    return value


def job_command(backend: SlurmBackend, server_command: list[str]) -> list[str]:
    """The job's command: ``job_command`` (default hpclab-singleuser beside the Python that runs the server), then the
    server's, with the hub's paths turned into the prefix's where the backend names a node_prefix."""
    prefix = backend.node_prefix
    if not prefix:
        return list(backend.job_command or [str(Path(sys.executable).with_name("hpclab-singleuser"))]) + server_command
    entry = list(backend.job_command or [f"{prefix}/bin/hpclab-singleuser"])
    return entry + [on_nodes(part, prefix) for part in server_command]


def job_environment(backend: SlurmBackend, env: dict[str, str]) -> dict[str, str]:
    """The job's environment, its paths into the hub's venv (PATH first) turned into the prefix's."""
    if not backend.node_prefix:
        return env
    return {key: on_nodes(value, backend.node_prefix) for key, value in env.items()}
