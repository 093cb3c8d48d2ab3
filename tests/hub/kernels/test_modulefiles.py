"""The YAML's `modules` section and HPCLab's modulefiles for the curated kernels (issue 30), checked with Debian's
Lmod itself: a server gets Lmod's settings only where its profile has the `modules` feature, the folders are where the
YAML says (relative to it), and Lmod loads the written modulefile into the kernel's Python and settings."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hpclab_hub.config import parse_deployment
from hpclab_hub.kernels.modulefiles import lua_value, write_modulefiles
from hpclab_hub.spawner.environment import profile_env

LMOD = Path("/usr/share/lmod/lmod")
YAML = """\
backends:
  local: {type: local}
profiles:
  - {slug: mods, display_name: Modules, backend: local, lab_features: [modules]}
  - {slug: plain, display_name: Plain, backend: local}
kernels:
  mri:
    display_name: MRI
    runtime: {type: venv, prefix: envs/mri}
    environment: {SUBJECTS_DIR: "$HOME/subjects", FS_LICENSE: "~/license.txt", LEVEL: "3"}
    modules: ["module load dcm2niix/1.0", "export X=1"]
  container:
    display_name: In an image
    runtime: {type: apptainer, image: mri.sif}
modules:
  curated: modulefiles
  modulepath: [/opt/site/modulefiles]
"""


def test_only_a_profile_with_the_modules_feature_gets_lmod_and_the_yamls_folders(tmp_path):
    deployment = parse_deployment(YAML, tmp_path)
    mods, plain = deployment.profiles
    env = profile_env(deployment, mods, "")
    assert env["MODULEPATH"] == f"{tmp_path / 'modulefiles'}:/opt/site/modulefiles"  # curated first, relative to the YAML
    assert env["LMOD_CMD"] == "/usr/share/lmod/lmod/libexec/lmod" and env["BASH_ENV"] == "/usr/share/lmod/lmod/init/bash"
    assert not {"MODULEPATH", "LMOD_CMD", "BASH_ENV"} & set(profile_env(deployment, plain, ""))


def test_environment_values_become_lua_read_at_load_time():
    assert lua_value("$HOME/subjects") == '(os.getenv("HOME") or "") .. "/subjects"'
    assert lua_value("~/x") == '(os.getenv("HOME") or "") .. "/x"'
    assert lua_value('a"b${USER}') == '"a\\"b" .. (os.getenv("USER") or "")'
    assert lua_value("") == '""'


@pytest.mark.skipif(not (LMOD / "libexec" / "lmod").exists(), reason="Debian's lmod is not installed (make system-packages)")
def test_lmod_loads_the_written_modulefile_into_the_kernels_python_and_settings(tmp_path):
    deployment = parse_deployment(YAML, tmp_path)
    written = write_modulefiles(deployment)
    assert written == [tmp_path / "modulefiles" / "mri.lua"]  # the image's kernel has no prefix to put on PATH
    site = tmp_path / "site"
    (site / "dcm2niix").mkdir(parents=True)
    (site / "dcm2niix" / "1.0.lua").write_text('setenv("DCM2NIIX_LOADED", "yes")\n')
    env = {"HOME": "/home/someone", "PATH": "/usr/bin:/bin", "MODULEPATH": f"{tmp_path / 'modulefiles'}:{site}"}
    script = f'. {LMOD}/init/bash >/dev/null; module load mri && env'
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    prefix = tmp_path / "envs" / "mri"
    assert loaded["PATH"].split(os.pathsep)[0] == str(prefix / "bin")
    assert (loaded["VIRTUAL_ENV"], loaded["HPCLAB_ENVIRONMENT"]) == (str(prefix), "mri")
    assert loaded["PYTHONUSERBASE"] == "/home/someone/.local/hpclab/mri"  # `pip install --user` lands in the mri kernel's
    settings = (loaded["SUBJECTS_DIR"], loaded["FS_LICENSE"], loaded["LEVEL"])
    assert settings == ("/home/someone/subjects", "/home/someone/license.txt", "3")
    assert loaded["DCM2NIIX_LOADED"] == "yes"  # the kernel's `module load` line, as Lmod's load()
    assert "X" not in loaded  # a line that is not a module load is left out (said in a comment)
    assert "-- not carried over from the kernel's modules lines: export X=1" in written[0].read_text()
