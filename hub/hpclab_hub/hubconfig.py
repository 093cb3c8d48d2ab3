"""Translate a validated Deployment into JupyterHub's traitlets configuration (``c``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hpclab_hub.auth.ldap import HPCLabLDAPAuthenticator
from hpclab_hub.auth.login_security import TRUSTED_PROXIES
from hpclab_hub.auth.native import HPCLabAuthenticator
from hpclab_hub.auth.oidc import HPCLabOIDCAuthenticator
from hpclab_hub.backends.local.one_door import open_door
from hpclab_hub.backends.local.trial import trial_refusal, trial_user
from hpclab_hub.backends.slurm.port_report import PortReportHandler
from hpclab_hub.config import load_deployment
from hpclab_hub.config.loader import cached_deployment
from hpclab_hub.config.model import Deployment
from hpclab_hub.config.usernames import username_max_length
from hpclab_hub.host_notes import app_warnings, deployment_notes
from hpclab_hub.ops.culling import activity_interval, culler_service, profile_timeouts
from hpclab_hub.ops.kept_proxy import KeptProxy
from hpclab_hub.spawner.internal_certs import configure_internal_ssl
from hpclab_hub.spawner.spawner import HPCLabSpawner
from hpclab_hub.web.history_view import configure_history, configure_knowledge_base
from hpclab_hub.web.sharing import configure_sharing
from hpclab_hub.web.site_pages import OpenExampleHandler
from hpclab_hub.web.walltime_api import walltime_routes


def _configure_login_guards(c: Any, deployment: Deployment) -> None:
    """One user-name rule for every authenticator; lockout after repeated wrong passwords; on a one-person trial
    (a hub without root, trial.py) only its admin may log in or sign up, anyone else is told why."""

    c.UsernamePolicyMixin.username_max_length = username_max_length(deployment.account_prefixes)
    only = trial_user(deployment)
    if only:
        c.UsernamePolicyMixin.only_user = only
        c.UsernamePolicyMixin.only_user_reason = trial_refusal(only)
    lockout = deployment.auth.lockout
    c.LoginLockoutMixin.lockout_attempts = lockout.attempts
    c.LoginLockoutMixin.lockout_address_attempts = lockout.address_attempts
    c.LoginLockoutMixin.lockout_window = float(lockout.window)
    c.LoginLockoutMixin.lockout_seconds = float(lockout.lock)
    c.LoginLockoutMixin.lockout_account_attempts = lockout.account_attempts
    c.LoginLockoutMixin.lockout_account_delay = float(lockout.account_delay)
    c.LoginLockoutMixin.lockout_state_file = str(deployment.hub.data_dir / "login-guard.json")


def _configure_native(c: Any, deployment: Deployment) -> None:
    """Local accounts in the hub database; groups from the YAML."""

    native = deployment.auth.native
    c.JupyterHub.authenticator_class = HPCLabAuthenticator
    c.HPCLabAuthenticator.signup_per_address = native.signup_limit.per_address
    c.HPCLabAuthenticator.signup_window = float(native.signup_limit.window)
    c.Authenticator.allow_all = True  # only accounts an admin approved can log in (NativeAuthenticator's gate)
    c.HPCLabAuthenticator.admin_password_env = deployment.auth.admin_password_env
    c.NativeAuthenticator.open_signup = False
    c.NativeAuthenticator.enable_signup = native.allow_signup
    c.NativeAuthenticator.minimum_password_length = native.minimum_password_length
    c.NativeAuthenticator.check_common_password = True
    c.JupyterHub.template_vars = {"hpclab_signup": native.allow_signup}
    c.JupyterHub.load_groups = {group: {"users": list(members)} for group, members in deployment.auth.groups.items()}


def _configure_ldap(c: Any, deployment: Deployment) -> None:
    """LDAP bind login; the directory's groups are synced into the hub at every login (manage_groups)."""

    ldap = deployment.auth.ldap
    assert ldap is not None  # the YAML's check: auth.type ldap needs an auth.ldap section
    c.JupyterHub.authenticator_class = HPCLabLDAPAuthenticator
    c.Authenticator.manage_groups = True
    c.LDAPAuthenticator.server_address = ldap.server
    c.LDAPAuthenticator.server_port = ldap.port
    c.LDAPAuthenticator.tls_strategy = {"starttls": "before_bind", "ldaps": "on_connect", "none": "insecure"}[ldap.tls]
    c.LDAPAuthenticator.bind_dn_template = list(ldap.bind_dn_templates)
    c.HPCLabLDAPAuthenticator.group_dns = dict(ldap.groups)
    c.HPCLabLDAPAuthenticator.admin_group_names = list(ldap.admin_groups)
    c.HPCLabLDAPAuthenticator.login_group_names = list(ldap.login_groups)
    c.JupyterHub.template_vars = {"hpclab_signup": False}


def oidc_endpoints(issuer: str, timeout: float = 10) -> dict[str, str]:
    """authorize/token/userinfo URLs from the provider's discovery document (fails clearly if unreachable)."""
    import json
    import urllib.request

    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            document = json.load(response)
    except (OSError, ValueError) as error:
        raise RuntimeError(f"auth.oidc.issuer: cannot read {url}: {error}") from None
    return {key: document[key] for key in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint")}


def _configure_oidc(c: Any, deployment: Deployment, port: int) -> None:
    """oauthenticator's GenericOAuthenticator; the groups claim feeds hub groups, admin and login rights."""
    oidc = deployment.auth.oidc
    assert oidc is not None  # the YAML's check: auth.type oidc needs an auth.oidc section
    hub = deployment.hub
    endpoints = oidc_endpoints(oidc.issuer)

    c.JupyterHub.authenticator_class = HPCLabOIDCAuthenticator
    c.GenericOAuthenticator.client_id = oidc.client_id
    c.GenericOAuthenticator.client_secret = os.environ.get(oidc.client_secret_env, "")
    c.GenericOAuthenticator.oauth_callback_url = oidc.callback_url or f"{hub.public_url(port)}{hub.base_url}hub/oauth_callback"
    c.GenericOAuthenticator.authorize_url = endpoints["authorization_endpoint"]
    c.GenericOAuthenticator.token_url = endpoints["token_endpoint"]
    c.GenericOAuthenticator.userdata_url = endpoints["userinfo_endpoint"]
    c.GenericOAuthenticator.scope = list(oidc.scopes)
    c.GenericOAuthenticator.username_claim = oidc.username_claim
    c.GenericOAuthenticator.login_service = oidc.login_service
    c.GenericOAuthenticator.manage_groups = True
    c.GenericOAuthenticator.auth_state_groups_key = f"oauth_user.{oidc.groups_claim}"
    c.GenericOAuthenticator.admin_groups = set(oidc.admin_groups)
    if oidc.allowed_groups:
        c.GenericOAuthenticator.allowed_groups = set(oidc.allowed_groups)
    else:
        c.GenericOAuthenticator.allow_all = True
    c.JupyterHub.template_vars = {"hpclab_signup": False}


def secure_state_files(deployment: Deployment) -> None:
    """data_dir 0700, the SQLite database and the cookie secret 0600: only the hub's account reads them.

    The database file is created empty (a valid SQLite file) before JupyterHub opens it, so it never
    exists with wider permissions.
    """
    hub = deployment.hub
    hub.data_dir.mkdir(parents=True, exist_ok=True)
    hub.data_dir.chmod(0o700)
    private = [hub.cookie_secret_path]
    if hub.db_url is None:
        database = hub.data_dir / "jupyterhub.sqlite"
        os.close(os.open(database, os.O_CREAT | os.O_WRONLY, 0o600))
        private.append(database)
    for path in private:
        if path.exists():
            path.chmod(0o600)


def _configure_site(c: Any, deployment: Deployment, config_file: Path) -> None:
    """One spawner for every backend mix; named servers; the site's name, logo and pages."""

    hub = deployment.hub
    c.JupyterHub.spawner_class = HPCLabSpawner
    c.HPCLabSpawner.deployment_file = str(config_file)
    c.HPCLabSpawner.poll_interval = min(b.poll_interval for b in deployment.backends.values())
    c.JupyterHub.allow_named_servers = hub.named_servers
    c.JupyterHub.named_server_limit_per_user = hub.named_server_limit
    c.JupyterHub.concurrent_spawn_limit = 0  # starts past hub.concurrent_spawn_limit wait in line (spawn_queue), never 429

    handlers: list = [(r"/hpclab/open", OpenExampleHandler), *walltime_routes()]
    if any(b.type == "slurm" for b in deployment.backends.values()):
        handlers.append((r"/api/hpclab/port", PortReportHandler))
    c.JupyterHub.extra_handlers = handlers
    if hub.logo is not None:
        c.JupyterHub.logo_file = str(hub.logo)
    c.JupyterHub.template_vars = {**dict(c.JupyterHub.template_vars), "hpclab_site_name": hub.site_name}


def servers_hub_url(deployment: Deployment, port: int) -> str:
    """Where servers and their kernels reach the hub API: the proxy's public address (one door), never hub_port."""
    hub = deployment.hub
    if hub.connect_url:
        return hub.connect_url.rstrip("/")
    host = "127.0.0.1" if hub.ip in ("", "0.0.0.0") else "[::1]" if hub.ip == "::" else f"[{hub.ip}]" if ":" in hub.ip else hub.ip
    return f"{'https' if hub.ssl_cert else 'http'}://{host}:{port}"


def _configure_one_door(c: Any, deployment: Deployment, port: int) -> None:
    """User code reaches the hub only through the proxy (one_door.py): servers call the hub API at the proxy's
    address, and a firewall rule by account closes the hub's port, the proxy's API and other users' server ports."""

    c.Spawner.hub_connect_url = servers_hub_url(deployment, port)
    _, why = open_door(deployment.hub.hub_port, deployment.hub.proxy_api_port)
    if why:
        logging.getLogger("JupyterHub").warning("hpclab: one door to the hub: firewall rules not installed: %s", why)


def apply_deployment(c: Any, deployment: Deployment, config_file: Path) -> None:
    """Set every JupyterHub, proxy, authenticator and spawner option the deploy YAML controls."""
    hub = deployment.hub
    secure_state_files(deployment)
    port = int(os.environ.get("HPCLAB_PORT", hub.port))

    scheme = "https" if hub.ssl_cert else "http"
    # session and XSRF cookies over HTTPS only when users' browsers speak HTTPS: to the hub, or to a TLS proxy in front
    secure = bool(hub.ssl_cert or hub.tls_proxy)
    c.JupyterHub.tornado_settings = {"cookie_options": {"samesite": "Lax", **({"secure": True} if secure else {})}}
    if hub.tls_proxy is not None:  # behind nginx: its client address is believed from its own addresses only
        c.JupyterHub.tornado_settings[TRUSTED_PROXIES] = list(hub.tls_proxy.trusted_addresses)
        c.JupyterHub.public_url = f"{hub.public_url(port)}{hub.base_url}"
    c.JupyterHub.bind_url = f"{scheme}://{hub.ip}:{port}{hub.base_url}"
    if hub.ssl_cert:
        c.JupyterHub.ssl_cert = str(hub.ssl_cert)
        c.JupyterHub.ssl_key = str(hub.ssl_key)
    if hub.http_redirect_port:
        # configurable-http-proxy answers plain HTTP there with a redirect to the HTTPS port
        c.ConfigurableHTTPProxy.command = [
            "configurable-http-proxy",
            "--redirect-port",
            str(hub.http_redirect_port),
            "--redirect-to",
            str(port),
        ]
    if hub.user_subdomains:
        # every user's servers on their own origin (<user>.<public_host>): the hub's cookies and API stay on the hub's
        c.JupyterHub.subdomain_host = hub.public_url(port)
    c.JupyterHub.hub_ip = hub.hub_ip
    c.JupyterHub.hub_port = hub.hub_port
    c.JupyterHub.db_url = hub.database_url
    c.JupyterHub.cookie_secret_file = str(hub.cookie_secret_path)
    c.JupyterHub.pid_file = str(hub.data_dir / "jupyterhub.pid")
    c.JupyterHub.cleanup_servers = not hub.keep_servers_on_restart
    c.JupyterHub.log_level = hub.log_level

    c.JupyterHub.proxy_class = KeptProxy  # a reload (reload.py, ops/kept_proxy.py) keeps the running proxy and its routes
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{hub.proxy_api_port}"
    c.ConfigurableHTTPProxy.pid_file = str(hub.data_dir / "jupyterhub-proxy.pid")
    configure_internal_ssl(c, deployment)  # hub.internal_ssl: TLS between hub, proxy and servers (spawner/internal_certs.py)
    _configure_one_door(c, deployment, port)

    c.Authenticator.admin_users = set(hub.admin_users)
    _configure_login_guards(c, deployment)
    c.JupyterHub.template_paths = [str(Path(__file__).parent / "web" / "templates" / "hub")]
    if deployment.auth.type == "ldap":
        _configure_ldap(c, deployment)
    elif deployment.auth.type == "oidc":
        _configure_oidc(c, deployment, port)
    else:
        _configure_native(c, deployment)

    _configure_site(c, deployment, config_file)
    configure_history(c, deployment, f"{hub.base_url}hub/")  # web/history_view.py: past sessions, usage metrics
    configure_knowledge_base(c, deployment)  # /hub/hpclab/examples (web/knowledge_base.py)

    roles = []
    if hub.sharing:  # each person may share their own servers (JupyterHub's sharing API, web/sharing.py) and list whom with
        subdomain_host = hub.public_url(port) if hub.user_subdomains else None
        roles.append({"name": "user", "scopes": ["self", *configure_sharing(c, subdomain_host, hub.base_url)]})
    if deployment.culling.enabled:
        # the hub refreshes servers' activity from the proxy often enough for the shortest idle timeout
        c.JupyterHub.last_activity_interval = activity_interval(min(profile_timeouts(deployment).values()))
        service, role = culler_service(deployment)
        c.JupyterHub.services = [service]
        roles.append(role)
    if roles:
        c.JupyterHub.load_roles = roles


def configure(c: Any, config_file: str | os.PathLike) -> Deployment:
    """Load and validate the YAML, then configure ``c``; raises ConfigError before anything starts."""
    path = Path(config_file).resolve()
    deployment = load_deployment(path)

    cached_deployment.cache_clear()
    apply_deployment(c, deployment, path)

    for note in [*app_warnings(deployment), *deployment_notes(deployment)]:  # off here, though valid: in the hub's log
        logging.getLogger("JupyterHub").warning("hpclab: %s", note)
    return deployment
