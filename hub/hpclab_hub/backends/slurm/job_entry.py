"""``hpclab-singleuser``: runs inside the SLURM job, reports a free port to the hub, then becomes the server."""

from __future__ import annotations

import json
import os
import pwd
import socket
import sys
import urllib.request
from urllib.parse import urlparse, urlunparse


def free_port() -> int:
    """A port free on this node right now."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def report_port(api_url: str, token: str, port: int) -> None:
    """POST the port to the hub with the server's token (in a header, never in a URL or argument)."""
    request = urllib.request.Request(
        f"{api_url.rstrip('/')}/hpclab/port",
        data=json.dumps({"port": port}).encode(),
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    port = free_port()
    report_port(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"], port)
    service = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:0/"))
    os.environ["JUPYTERHUB_SERVICE_URL"] = urlunparse(service._replace(netloc=f"0.0.0.0:{port}"))
    # the job has only the environment the hub handed sbatch: the account's HOME and USER where that lacks them (the
    # desktop's vncserver refuses to start without HOME; git, terminals and code-server read it)
    account = pwd.getpwuid(os.getuid())
    os.environ.setdefault("HOME", account.pw_dir)
    os.environ.setdefault("USER", account.pw_name)
    command = argv or [sys.executable, "-m", "hpclab_hub.deferred_imports", "jupyterhub-singleuser"]
    sys.stdout.flush()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
