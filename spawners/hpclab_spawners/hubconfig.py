"""Translate a validated Deployment into JupyterHub's traitlets configuration (``c``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from .config import load_deployment
from .config.model import Deployment


def _culler_service(deployment: Deployment) -> tuple[dict[str, Any], dict[str, Any]]:
    """jupyterhub-idle-culler as a hub-managed service, and the role that lets it stop idle servers."""
    culling = deployment.culling
    service = {
        "name": "idle-culler",
        "command": [
            sys.executable,
            "-m",
            "jupyterhub_idle_culler",
            f"--timeout={culling.timeout}",
            f"--cull-every={culling.every}",
        ],
    }
    role = {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }
    return service, role


def apply_deployment(c: Any, deployment: Deployment, config_file: Path) -> None:
    """Set every JupyterHub, proxy, authenticator and spawner option the deploy YAML controls."""
    hub = deployment.hub
    hub.data_dir.mkdir(parents=True, exist_ok=True)
    port = int(os.environ.get("HPCLAB_PORT", hub.port))

    scheme = "https" if hub.ssl_cert else "http"
    c.JupyterHub.bind_url = f"{scheme}://{hub.ip}:{port}{hub.base_url}"
    if hub.ssl_cert:
        c.JupyterHub.ssl_cert = str(hub.ssl_cert)
        c.JupyterHub.ssl_key = str(hub.ssl_key)
    if hub.http_redirect_port:
        # configurable-http-proxy answers plain HTTP there with a redirect to the HTTPS port
        c.ConfigurableHTTPProxy.command = [
            "configurable-http-proxy", "--redirect-port", str(hub.http_redirect_port), "--redirect-to", str(port)
        ]
    c.JupyterHub.hub_ip = hub.hub_ip
    c.JupyterHub.hub_port = hub.hub_port
    c.JupyterHub.db_url = hub.database_url
    c.JupyterHub.cookie_secret_file = str(hub.cookie_secret_path)
    c.JupyterHub.pid_file = str(hub.data_dir / "jupyterhub.pid")
    c.JupyterHub.cleanup_servers = not hub.keep_servers_on_restart
    c.JupyterHub.log_level = hub.log_level
    c.JupyterHub.load_groups = {group: {"users": list(members)} for group, members in deployment.auth.groups.items()}

    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{hub.proxy_api_port}"
    c.ConfigurableHTTPProxy.pid_file = str(hub.data_dir / "jupyterhub-proxy.pid")

    from .accounts import HPCLabAuthenticator

    c.JupyterHub.authenticator_class = HPCLabAuthenticator
    c.Authenticator.admin_users = set(hub.admin_users)
    c.Authenticator.allow_all = True  # only accounts an admin approved can log in (NativeAuthenticator's gate)
    c.HPCLabAuthenticator.admin_password_env = deployment.auth.admin_password_env
    c.NativeAuthenticator.open_signup = False
    c.NativeAuthenticator.enable_signup = deployment.auth.native.allow_signup
    c.NativeAuthenticator.minimum_password_length = deployment.auth.native.minimum_password_length
    c.NativeAuthenticator.check_common_password = True
    c.JupyterHub.template_paths = [str(Path(__file__).with_name("templates") / "hub")]
    c.JupyterHub.template_vars = {"hpclab_signup": deployment.auth.native.allow_signup}

    kinds = {deployment.backends[p.backend].type for p in deployment.profiles}
    if "slurm" in kinds:
        from .slurm.port_report import PortReportHandler
        from .slurm.spawner import SlurmProfileSpawner

        slurm_backends = [b for b in deployment.backends.values() if b.type == "slurm"]
        c.JupyterHub.spawner_class = SlurmProfileSpawner
        c.SlurmProfileSpawner.deployment_file = str(config_file)
        c.SlurmProfileSpawner.poll_interval = min(b.poll_interval for b in slurm_backends)
        c.JupyterHub.extra_handlers = [(r"/api/hpclab/port", PortReportHandler)]
    else:
        from .local_spawner import LocalProfileSpawner

        c.JupyterHub.spawner_class = LocalProfileSpawner
        c.LocalProfileSpawner.deployment_file = str(config_file)

    if deployment.culling.enabled:
        # the hub refreshes servers' activity from the proxy often enough for the culler's timeout
        c.JupyterHub.last_activity_interval = max(5, min(300, deployment.culling.timeout // 3))
        service, role = _culler_service(deployment)
        c.JupyterHub.services = [service]
        c.JupyterHub.load_roles = [role]


def configure(c: Any, config_file: str | os.PathLike) -> Deployment:
    """Load and validate the YAML, then configure ``c``; raises ConfigError before anything starts."""
    path = Path(config_file).resolve()
    deployment = load_deployment(path)
    from .config.loader import cached_deployment

    cached_deployment.cache_clear()
    apply_deployment(c, deployment, path)
    return deployment
