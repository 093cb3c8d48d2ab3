"""Rules that span several keys (unique slugs, known backends, one default), checked after typing."""

from __future__ import annotations

import os
from pathlib import Path

from hpclab_hub.config.errors import ConfigIssue
from hpclab_hub.config.kb_model import knowledge_base_issues
from hpclab_hub.config.model import Deployment
from hpclab_hub.config.user_choices import NUMERIC_KEYS, SLURM_KEYS, ChoiceRefused, ClusterOptions, check_bound
from hpclab_hub.config.usernames import InvalidUsername, check_username, username_max_length
from hpclab_hub.config.yaml_source import SourceMap


def cross_checks(deployment: Deployment) -> list[ConfigIssue]:
    """Issues (without line numbers) that a single field's type cannot express."""
    issues: list[ConfigIssue] = []
    first_index: dict[str, int] = {}
    defaults = []
    declared_kernels = set(deployment.kernels)
    for i, profile in enumerate(deployment.profiles):
        if profile.slug in first_index:
            issues.append(
                ConfigIssue(
                    ("profiles", i, "slug"), f"duplicate slug {profile.slug!r} (also profiles[{first_index[profile.slug]}])"
                )
            )
        else:
            first_index[profile.slug] = i
        if profile.backend not in deployment.backends:
            declared = ", ".join(deployment.backends) or "none"
            issues.append(
                ConfigIssue(
                    ("profiles", i, "backend"), f"unknown backend {profile.backend!r}; declared under backends: {declared}"
                )
            )
        if profile.default:
            defaults.append(i)
        for k, kernel in enumerate(profile.kernels):
            if declared_kernels and kernel not in declared_kernels:
                issues.append(
                    ConfigIssue(
                        ("profiles", i, "kernels", k),
                        f"unknown kernel {kernel!r}; declared under kernels: {', '.join(sorted(declared_kernels))}",
                    )
                )
        if profile.default_kernel is not None:
            if profile.kernels and profile.default_kernel not in profile.kernels:
                issues.append(
                    ConfigIssue(
                        ("profiles", i, "default_kernel"),
                        f"{profile.default_kernel!r} is not among this profile's kernels: {', '.join(profile.kernels)}",
                    )
                )
            elif declared_kernels and profile.default_kernel not in declared_kernels:
                issues.append(
                    ConfigIssue(
                        ("profiles", i, "default_kernel"),
                        f"unknown kernel {profile.default_kernel!r}; "
                        f"declared under kernels: {', '.join(sorted(declared_kernels))}",
                    )
                )
    for i in defaults[1:]:
        issues.append(
            ConfigIssue(("profiles", i, "default"), f"only one profile may be the default (profiles[{defaults[0]}] already is)")
        )
    hub = deployment.hub
    auth = deployment.auth
    if hub.logo is not None and not hub.logo.is_file():
        issues.append(ConfigIssue(("hub", "logo"), f"no such file: {hub.logo}"))
    examples = deployment.examples
    if examples.enabled and examples.source is not None and not examples.source.is_dir():
        issues.append(ConfigIssue(("examples", "source"), f"no such folder: {examples.source}"))
    issues += _choice_issues(deployment)
    issues += [ConfigIssue(path, message) for path, message in knowledge_base_issues(deployment)]
    issues += _local_backend_issues(deployment)
    issues += _user_name_issues(deployment)
    for kind in ("ldap", "oidc"):
        if auth.type == kind and getattr(auth, kind) is None:
            issues.append(ConfigIssue(("auth", "type"), f"auth.type {kind} needs an auth.{kind} section"))
    if auth.ldap is not None:
        for key in ("admin_groups", "login_groups"):
            for k, name in enumerate(getattr(auth.ldap, key)):
                if name not in auth.ldap.groups:
                    issues.append(ConfigIssue(("auth", "ldap", key, k), f"{name!r} is not a key of auth.ldap.groups"))
    if (hub.ssl_cert is None) != (hub.ssl_key is None):
        missing = "ssl_key" if hub.ssl_key is None else "ssl_cert"
        issues.append(ConfigIssue(("hub", missing), "HTTPS needs both ssl_cert and ssl_key"))
    if hub.http_redirect_port and hub.ssl_cert is None:
        issues.append(ConfigIssue(("hub", "http_redirect_port"), "redirecting to HTTPS needs ssl_cert and ssl_key"))
    ports = {
        "hub.port": deployment.hub.port,
        "hub.hub_port": deployment.hub.hub_port,
        "hub.proxy_api_port": deployment.hub.proxy_api_port,
    }
    if hub.http_redirect_port:
        ports["hub.http_redirect_port"] = hub.http_redirect_port
    seen_ports: dict[int, str] = {}
    for key, port in ports.items():
        if port in seen_ports:
            issues.append(ConfigIssue(tuple(key.split(".")), f"port {port} is already used by {seen_ports[port]}"))
        seen_ports[port] = key
    return issues


def runtime_issues(deployment: Deployment, source: SourceMap, base_dir: Path) -> list[ConfigIssue]:
    """Kernel runtimes missing on this machine: such a kernel cannot start, so ``hpclab-hub check`` fails on them.

    Not part of loading (the YAML itself is valid, and the hub still runs: the launcher answers with an error
    kernel). ``source`` gives the value as written and its line; ``base_dir`` is the folder relative paths
    were taken from, the YAML file's own (after following a symlink to the file), never the current directory.
    The ``apptainer`` command is not looked for: on a cluster it may exist on the compute nodes only.
    """
    from hpclab.kernel_launcher.launcher import _has_ipykernel

    issues = []
    for name, entry in deployment.kernels.items():
        runtime = entry.runtime
        if runtime is None:
            continue
        key = "image" if runtime.type == "apptainer" else "prefix"
        path = ("kernels", name, "runtime", key)
        resolved: Path = getattr(runtime, key)
        written = _written(source.data, path, resolved)
        where = _where(written, resolved, base_dir)
        what = "Apptainer image" if runtime.type == "apptainer" else f"{runtime.type} runtime"
        python = resolved / "bin" / "python"
        if runtime.type == "apptainer":
            problem = None if resolved.is_file() else "which does not exist"
        elif not resolved.is_dir():
            problem = "which does not exist"
        elif not os.access(python, os.X_OK):
            problem = f"which has no bin/python ({python})"
        elif not _has_ipykernel(resolved, python, dict(os.environ)):
            problem = f"which lacks ipykernel ({python} -m pip install ipykernel)"
        else:
            problem = None
        if problem:
            issues.append(ConfigIssue(path, f"kernel {name!r} cannot start: its {what} {where}, {problem}", source.line_of(path)))
    return issues + _slurm_command_issues(deployment, source)


def _slurm_command_issues(deployment: Deployment, source: SourceMap) -> list[ConfigIssue]:
    """A SLURM backend's ``bin_dir`` that lacks a command the hub runs (the hub would fail at the first start)."""
    issues = []
    for name, backend in deployment.backends.items():
        folder = getattr(backend, "bin_dir", None)
        if backend.type != "slurm" or not folder:
            continue
        path = ("backends", name, "bin_dir")
        missing = [c for c in ("sbatch", "squeue", "sinfo", "scontrol", "scancel") if not os.access(Path(folder, c), os.X_OK)]
        if missing:
            issues.append(
                ConfigIssue(
                    path, f"{folder} has no {', '.join(missing)} (the hub runs SLURM's commands from there)", source.line_of(path)
                )
            )
    return issues


def _written(data: object, path: tuple, default: Path) -> str:
    """The value at ``path`` as the YAML has it (falls back to ``default``)."""
    node = data
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return str(default)
        node = node[part]
    return str(node)


def _where(written: str, resolved: Path, base_dir: Path) -> str:
    """A path as written and, where that differs, what it resolved to and from what."""
    if written == "~" or written.startswith("~/"):
        return f"{written} resolves to {resolved} (~ is {Path('~').expanduser()}, the home of the account reading the YAML)"
    if written.startswith("~") or Path(written).is_absolute():
        return written if Path(written) == resolved else f"{written} resolves to {resolved}"
    return f"{written} resolves to {resolved} (relative to {base_dir}, the folder of this YAML file)"


def _choice_issues(deployment: Deployment) -> list[ConfigIssue]:
    """A profile's own values are the defaults of its choices, so they must lie within them; names are SLURM's."""

    issues = []
    for i, profile in enumerate(deployment.profiles):
        choices = profile.choices
        if choices is None or profile.backend not in deployment.backends:
            continue
        kind = deployment.backends[profile.backend].type
        for key in choices.offered():
            path = ("profiles", i, "choices", key)
            if key in SLURM_KEYS and kind != "slurm":
                issues.append(ConfigIssue(path, f"{key} is a SLURM choice; profile {profile.slug!r} runs on a {kind} backend"))
                continue
            default = getattr(profile, key) if key in NUMERIC_KEYS else None
            if key in NUMERIC_KEYS and default is None:
                issues.append(ConfigIssue(path, f"set the profile's own {key} (the default of this choice)"))
                continue
            if key in NUMERIC_KEYS:
                try:
                    check_bound(key, default, getattr(choices, key), ClusterOptions(), None)
                except ChoiceRefused as refused:
                    issues.append(ConfigIssue(path, f"the profile's own value must be allowed: {refused}"))
    return issues


def _local_backend_issues(deployment: Deployment) -> list[ConfigIssue]:
    """home_dir templates use only {username} and {account} and never point into the hub's private data_dir; a trial
    (accounts.mode hub-user or auto) needs an admin to serve."""
    import string

    issues = []
    data_dir = str(deployment.hub.data_dir)
    for name, backend in deployment.backends.items():
        if backend.type == "local" and backend.accounts.mode in ("hub-user", "auto") and not deployment.hub.admin_users:
            issues.append(
                ConfigIssue(
                    ("backends", name, "accounts", "mode"),
                    f"{backend.accounts.mode} needs hub.admin_users: "
                    "without root, the first admin is the one person whose servers run as the hub's account",
                )
            )
        if backend.type != "local" or backend.home_dir is None:
            continue
        path = ("backends", name, "home_dir")
        fields = {field for _, field, _, _ in string.Formatter().parse(backend.home_dir) if field is not None}
        unknown = sorted(fields - {"username", "account"})
        if unknown:
            issues.append(ConfigIssue(path, f"unknown placeholder {{{unknown[0]}}}; use {{username}} or {{account}}"))
        elif backend.home_dir == data_dir or backend.home_dir.startswith(data_dir.rstrip("/") + "/"):
            issues.append(
                ConfigIssue(path, f"homes cannot be inside hub.data_dir ({data_dir}), which only the hub's account may enter")
            )
    return issues


def _user_name_issues(deployment: Deployment) -> list[ConfigIssue]:
    """Names the YAML gives to people (admins, group members) must be valid hub names, in normal form."""

    longest = username_max_length(deployment.account_prefixes)
    named: list[tuple[tuple[str | int, ...], str]] = [
        (("hub", "admin_users", i), name) for i, name in enumerate(deployment.hub.admin_users)
    ]
    named += [
        (("auth", "groups", group, i), name)
        for group, members in deployment.auth.groups.items()
        for i, name in enumerate(members)
    ]
    issues = []
    for path, name in named:
        try:
            normal = check_username(name, longest)
        except InvalidUsername as invalid:
            issues.append(ConfigIssue(path, f"{name!r}: {invalid}"))
            continue
        if normal != name:
            issues.append(ConfigIssue(path, f"{name!r}: user names are lower case; write {normal!r}"))
    return issues
