"""/proc/<pid>/environ after a process changed its environment without exec (hub/hpclab_hub/ops/shown_environ.py)."""

from __future__ import annotations

import json
import subprocess
import sys


PROBE = """
import json, os, sys, threading, time
from pathlib import Path
from hpclab_hub.ops.shown_environ import show_environ
result = {}
os.environ.pop("HPCLAB_SECRET_PROBE")
result["shown"] = show_environ({"HPCLAB_CONFIG": "/etc/hpclab/hub.yaml", "ÜMLAUT": "wert"})
result["environ"] = Path("/proc/self/environ").read_bytes().decode()
result["empty"] = show_environ({}) and Path("/proc/self/environ").read_bytes() == b"\\0"
pieces = [bytearray(4096) for _ in range(20000)]  # the heap still grows after the program break was passed back
result["allocated"] = len(pieces)
sleeper = threading.Thread(target=time.sleep, args=(1,))
sleeper.start()
result["with_threads"] = show_environ({"A": "1"})
print(json.dumps(result))
"""


def test_the_kernel_shows_the_new_environment_and_no_longer_the_one_started_with():
    env = {"PATH": "/usr/bin:/bin", "HPCLAB_SECRET_PROBE": "s3cret-value", "PYTHONPATH": ":".join(sys.path)}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["shown"] is True
    assert result["environ"] == "HPCLAB_CONFIG=/etc/hpclab/hub.yaml\0ÜMLAUT=wert\0"
    assert "s3cret-value" not in result["environ"]
    assert result["empty"] is True and result["allocated"] == 20000
    assert result["with_threads"] is False  # refused: the break it would pass back could be stale
