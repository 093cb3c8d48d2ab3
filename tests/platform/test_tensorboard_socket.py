"""The TensorBoard app's command (hpclab.apps.tensorboard): TensorBoard on a Unix socket, on no TCP port."""

from __future__ import annotations

import http.client
import socket
import subprocess
import time
from pathlib import Path

import psutil

from hpclab.apps import tensorboard


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over the Unix socket at ``path``, as jupyter-server-proxy's client talks to the app."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


def test_tensorboard_serves_its_page_on_the_socket_it_is_given_and_listens_on_no_port(tmp_path):
    (tmp_path / "runs").mkdir()
    folder = tmp_path / "proxy"  # what jupyter-server-proxy makes: a private folder holding the socket
    folder.mkdir(mode=0o700)
    path = str(folder / "socket")
    spec = tensorboard(str(tmp_path))
    assert spec["unix_socket"] is True
    command = [part.replace("{unix_socket}", path) for part in spec["command"]]
    board = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not Path(path).exists():
            assert board.poll() is None, board.communicate()[0]
            assert time.monotonic() < deadline, "TensorBoard made no socket within 60 s"
            time.sleep(0.2)
        connection = UnixHTTPConnection(path)
        connection.request("GET", "/")
        answer = connection.getresponse()
        assert answer.status == 200 and b"tb-relative-root" in answer.read()
        for proc in [psutil.Process(board.pid), *psutil.Process(board.pid).children(recursive=True)]:
            assert proc.net_connections(kind="inet") == [], (proc.cmdline(), proc.net_connections(kind="inet"))
    finally:
        board.terminate()
        output = board.communicate(timeout=30)[0]
    assert f"at unix://{path}/" in output, output  # the address it prints names the socket, not a port
