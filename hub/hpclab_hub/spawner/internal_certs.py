"""TLS inside the cluster (``hub.internal_ssl``): JupyterHub's internal_ssl, with certificates a server on a compute
node can use. The hub, its proxy and every server then speak mutual TLS to each other: the proxy reaches a job's
server over HTTPS with its own client certificate, and the server accepts no connection without one signed by the
hub's CAs.

JupyterHub makes a server's certificate before the start, so before SLURM has picked the node: the certificate
names every host the server's backend may run it on (``ServerBackend.cert_alt_names``; SLURM: each ``NodeAddr`` and
``NodeName`` from ``scontrol show node``), which is what the proxy checks the server's address against. The spawner
asks its backend for those names and for the home (``ServerBackend.home``); this module moves the key, certificate and
CA bundle there (``~/.jupyterhub/jupyterhub-certs``, 0700, the user's own), which the nodes share, as JupyterHub's
LocalProcessSpawner does on one host.
"""

from __future__ import annotations

import os
import pwd
import shutil
from typing import Any

from hpclab_hub.config.model import Deployment


def configure_internal_ssl(c: Any, deployment: Deployment) -> None:
    """JupyterHub's internal_ssl with its CAs in data_dir/internal-ssl, the proxy's API over HTTPS, when the YAML asks."""
    hub = deployment.hub
    if not hub.internal_ssl:
        return
    c.JupyterHub.internal_ssl = True
    c.JupyterHub.internal_certs_location = str(hub.data_dir / "internal-ssl")
    c.ConfigurableHTTPProxy.api_url = f"https://127.0.0.1:{hub.proxy_api_port}"


def move_certs(paths: dict[str, str], user_name: str, home: str) -> dict[str, str]:
    """Key, certificate and CA bundle into ``<home>/.jupyterhub/jupyterhub-certs`` (0700, the account's own)."""
    account = pwd.getpwnam(user_name)
    folder = os.path.join(home, ".jupyterhub", "jupyterhub-certs")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, 0o700, exist_ok=True)
    moved = {}
    for key, path in paths.items():
        target = os.path.join(folder, os.path.basename(path))
        (shutil.copy if key == "cafile" else shutil.move)(path, target)
        moved[key] = target
    for path in (os.path.dirname(folder), folder, *moved.values()):
        os.chown(path, account.pw_uid, account.pw_gid)
    return moved
