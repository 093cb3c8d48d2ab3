"""``hpclab-hub reload``: check a changed YAML, then have the running hub take it up without stopping any server.

The YAML is checked here first (as ``hpclab-hub run`` would: every problem with its key path and line); a YAML
that fails is never sent: the running hub is not touched and the command exits 1. A good one: the hub named by
``data_dir/jupyterhub.pid`` (it must be running this very YAML file) gets SIGHUP, checks the file again and
replaces itself, keeping its servers and proxy (``hpclab_hub.reload``); this command waits until the new hub
answers on its API, or reports the hub's own refusal.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from hpclab_hub.cli.common import _load_or_report
from hpclab_hub.config import Deployment
from hpclab_hub.reload import read_state, start_problem


def running_hub(deployment: Deployment, config_path: Path) -> tuple[int | None, str]:
    """(pid of the hub running ``config_path``, '') or (None, why there is none)."""
    pid_file = deployment.hub.data_dir / "jupyterhub.pid"
    try:
        pid = int(pid_file.read_text().strip())
        environ = psutil.Process(pid).environ()
    except (OSError, ValueError):
        return None, f"no hub is running with data_dir {deployment.hub.data_dir} (no {pid_file}): start it with hpclab-hub run"
    except psutil.NoSuchProcess:
        return None, f"no hub is running: {pid_file} names pid {pid}, which has ended"
    except psutil.AccessDenied:
        return None, f"pid {pid} ({pid_file}) is not readable by this account: run reload as the hub's account (root)"
    running = environ.get("HPCLAB_CONFIG", "")
    if not running or Path(running).resolve() != config_path:
        return None, f"pid {pid} ({pid_file}) runs {running or 'no HPCLab YAML'}, not {config_path}"
    return pid, ""


def _hub_api_answers(deployment: Deployment) -> bool:
    hub = deployment.hub
    host = f"[{hub.hub_ip}]" if ":" in hub.hub_ip else hub.hub_ip or "127.0.0.1"
    try:
        with urllib.request.urlopen(f"http://{host}:{hub.hub_port}{hub.base_url}hub/api/", timeout=2) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def cmd_reload(args: argparse.Namespace) -> int:
    config_path = Path(args.config).resolve()
    deployment = _load_or_report(args.config)
    if deployment is None:
        print("hpclab-hub: reload refused: fix the errors above; the running hub is unchanged.", file=sys.stderr)
        return 1
    problem = start_problem(deployment, config_path)
    if problem:
        print(f"hpclab-hub: reload refused: {problem}; the running hub is unchanged.", file=sys.stderr)
        return 1
    pid, why = running_hub(deployment, config_path)
    if pid is None:
        print(f"hpclab-hub: reload: {why}", file=sys.stderr)
        return 1
    sent = time.time()
    os.kill(pid, signal.SIGHUP)
    deadline, reloading = time.monotonic() + args.timeout, False
    while time.monotonic() < deadline:
        state = read_state(deployment.hub.data_dir)
        if float(state.get("at", 0)) >= sent:
            if state.get("state") == "refused":
                for issue in state.get("issues", []):
                    print(f"hpclab-hub: reload refused by the hub: {issue}", file=sys.stderr)
                return 1
            reloading = True
        if reloading and _hub_api_answers(deployment):
            print(f"hpclab-hub: reloaded {config_path} (hub pid {pid}); running servers kept")
            return 0
        time.sleep(0.2)
    print(f"hpclab-hub: reload: the hub (pid {pid}) did not answer within {args.timeout:.0f} s; see its log", file=sys.stderr)
    return 1
