"""The hub load benchmark, small: 3 users log in, spawn at once, open JupyterLab, run a cell and stop,
on the local backend, with 0 failures; its results file holds every figure the full run reports.
(The full runs, 20 local and 30 SLURM users, are benchmarks, not tests: see docs/design/scale.md.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from support.paths import REPO_ROOT

pytestmark = [pytest.mark.hub, pytest.mark.skipif(os.geteuid() != 0, reason="servers run as their users' accounts: needs root")]


def test_three_users_at_once_all_ready_with_the_figures_recorded(tmp_path):
    out = tmp_path / "hub_load.json"
    env = dict(os.environ, PATH=f"{REPO_ROOT / '.venv/node/node_modules/.bin'}:{os.environ['PATH']}")
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "hub_load.py"), "--backend", "local", "--users", "3",
                           "--concurrency", "3", "--baseline", "2", "--compare-bare", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert (result["users"], result["concurrency"], result["spawn_failures"]) == (3, 3, 0)
    for key in ("spawn_p50_s", "spawn_p95_s", "api_p50_ms", "api_p99_ms", "hub_cpu_s", "hub_rss_mb", "users_listing_ratio"):
        assert isinstance(result[key], (int, float)) and result[key] > 0, (key, result[key])
    assert result["idle"]["api_samples"] > 0 and result["lab_and_cell"]["n"] == 3
    assert result["spawn_p50_s"] <= result["spawn_p95_s"] <= result["all_ready_s"]
    assert "users_listing_ratio" in proc.stdout and "results:" in proc.stdout
