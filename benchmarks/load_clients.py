"""What each simulated user does in the load benchmarks (hub_load, hub_churn): a whole visit (spawn,
JupyterLab through the proxy, one cell over the kernel's websocket), and a plain hub's user token."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import requests

from harness import Api, BenchError


async def run_cell(url: str, token: str, code: str, timeout: float) -> str:
    """Execute ``code`` over the kernel's websocket (as JupyterLab does); its stdout."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"}, connect_timeout=timeout,
                                             request_timeout=timeout))  # tornado's 20 s is short on a machine this busy
    msg_id = uuid.uuid4().hex
    await ws.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "bench", "session": uuid.uuid4().hex,
                   "date": "", "version": "5.3"}, "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False},
    }))
    out, deadline = [], time.monotonic() + timeout
    while True:
        raw = await asyncio.wait_for(ws.read_message(), max(0.1, deadline - time.monotonic()))
        if raw is None:
            raise BenchError("kernel websocket closed")
        msg = json.loads(raw)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["header"]["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["header"]["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            ws.close()
            return "".join(out)


def user_session(api: Api, profile: str, timeout: float) -> dict[str, Any]:
    """One user's whole visit: spawn (form-equivalent POST) to ready, JupyterLab through the proxy, one cell."""
    record: dict[str, Any] = {"user": api.user}
    spawned = api.spawn({"profile": profile}, poll=0.5, timeout=timeout)
    record["spawn_s"] = spawned["ready_s"]
    token = api.http.headers["Authorization"].split()[1]
    base = api.hub.user_url(api.user)
    t0 = time.perf_counter()
    lab = api.http.get(f"{base}/lab", timeout=60)
    if lab.status_code != 200:
        raise BenchError(f"{api.user}: JupyterLab answered {lab.status_code} through the proxy")
    kernel = api.http.post(f"{base}/api/kernels", json={}, timeout=120).json()
    try:
        ws = f"{base}/api/kernels/{kernel['id']}/channels".replace("http", "ws", 1)
        out = asyncio.run(run_cell(ws, token, "print(6 * 7)", timeout=120))
        if out.strip() != "42":
            raise BenchError(f"{api.user}: the cell printed {out!r}")
    finally:
        api.http.delete(f"{base}/api/kernels/{kernel['id']}", timeout=60)
    record["lab_and_cell_s"] = round(time.perf_counter() - t0, 3)
    return record


def bare_user(hub: Any, name: str) -> Api:
    """A user's own token on the plain hub (made with the service's token), as our users have on ours."""
    made = requests.post(f"{hub.url}/hub/api/users/{name}/tokens", json={"note": "hub_load", "expires_in": 7200}, timeout=30,
                         headers={"Authorization": f"token {hub.service_token}"})
    if made.status_code != 201:
        raise BenchError(f"bare: no token for {name}: {made.status_code} {made.text}")
    return Api(hub, name, made.json()["token"])
