"""`hpclab-hub check` warns when a profile offers an app (vscode, desktop) whose program is not installed (issue 30):
the YAML stays valid (exit 0), but the warning names the profile, the app and the missing program."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hpclab.apps import CODE_SERVER_DIR, DESKTOP_PROGRAMS

HUB_CLI = Path(sys.executable).with_name("hpclab-hub")

YAML = """\
backends:
  local:
    type: local
profiles:
  - slug: apps
    display_name: Apps
    backend: local
    apps: [tensorboard, vscode, desktop]
"""


def _check(path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HUB_CLI), "check", str(path)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_check_warns_of_an_app_whose_program_is_missing_and_not_of_one_installed(tmp_path):
    """No code-server in the folder apps look in, no TigerVNC or xfce4 on PATH: one warning per app, the YAML OK;
    with the programs `make code-server` and `make system-packages` install, no warning."""
    path = tmp_path / "hub.yaml"
    path.write_text(YAML)
    empty = tmp_path / "bin"
    empty.mkdir()
    missing = _check(path, HPCLAB_CODE_SERVER_DIR=str(tmp_path / "no-code-server"), PATH=str(empty))
    assert missing.returncode == 0, missing.stderr
    lines = missing.stdout.splitlines()
    assert lines[0].startswith(f"{path}: OK"), lines
    warnings = [line for line in lines if line.startswith(f"{path}: warning: ")]
    assert len(warnings) == 2, lines  # tensorboard is a Python package of the lock: nothing to look for
    vscode, desktop = warnings
    assert "profile 'apps' offers the vscode app (VS Code)" in vscode and str(tmp_path / "no-code-server") in vscode
    assert "make code-server" in vscode
    assert "profile 'apps' offers the desktop app (Desktop)" in desktop and "make system-packages" in desktop
    assert all(program in desktop for program in DESKTOP_PROGRAMS), desktop

    # this machine has them (`make test` installs code-server and the desktop's packages first)
    assert (CODE_SERVER_DIR / "node_modules" / "code-server").is_dir(), "make code-server first"
    present = _check(path)
    assert present.returncode == 0, present.stderr
    assert not [line for line in present.stdout.splitlines() if ": warning: " in line], present.stdout


def test_the_shipped_examples_turn_on_the_lab_features_a_centre_expects_and_check_without_warnings():
    """deploy/examples: every SLURM profile has the jobs view and modules, every GPU profile the GPU dashboards, and
    dask, collaboration and the desktop are on somewhere in the cluster examples; each checks OK here, where
    `make test` installed every app's program, with no warning."""
    from hpclab_hub.config import load_deployment
    from support.paths import REPO_ROOT

    examples = REPO_ROOT / "deploy" / "examples"
    for name in ("site.yaml", "slurm.yaml"):
        deployment = load_deployment(examples / name)
        profiles = deployment.profiles
        for profile in profiles:
            features = set(profile.lab_features)
            if deployment.backends[profile.backend].type == "slurm":
                assert {"slurm-jobs", "modules"} <= features, (name, profile.slug)
            if profile.gpus:
                assert "gpu-dashboard" in features, (name, profile.slug)
        assert {"dask", "collaboration"} <= {f for p in profiles for f in p.lab_features}, name
        assert "desktop" in {app for p in profiles for app in p.apps}, name
    gpu = load_deployment(examples / "gpu-server.yaml")
    assert all("gpu-dashboard" in p.lab_features for p in gpu.profiles if p.gpus)
    for path in sorted(examples.glob("*.yaml")):
        done = _check(path)
        assert done.returncode == 0 and done.stdout.startswith(f"{path}: OK"), done.stdout + done.stderr
        assert ": warning: " not in done.stdout, done.stdout
