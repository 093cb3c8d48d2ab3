"""Run code in a kernel of a user's running server, through the hub's proxy, as that user would."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from support.hubtools import HubClient



def user_token(client: HubClient, username: str) -> str:
    """An API token of ``username`` (their own scopes), made through the hub's REST API."""
    response = client.api("POST", f"/users/{username}/tokens", json={"note": "kernel test"})
    response.raise_for_status()
    return response.json()["token"]


def run_in_kernel(client: HubClient, username: str, code: str, timeout: float = 120) -> tuple[str, str]:
    """Start a kernel in ``username``'s server, run ``code``, return (stdout, error text), then shut the kernel down."""
    token = user_token(client, username)
    base = client.hub.user_url(username) + "api"
    headers = {"Authorization": f"token {token}"}
    kernel = client.http.post(f"{base}/kernels", headers=headers, json={}).json()
    try:
        url = base.replace("http", "ws", 1) + f"/kernels/{kernel['id']}/channels"
        ca_certs = client.http.verify if isinstance(client.http.verify, str) else None  # a test's own certificate
        return asyncio.run(_execute(url, token, code, timeout, ca_certs))
    finally:
        client.http.delete(f"{base}/kernels/{kernel['id']}", headers=headers)


async def _execute(url: str, token: str, code: str, timeout: float, ca_certs: str | None = None) -> tuple[str, str]:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    connection = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"}, ca_certs=ca_certs))
    msg_id = uuid.uuid4().hex
    message: dict[str, Any] = {
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": uuid.uuid4().hex,
                   "date": "", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }
    await connection.write_message(json.dumps(message))
    stdout, error, replied, idle = [], [], False, False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (replied and idle):
        raw = await asyncio.wait_for(connection.read_message(), max(0.1, deadline - loop.time()))
        if raw is None:
            raise RuntimeError("kernel websocket closed")
        reply = json.loads(raw)
        if reply.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = reply["header"]["msg_type"], reply["content"]
        if kind == "stream" and content.get("name") == "stdout":
            stdout.append(content["text"])
        elif kind == "error":
            error.append(f"{content['ename']}: {content['evalue']}")
        elif kind == "execute_reply":
            replied = True
        elif kind == "status" and content.get("execution_state") == "idle":
            idle = True
    connection.close()
    return "".join(stdout), "\n".join(error)


def server_environment(client: Any, name: str) -> dict[str, str]:
    """The server's environment as its kernels inherit it (a server forked by the zygote has the zygote's
    /proc/<pid>/environ: it never exec'd)."""
    out, error = run_in_kernel(client, name, "import json, os; print(json.dumps(dict(os.environ)))")
    assert error == "", error
    return json.loads(out)
