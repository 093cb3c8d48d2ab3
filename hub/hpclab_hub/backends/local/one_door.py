"""One door to the hub: user code reaches the hub, the proxy's API and other users' servers only through the proxy.

A firewall rule by account on the loopback (nftables ``meta skuid`` on the OUTPUT hook, which sees the uid of
the process that opened the connection): connections to the hub's own port and to the proxy's REST API are
refused unless they come from the hub's account (the hub itself, its proxy, its managed services such as the
idle culler); a connection to a local server's port is refused unless it comes from the hub's account or the
server's own account. Servers (and their kernels, which share their uid) reach the hub API through the
proxy's public address instead (``Spawner.hub_connect_url``), so the last ``X-Forwarded-For`` entry the hub
reads is always written by the proxy.

Users' accounts (regular accounts, uid from ``UID_MIN`` of /etc/login.defs up, and every account a server ran
as) reach the loopback only from 127.0.0.1 and ::1: any other source (an unprivileged socket may bind any of
127.0.0.0/8) is refused, so every request from users' code counts as one address in the login lockout and the
sign-up limit, and none can pose as a trusted proxy such as nginx on 127.0.0.2. System accounts (nginx's
www-data) and the hub's own keep any loopback source.

Each hub has its own table, ``inet hpclab_door_<hub_port>``, so several hubs (tests, a staging hub) on one
machine never touch each other's rules. The table outlives a hub restart (servers keep running and keep their
protection); the hub rewrites its rules at every start and keeps the set of server ports.

Needs root (CAP_NET_ADMIN) and the ``nft`` command (Debian's nftables package). Without them the door is open:
``hpclab-hub check`` and the hub's log say so (``door_note``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

import psutil

log = logging.getLogger("JupyterHub")

TABLE_PREFIX = "hpclab_door_"
LOGIN_DEFS = "/etc/login.defs"


def first_user_uid(login_defs: str = LOGIN_DEFS) -> int:
    """Where regular (users') accounts start: ``UID_MIN`` of /etc/login.defs, as useradd reads it; 1000 without one."""
    try:
        with open(login_defs) as handle:
            lines = handle.readlines()
    except OSError:  # no login.defs: useradd's own default
        return 1000
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "UID_MIN" and words[1].isdigit():
            return int(words[1])
    return 1000


class DoorError(RuntimeError):
    """nft refused a change (the message is nft's own)."""


def door_unavailable() -> str:
    """Why this process cannot keep the door ('' when it can): nftables needs root and the nft command."""
    if os.geteuid() != 0:
        return "the hub runs without root, so it cannot install firewall rules"
    if shutil.which("nft") is None:
        return "the nft command is missing (apt-get install nftables)"
    return ""


def _nft(script: str) -> None:
    result = subprocess.run(["nft", "-f", "-"], check=False, input=script, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise DoorError(result.stderr.strip() or f"nft exited with {result.returncode}")


@dataclass(frozen=True)
class Door:
    """The rules of one hub: its API port, the proxy's API port, and the account both run as."""

    hub_port: int
    proxy_api_port: int
    hub_uid: int

    @property
    def table(self) -> str:
        return f"{TABLE_PREFIX}{self.hub_port}"

    def rules(self) -> str:
        """The nft script that (re)writes this hub's chains; the sets of server ports and accounts keep their elements."""
        t = f"inet {self.table}"
        uid = self.hub_uid
        return "\n".join(
            [
                f"add table {t}",
                f"add set {t} server_ports {{ type inet_service; }}",
                f"add set {t} server_owners {{ type inet_service . uid; }}",
                # every account a server ran as (even one below UID_MIN, such as an existing account)
                f"add set {t} server_uids {{ type uid; }}",
                # the hub's pid: a hub still starting (not listening yet) keeps its table when another hub sweeps
                f"add set {t} hub_pid {{ type mark; }}",
                f"flush set {t} hub_pid",
                f"add element {t} hub_pid {{ {os.getpid()} }}",
                f"add chain {t} output {{ type filter hook output priority 0; policy accept; }}",
                f"flush chain {t} output",
                # a user's process on the loopback: 127.0.0.1 or ::1 as its source, nothing else
                f"add chain {t} refuse",
                f"flush chain {t} refuse",
                f"add rule {t} refuse meta l4proto tcp reject with tcp reset",
                f"add rule {t} refuse drop",
                f"add chain {t} user_loopback",
                f"flush chain {t} user_loopback",
                f"add rule {t} user_loopback ip saddr 127.0.0.1 return",
                f"add rule {t} user_loopback ip6 saddr ::1 return",
                f"add rule {t} user_loopback ip saddr 127.0.0.0/8 jump refuse",
                f"add rule {t} user_loopback ip daddr 127.0.0.0/8 jump refuse",
                f"add rule {t} user_loopback ip6 daddr ::1 jump refuse",
                f'add rule {t} output oifname "lo" meta skuid != {uid} meta skuid >= {first_user_uid()} jump user_loopback',
                f'add rule {t} output oifname "lo" meta skuid != {uid} meta skuid @server_uids jump user_loopback',
                # the hub's API and the proxy's REST API: the hub's own account only (hub, proxy, managed services)
                (
                    f'add rule {t} output oifname "lo" tcp dport {{ {self.hub_port}, {self.proxy_api_port} }} '
                    f"meta skuid != {uid} reject with tcp reset"
                ),
                # a server's port: the hub's account (the proxy, the hub's checks) and the server's own account
                (
                    f'add rule {t} output oifname "lo" tcp dport @server_ports meta skuid != {uid} '
                    "tcp dport . meta skuid != @server_owners reject with tcp reset"
                ),
                "",
            ]
        )

    def install(self) -> None:
        _nft(self.rules())

    def add_server(self, port: int, uid: int) -> None:
        """Only ``uid`` (and the hub's account) may connect to ``port`` on this machine from now on."""
        t = f"inet {self.table}"
        _nft(
            f"add element {t} server_uids {{ {uid} }}\nadd element {t} server_owners {{ {port} . {uid} }}\n"
            f"add element {t} server_ports {{ {port} }}\n"
        )

    def remove_server(self, port: int, uid: int) -> None:
        """Forget ``port`` (its server stopped; the account stays in server_uids); a port already gone is no error."""
        t = f"inet {self.table}"
        for element in (f"server_ports {{ {port} }}", f"server_owners {{ {port} . {uid} }}"):
            with contextlib.suppress(DoorError):
                _nft(f"delete element {t} {element}\n")

    def remove(self) -> None:
        """Delete this hub's table (tests; a hub taken down for good)."""
        with contextlib.suppress(DoorError):
            _nft(f"delete table inet {self.table}\n")


def _nft_json(*command: str) -> list[dict]:
    result = subprocess.run(["nft", "-j", *command], check=False, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        return []
    return json.loads(result.stdout or "{}").get("nftables", [])


def sweep_stale_tables() -> list[str]:
    """Delete the tables of hubs that are gone: their hub process has ended and nothing listens on their hub port
    nor on any server port they protect (a hub that stopped with its servers, a test hub). A hub whose servers still
    run keeps its table, and so does a hub still starting (its pid is in the table)."""
    listening = {c.laddr.port for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
    removed = []
    for entry in _nft_json("list", "tables"):
        name = entry.get("table", {}).get("name", "")
        if entry.get("table", {}).get("family") != "inet" or not name.startswith(TABLE_PREFIX):
            continue
        hub_port = name.removeprefix(TABLE_PREFIX)
        ports = {int(hub_port)} if hub_port.isdigit() else set()
        for item in _nft_json("list", "set", "inet", name, "server_ports"):
            ports.update(e for e in item.get("set", {}).get("elem", []) if isinstance(e, int))
        pids = {
            e
            for item in _nft_json("list", "set", "inet", name, "hub_pid")
            for e in item.get("set", {}).get("elem", [])
            if isinstance(e, int)
        }
        if not ports & listening and not any(psutil.pid_exists(pid) for pid in pids):
            with contextlib.suppress(DoorError):
                _nft(f"delete table inet {name}\n")
                removed.append(name)
    return removed


#: the door of the hub running in this process (set at configuration when it could be installed)
_door: Door | None = None


def current_door() -> Door | None:
    return _door


def open_door(hub_port: int, proxy_api_port: int) -> tuple[Door | None, str]:
    """Install this hub's rules; (the door, '') or (None, why not). Called once as the hub loads its configuration."""
    global _door
    why = door_unavailable()
    if why:
        return None, why
    door = Door(hub_port, proxy_api_port, os.geteuid())
    try:
        sweep_stale_tables()
        door.install()
    except (DoorError, OSError, ValueError, subprocess.TimeoutExpired) as failed:
        return None, f"nft refused the rules: {failed}"
    _door = door
    return door, ""


def door_note(multi_user: bool) -> str:
    """What ``hpclab-hub check`` says about the door on this machine ('' when it will be kept)."""
    why = door_unavailable()
    if not why:
        return ""
    if not multi_user:
        return (
            f"one door to the hub: off ({why}); on a one-person trial every server runs as the hub's own account, "
            'so a firewall by account could not tell them apart anyway (docs/admin-guide.md, "One door to the hub")'
        )
    return (
        f"one door to the hub: OFF ({why}): code in any user's kernel can reach the hub's own port, the proxy's "
        'API and other users\' server ports directly (docs/admin-guide.md, "One door to the hub")'
    )
