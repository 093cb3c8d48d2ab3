"""The hub load benchmarks, small: 3 users log in, spawn at once, open JupyterLab, run a cell and stop,
on the local backend, with 0 failures, and a plain hub given the same visits; its results file holds every
figure the full run reports. The churn check, 30 s of 2 users starting and stopping: no route left behind,
memory figures recorded. (The full runs, 20 local and 30 SLURM users at once, and an hour of churn, are
benchmarks, not tests: see docs/design/scale.md.)"""

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
                           "--concurrency", "3", "--baseline", "2", "--compare-bare", "--bare-spawns", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert (result["users"], result["concurrency"], result["spawn_failures"]) == (3, 3, 0)
    for key in ("spawn_p50_s", "spawn_p95_s", "api_p50_ms", "api_p99_ms", "hub_cpu_s", "hub_rss_mb", "users_listing_ratio"):
        assert isinstance(result[key], (int, float)) and result[key] > 0, (key, result[key])
    assert result["idle"]["api_samples"] > 0 and result["lab_and_cell"]["n"] == 3
    assert result["spawn_p50_s"] <= result["spawn_p95_s"] <= result["all_ready_s"]
    assert result["bare"]["spawn_failures"] == 0 and result["bare"]["spawn_p50_s"] > 0  # the plain hub had the same visits
    assert "users_listing_ratio" in proc.stdout and "results:" in proc.stdout


def test_churn_leaves_no_route_and_records_memory(tmp_path):
    out = tmp_path / "hub_churn.json"
    env = dict(os.environ, PATH=f"{REPO_ROOT / '.venv/node/node_modules/.bin'}:{os.environ['PATH']}")
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "hub_churn.py"), "--users", "2", "--duration", "30",
                           "--warmup", "5", "--sample", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["failures"] == 0 and result["cycles"] >= 2  # each user started, worked and stopped at least once
    # no route of a stopped server left behind (whether a 2-second sample catches a route while it is up
    # depends on how fast the cycles run: the hour-long run saw up to 6 at once)
    assert result["routes"]["idle"] == result["routes"]["end"] == 1 and result["leaked_routes"] == 0
    for name in ("hub", "proxy"):
        assert 20 < result[name]["after_warmup_mb"] <= result[name]["max_mb"], result[name]
        assert result[name]["growth_mb"] <= result["bound_mb"]
    assert len(result["samples"]) >= 10 and "growth within" in proc.stdout
