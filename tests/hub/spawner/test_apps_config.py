"""A profile's apps in the deploy YAML (issue 30): checked by name with key path and line, shown on the form, and
handed to the server (HPCLAB_APPS for hpclab.apps, the limits for jupyter-resource-usage). The apps themselves run
in tests/e2e/test_apps_browser.py."""

from __future__ import annotations

import logging

import pytest

from hpclab_hub.config import ConfigError, parse_deployment
from hpclab_hub.spawner.environment import profile_env, server_args
from hpclab_hub.spawner.form import render_profile_form

YAML = """\
backends:
  local: {type: local}
profiles:
  - slug: dl
    display_name: Deep learning
    backend: local
    memory: 4G
    cpus: 2
    apps: %s
  - slug: plain
    display_name: Plain
    backend: local
"""


def test_unknown_or_repeated_apps_are_refused_with_key_path_and_line(tmp_path):
    for apps, message in (("[tensorboard, vscodee]", "profiles[0].apps[1]: unknown app 'vscodee'; the apps HPCLab knows: "),
                          ("[tensorboard, tensorboard]", "profiles[0].apps: 'tensorboard' is named twice")):
        with pytest.raises(ConfigError) as caught:
            parse_deployment(YAML % apps, tmp_path)
        (issue,) = caught.value.issues
        assert str(issue).startswith(message) and str(issue).endswith("(line 9)"), str(issue)


def test_the_profiles_apps_and_limits_reach_the_server_and_the_form(tmp_path):
    deployment = parse_deployment(YAML % "[tensorboard]", tmp_path)
    dl, plain = deployment.profiles
    env = profile_env(deployment, dl, "")
    assert (env["HPCLAB_APPS"], env["MEM_LIMIT"], env["CPU_LIMIT"]) == ("tensorboard", str(4 * 1024**3), "2")
    plain_env = profile_env(deployment, plain, "")
    assert plain_env["HPCLAB_APPS"] == "" and "MEM_LIMIT" not in plain_env  # unlimited: no limit shown
    args = server_args(deployment, dl, logging.getLogger("test"))
    # hpclab.apps in place of jupyter-server-proxy's own extension, which would serve every installed app
    assert "--ServerApp.jpserver_extensions=hpclab.apps=True" in args
    assert "--ServerApp.jpserver_extensions=jupyter_server_proxy=False" in args
    html = render_profile_form(deployment.profiles)
    assert html.count('class="hpclab-apps"') == 1 and "Apps: TensorBoard" in html


def test_the_desktop_app_turns_its_page_extension_on_for_its_profile_only(tmp_path):
    """jupyter-remote-desktop-proxy serves the desktop's page (<server>/desktop/) from a server extension that is
    off unless the profile has the `desktop` app."""
    deployment = parse_deployment(YAML % "[desktop]", tmp_path)
    desk, plain = deployment.profiles
    log = logging.getLogger("test")
    assert "--ServerApp.jpserver_extensions=jupyter_remote_desktop_proxy=True" in server_args(deployment, desk, log)
    assert "--ServerApp.jpserver_extensions=jupyter_remote_desktop_proxy=False" not in server_args(deployment, desk, log)
    assert "--ServerApp.jpserver_extensions=jupyter_remote_desktop_proxy=False" in server_args(deployment, plain, log)
    assert profile_env(deployment, desk, "")["HPCLAB_APPS"] == "desktop"
    assert "Apps: Desktop" in render_profile_form(deployment.profiles)
