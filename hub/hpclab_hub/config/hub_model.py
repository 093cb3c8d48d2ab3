"""The deploy YAML's ``hub`` and ``auth`` sections: where the hub listens, its state, who may log in and how."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, StrictStr, ValidationInfo, field_validator

from hpclab_hub.config.fields import Int, Name, NonNegativeInt, Port, Strict, _resolve
from hpclab_hub.config.units import DurationSeconds


class TLSProxy(Strict):
    """A reverse proxy (nginx) in front of the hub ends TLS: users open https://<public_host>[:port], the hub's cookies
    are Secure, and the client address the proxy passes on reaches the login lockout."""

    port: Port = Field(443, description="Port users open on the proxy: https://<public_host>[:port].")
    trusted_addresses: list[StrictStr] = Field(
        ["127.0.0.2"],
        min_length=1,
        description="Addresses (or networks) the proxy connects to the hub from: only a request arriving from one of them has "
        "the client address it names in X-Forwarded-For believed (login lockout, sign-up limit); from anywhere else the "
        "hub counts the address it sees. Give the proxy an address of its own (nginx's proxy_bind 127.0.0.2), never "
        "one users' code connects from.",
    )

    @field_validator("trusted_addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            try:
                ipaddress.ip_network(address, strict=False)
            except ValueError:
                raise ValueError(f"{address!r} is not an IP address or network") from None
        return value


class HubSettings(Strict):
    """Where the hub listens and where it keeps its state."""

    ip: StrictStr = Field("127.0.0.1", description="Address the public proxy binds to.")
    port: Port = Field(8000, description="Public port users open in their browser.")
    base_url: StrictStr = Field("/", pattern=r"^/", description="URL prefix of the whole hub, e.g. /jupyter/.")
    public_host: StrictStr = Field(
        "localhost",
        pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$",
        description="Host name users open the hub at (e.g. hub.example.org); "
        "with user_subdomains, each user's servers at <user>.<public_host>.",
    )
    user_subdomains: bool = Field(
        True,
        description="Serve each user's servers on their own host name (<user>.<public_host>), a separate browser origin: "
        "a page from one user's server cannot act as another user on the hub. "
        "Needs wildcard DNS (and a wildcard certificate) in production.",
    )
    sharing: bool = Field(
        True,
        description="People may share their running servers with others, and revoke the share (JupyterHub's sharing API, "
        "/hub/api/shares/<user>; docs/user-guide.md). An edit share gives the other person the owner's server: its files and "
        "kernels, counted against the owner's quotas; a read-only share lets them read files and follow notebooks only.",
    )
    history: bool = Field(
        True,
        description="Record every server's life (who, profile, resources, start, end, why it ended, core- and GPU-hours) in "
        "the hub's database: users' past sessions and relaunch on the home page, `hpclab-hub usage`, the usage metrics. "
        "false records nothing new (a site that keeps no such record; benchmarks/hub_load.py --no-history measures its cost).",
    )
    hub_ip: StrictStr = Field("127.0.0.1", description="Address of the hub's internal API (servers call back to it).")
    hub_port: Port = Field(8081, description="Port of the hub's internal API.")
    proxy_api_port: Port = Field(8001, description="Port of configurable-http-proxy's REST API (loopback only).")
    connect_url: StrictStr | None = Field(
        None,
        pattern=r"^https?://",
        description="Where servers and their kernels reach the hub API: the proxy's public address, never the hub's own port "
        "(one door). Default <scheme>://<hub.ip, or 127.0.0.1 when it is 0.0.0.0>:<port>; with HTTPS give the name the "
        "certificate holds, e.g. https://hub.example.org.",
    )
    data_dir: Path = Field(
        Path(".hpclab"),
        description="Folder for the hub's private state, made 0700: the SQLite database (unless db_url names another), the "
        "cookie secret, the login-lockout record and pid files; relative to the YAML file. Users' homes may not be inside "
        "it, and the hub writes no logs there (it logs to stderr: journald under systemd).",
    )
    db_url: StrictStr | None = Field(None, description="SQLAlchemy URL of the hub database; default sqlite in data_dir.")
    id: StrictStr | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9-]{0,31}$",
        description="This hub's id in its SLURM jobs' comments (hpclab:<id>:<profile>), by which it finds its orphan jobs; "
        "default one kept in the database (made once; a hub from before keeps its old one). Set it when hubs share a database.",
    )
    cookie_secret_file: Path | None = Field(
        None, description="File holding the cookie secret; default data_dir/jupyterhub_cookie_secret."
    )
    admin_users: list[Name] = Field(["admin"], description="Hub administrators.")
    keep_servers_on_restart: bool = Field(
        True, description="Leave users' servers running when the hub stops, and re-adopt them on start."
    )
    internal_ssl: bool = Field(
        False,
        description="Mutual TLS between the hub, its proxy and users' servers (JupyterHub's internal_ssl): CAs in "
        "data_dir/internal-ssl, a certificate per server naming every node of its SLURM cluster, in the user's "
        "~/.jupyterhub/jupyterhub-certs; the proxy reaches servers over HTTPS only (docs/slurm.md). Needs a hub as root.",
    )
    ssl_cert: Path | None = Field(None, description="TLS certificate (PEM) for HTTPS on hub.port; with ssl_key.")
    ssl_key: Path | None = Field(None, description="TLS private key (PEM) for ssl_cert.")
    http_redirect_port: Port | None = Field(None, description="Also listen for plain HTTP here and redirect to HTTPS.")
    tls_proxy: TLSProxy | None = Field(
        None,
        description="A TLS reverse proxy in front of the hub (nginx: deploy/nginx/hpclab.conf); leave ssl_cert unset.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Hub log level (tokens are never logged)."
    )
    site_name: StrictStr = Field(
        "HPCLab", min_length=1, max_length=80, description="Name shown in page titles and on the spawn form."
    )
    logo: Path | None = Field(
        None, description="Logo image (PNG/SVG) shown top left of every hub page; relative to the YAML file."
    )
    named_servers: bool = Field(True, description="Users may run several servers at once, each with a name and its own profile.")
    named_server_limit: NonNegativeInt = Field(
        3, description="Most named servers per user besides the default one (0 = no limit); quotas still count every server."
    )
    concurrent_spawn_limit: NonNegativeInt = Field(
        20,
        description="Most servers starting at once; later starts wait in line and their progress page says where (0 = no limit).",
    )

    @field_validator("data_dir", "cookie_secret_file", "ssl_cert", "ssl_key", "logo")
    @classmethod
    def _absolute(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)

    def public_url(self, port: int | None = None) -> str:
        """The hub's address in users' browsers: scheme, public_host and ``port`` (default hub.port; left out when
        it is the scheme's own)."""
        if self.tls_proxy is not None:  # users open the TLS proxy, not the hub's own port
            shown = "" if self.tls_proxy.port == 443 else f":{self.tls_proxy.port}"
            return f"https://{self.public_host}{shown}"
        scheme = "https" if self.ssl_cert else "http"
        port = self.port if port is None else port
        shown = "" if port == (443 if self.ssl_cert else 80) else f":{port}"
        return f"{scheme}://{self.public_host}{shown}"

    @property
    def database_url(self) -> str:
        """The database URL to use: the configured one or SQLite inside ``data_dir``."""
        return self.db_url or f"sqlite:///{self.data_dir / 'jupyterhub.sqlite'}"

    @property
    def cookie_secret_path(self) -> Path:
        """Where the cookie secret lives (kept across restarts so logins survive them)."""
        return self.cookie_secret_file or self.data_dir / "jupyterhub_cookie_secret"


class SignupLimit(Strict):
    """How many sign-ups one address may make (bots filling the approval page)."""

    per_address: NonNegativeInt = Field(5, description="Sign-ups from one address within `window`; 0 = no limit.")
    window: DurationSeconds = Field("01:00:00", validate_default=True, description="Period over which sign-ups are counted.")


class NativeAuthSettings(Strict):
    """Local accounts kept in the hub database (jupyterhub-nativeauthenticator)."""

    allow_signup: bool = Field(True, description="Show a sign-up page; new accounts wait for an admin's approval.")
    minimum_password_length: Int = Field(8, ge=1)
    signup_limit: SignupLimit = Field(default_factory=dict, validate_default=True, description="Sign-up rate limit per address.")


class LoginLockout(Strict):
    """Refuse logins for a while after repeated failures (native and LDAP passwords); kept in data_dir/login-guard.json."""

    attempts: NonNegativeInt = Field(
        5, description="Failed logins for one user name from one address within `window` before that pair is locked; 0 = off."
    )
    address_attempts: NonNegativeInt = Field(
        50, description="Failed logins from one address (any names) before the address is locked; 0 = off."
    )
    account_attempts: NonNegativeInt = Field(
        10,
        description="Failed logins for one user name from any addresses within `window` before each further attempt "
        "of that name waits (the delay doubles per failure up to `account_delay`); addresses the name logged in from "
        "before are exempt. 0 = off.",
    )
    window: DurationSeconds = Field("00:15:00", validate_default=True, description="Period over which failures are counted.")
    lock: DurationSeconds = Field(
        "00:15:00",
        validate_default=True,
        description="How long a lock of one name from one address, or of one address, lasts (the right password is refused too).",
    )
    account_delay: DurationSeconds = Field(
        "00:01:00",
        validate_default=True,
        description="Longest wait for one user name after `account_attempts` failures: short, since anyone can cause it.",
    )


class LDAPAuthSettings(Strict):
    """Log in against an LDAP directory (jupyterhub-ldapauthenticator); LDAP groups become hub groups."""

    server: StrictStr = Field(description="LDAP server host name.")
    port: Port = Field(389, description="LDAP port (636 for LDAPS).")
    tls: Literal["starttls", "ldaps", "none"] = Field(
        "starttls", description="StartTLS before binding, LDAPS from the start, or none (a test directory only)."
    )
    bind_dn_templates: list[StrictStr] = Field(
        min_length=1, description="DNs to bind as, with {username}, e.g. uid={username},ou=people,dc=example,dc=org."
    )
    groups: dict[Name, StrictStr] = Field(
        default_factory=dict, description="Hub group -> LDAP group DN; membership feeds profile access."
    )
    admin_groups: list[Name] = Field(default_factory=list, description="Hub groups (keys of groups) whose members are admins.")
    login_groups: list[Name] = Field(
        default_factory=list, description="Only members of these hub groups may log in; empty = any LDAP account."
    )


class OIDCAuthSettings(Strict):
    """Single sign-on with any OpenID Connect provider (INDIGO IAM, Keycloak, ...) through oauthenticator."""

    issuer: StrictStr = Field(description="Issuer URL; endpoints come from its /.well-known/openid-configuration.")
    client_id: StrictStr
    client_secret_env: StrictStr = Field(
        "HPCLAB_OIDC_CLIENT_SECRET", description="Environment variable holding the client secret (never put it in the YAML)."
    )
    callback_url: StrictStr | None = Field(
        None, description="Redirect URI registered at the provider; default <hub URL>/hub/oauth_callback."
    )
    scopes: list[StrictStr] = Field(["openid", "profile", "email", "groups"], description="Scopes to ask for.")
    username_claim: StrictStr = Field("preferred_username", description="Claim that becomes the hub user name.")
    groups_claim: StrictStr = Field("groups", description="Claim listing the user's groups (synced into the hub at login).")
    admin_groups: list[Name] = Field(default_factory=list, description="Members of these groups are admins.")
    allowed_groups: list[Name] = Field(
        default_factory=list, description="Only members of these groups may log in; empty = anyone the provider accepts."
    )
    login_service: StrictStr = Field("single sign-on", description="Name on the login button.")


class AuthSettings(Strict):
    """Who may log in, who is admin, which groups people belong to."""

    type: Literal["native", "ldap", "oidc"] = Field(
        "native",
        description="Authenticator: 'native' keeps accounts in the hub database; 'ldap' asks a directory; 'oidc' single sign-on.",
    )
    admin_password_env: StrictStr = Field(
        "HPCLAB_ADMIN_PASSWORD",
        description="Environment variable holding the first admin's password; generated and printed once when unset.",
    )
    groups: dict[Name, list[Name]] = Field(
        default_factory=dict, description="Group -> members; profiles' `groups` refer to these names."
    )
    native: NativeAuthSettings = Field(default_factory=dict, validate_default=True, description="Settings of auth.type native.")
    lockout: LoginLockout = Field(
        default_factory=dict, validate_default=True, description="Login lockout after repeated wrong passwords."
    )
    ldap: LDAPAuthSettings | None = Field(None, description="Settings of auth.type ldap.")
    oidc: OIDCAuthSettings | None = Field(None, description="Settings of auth.type oidc.")
