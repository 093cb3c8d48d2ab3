"""TensorBoard served on a Unix socket, for the TensorBoard app (hpclab.apps): only its user can open it.

TensorBoard listens on a TCP port, and any account on the machine can connect to a port of the loopback: another
user's kernel could read this user's training runs. werkzeug, which TensorBoard serves with, binds a Unix socket for
a host of ``unix://<path>``, and jupyter-server-proxy proxies to one it makes in a private (0700) folder. Two parts
of TensorBoard assume a port: the address it prints, which here names the socket, and the info file that lets a
notebook's ``%tensorboard`` reuse a running TensorBoard by its port, which is not written.

    python -m hpclab.tensorboard_socket --logdir=runs --host=unix:///path/to/socket --port=0
"""

from __future__ import annotations

from typing import Any


def _socket_address(server: Any) -> str:
    """The socket TensorBoard serves on, as it prints it at start (it would print ``http://host:port/``)."""
    return f"{server._host}{server._flags.path_prefix.rstrip('/')}/"


def main() -> None:
    from tensorboard import program
    from tensorboard.main import run_main

    program.WerkzeugServer.get_url = _socket_address
    program.TensorBoard._register_info = lambda self, server: None  # by port: nothing to reuse for a socket
    run_main()


if __name__ == "__main__":
    main()
