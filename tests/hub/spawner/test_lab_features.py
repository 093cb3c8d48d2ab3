"""A profile's JupyterLab features (issue 30): every feature's halves are off unless its profile names it, on where it
does (server extension by argument, JupyterLab extension lifted out of disabledExtensions with what it replaces).
The features themselves run in the browser tests of each (tests/e2e)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import hpclab
from hpclab.lab_features import LAB_FEATURES, lift
from hpclab_hub.config import ConfigError, parse_deployment
from hpclab_hub.spawner.environment import OFF_UNLESS_ASKED, profile_env, server_args

YAML = """\
backends:
  local: {type: local}
profiles:
  - slug: course
    display_name: Course
    backend: local
    lab_features: %s
  - slug: plain
    display_name: Plain
    backend: local
"""
PAGE_CONFIG = Path(hpclab.__file__).parent / "lab_settings" / "page_config.json"


def test_unknown_or_repeated_features_are_refused_with_key_path_and_line(tmp_path):
    for features, message in (("[collaboration, dusk]", "profiles[0].lab_features[1]: unknown lab feature 'dusk'"),
                              ("[dask, dask]", "profiles[0].lab_features: 'dask' is named twice")):
        with pytest.raises(ConfigError) as caught:
            parse_deployment(YAML % features, tmp_path)
        (issue,) = caught.value.issues
        assert str(issue).startswith(message) and str(issue).endswith("(line 7)"), str(issue)


def test_every_feature_is_off_by_default_on_both_halves():
    disabled = json.loads(PAGE_CONFIG.read_text())["disabledExtensions"]
    for feature in LAB_FEATURES.values():
        assert all(disabled.get(name) is True for name in feature.lab_extensions), feature
        assert set(feature.server_extensions) <= set(OFF_UNLESS_ASKED), feature


def test_a_profiles_features_reach_its_server_and_no_other(tmp_path):
    deployment = parse_deployment(YAML % "[collaboration, dask]", tmp_path)
    course, plain = deployment.profiles
    log = logging.getLogger("test")
    args, plain_args = server_args(deployment, course, log), server_args(deployment, plain, log)
    assert "--ServerApp.jpserver_extensions=hpclab.lab_features=True" in args and plain_args  # it leaves the others out
    for name in ("jupyter_server_ydoc", "jupyter_server_fileid", "dask_labextension"):
        assert f"--ServerApp.jpserver_extensions={name}=True" in args
        assert f"--ServerApp.jpserver_extensions={name}=True" not in plain_args
    assert "--ServerApp.jpserver_extensions=jupyterlab_slurm=False" in args  # not asked for
    assert "--ServerApp.jpserver_extensions=dask_labextension=False" in plain_args
    assert profile_env(deployment, course, "")["HPCLAB_LAB_FEATURES"] == "collaboration,dask"
    assert profile_env(deployment, plain, "")["HPCLAB_LAB_FEATURES"] == ""


def test_lifting_a_feature_enables_its_extension_and_applies_what_it_replaces(tmp_path):
    package = tmp_path / "@jupyter" / "docprovider-extension" / "package.json"
    package.parent.mkdir(parents=True)
    package.write_text(json.dumps({"jupyterlab": {"disabledExtensions": ["@jupyterlab/filebrowser-extension:defaultFileBrowser"]}}))
    page_config = {
        "disabledExtensions": ["@jupyter/collaboration-extension", "@jupyter/docprovider-extension", "dask-labextension"],
        "federated_extensions": [{"name": name} for name in ("@jupyter/docprovider-extension", "@jupyter/collaboration-extension",
                                                             "dask-labextension", "@cmd-ntrf/jupyterlab-lmod", "@jupyterlab/git")],
    }
    lifted = lift(page_config, ["collaboration"], [str(tmp_path)])
    assert lifted["disabledExtensions"] == ["dask-labextension", "@jupyterlab/filebrowser-extension:defaultFileBrowser"]
    # the features not asked for are not on the page at all (lmod's plugin id is not its package name: disabling misses it)
    assert [entry["name"] for entry in lifted["federated_extensions"]] == [
        "@jupyter/docprovider-extension", "@jupyter/collaboration-extension", "@jupyterlab/git"]
    plain = lift({"federated_extensions": [{"name": "@cmd-ntrf/jupyterlab-lmod"}, {"name": "@jupyterlab/git"}]}, [], [])
    assert plain["federated_extensions"] == [{"name": "@jupyterlab/git"}]


def test_jupyterlab_is_told_not_to_check_its_build():
    """Extensions come with the environment, never built by a user: the build check (a request that keeps the server
    busy for up to a second or two while the lab loads, issue 32) and the build button are off."""
    from jupyter_core.paths import jupyter_path
    from jupyterlab_server.config import get_page_config

    page_config = get_page_config(jupyter_path("labextensions"), str(PAGE_CONFIG.parent))
    assert page_config["buildCheck"] is False and page_config["buildAvailable"] is False
    assert "jupyterlab-slurm" in page_config["disabledExtensions"]
