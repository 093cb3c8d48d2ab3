"""TLS inside the cluster (``hub.internal_ssl``): JupyterHub's internal_ssl, with certificates a server on a compute
node can use. The hub, its proxy and every server then speak mutual TLS to each other: the proxy reaches a job's
server over HTTPS with its own client certificate, and the server accepts no connection without one signed by the
hub's CAs.

JupyterHub makes a server's certificate before the start, so before SLURM has picked the node: the certificate
names every node of the cluster (each ``NodeAddr`` and ``NodeName`` from ``scontrol show node``), which is what the
proxy checks the server's address against. The key, certificate and CA bundle go to the user's home
(``~/.jupyterhub/jupyterhub-certs``, 0700, the user's own), which the nodes share, as JupyterHub's
LocalProcessSpawner does on one host.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import re
import shutil
from typing import Any

from hpclab_hub.backends.slurm.backend import SlurmServer
from hpclab_hub.config.model import Deployment


def configure_internal_ssl(c: Any, deployment: Deployment) -> None:
    """JupyterHub's internal_ssl with its CAs in data_dir/internal-ssl, the proxy's API over HTTPS, when the YAML asks."""
    hub = deployment.hub
    if not hub.internal_ssl:
        return
    c.JupyterHub.internal_ssl = True
    c.JupyterHub.internal_certs_location = str(hub.data_dir / "internal-ssl")
    c.ConfigurableHTTPProxy.api_url = f"https://127.0.0.1:{hub.proxy_api_port}"


def alt_name(host: str) -> str:
    """A subjectAltName for a host: ``IP:10.0.0.12`` for an address, ``DNS:node12`` for a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"DNS:{host}"
    return f"IP:{host}"


def node_alt_names(scontrol_nodes: str) -> list[str]:
    """Every node's name and address from ``scontrol show node -o`` (one node a line) as subjectAltNames."""
    names: list[str] = []
    for line in scontrol_nodes.splitlines():
        for key in ("NodeName", "NodeAddr", "NodeHostName"):
            match = re.search(rf"(?:^|\s){key}=(\S+)", line)
            if match and match.group(1) != "(null)" and alt_name(match.group(1)) not in names:
                names.append(alt_name(match.group(1)))
    return names


class InternalCerts:
    """Spawner methods for internal_ssl: certificates that name the cluster's nodes, moved into the user's home."""

    async def create_certs(self) -> dict[str, str]:
        backend = self.server_backend  # type: ignore[attr-defined]
        if isinstance(backend, SlurmServer):
            self.ssl_alt_names = node_alt_names(await backend.client.run(["scontrol", "show", "node", "-o"]))
        return await super().create_certs()  # type: ignore[misc]

    async def move_certs(self, paths: dict[str, str]) -> dict[str, str]:
        """Key, certificate and CA bundle into ``~/.jupyterhub/jupyterhub-certs`` of the server's account (0700)."""
        user = self.user.name  # type: ignore[attr-defined]
        backend = self.server_backend  # type: ignore[attr-defined]
        account = pwd.getpwnam(user)
        home = backend.home() if isinstance(backend, SlurmServer) else account.pw_dir
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
