"""Single sign-on through a real OpenID Connect provider (oidc-provider on Node), driven in Debian's chromium."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests

from support.hubtools import Hub, free_port, hub_yaml


pytestmark = [pytest.mark.hub, pytest.mark.browser]

PROVIDER_DIR = Path(__file__).with_name("oidc")
USERS = {"alice": {"groups": ["gpu-users"]}, "bob": {"groups": []}, "erin": {"groups": ["hpc-admins"]},
         # names the provider issues as they are and the hub normalises or refuses
         "Grace": {"groups": []}, ".mallory": {"groups": []}, "eve\t<script>alert(1)</script>": {"groups": []}}
CLIENT_SECRET = "oidc-test-client-secret"


@pytest.fixture(scope="module")
def oidc_hub(tmp_path_factory):
    """A hub whose login is SSO through a local OpenID Connect provider with a groups claim."""
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").exists():
        subprocess.run(["npm", "install", "--silent", "--no-fund", "--no-audit"], cwd=PROVIDER_DIR, check=True)
    workdir = tmp_path_factory.mktemp("oidc-hub")
    config = hub_yaml(workdir / "state")
    provider_port = free_port()
    issuer = f"http://127.0.0.1:{provider_port}"
    callback = f"http://{config['hub']['public_host']}:{config['hub']['port']}/hub/oauth_callback"  # the hub's public name
    env = dict(os.environ, OIDC_PORT=str(provider_port), OIDC_USERS=json.dumps(USERS), OIDC_CLIENT_ID="hpclab-hub",
               OIDC_CLIENT_SECRET=CLIENT_SECRET, OIDC_REDIRECT_URI=callback)
    provider = subprocess.Popen(["node", str(PROVIDER_DIR / "provider.mjs")], env=env,
                                stdout=open(workdir / "provider.log", "w"), stderr=subprocess.STDOUT)
    for _ in range(100):
        try:
            if requests.get(f"{issuer}/.well-known/openid-configuration", timeout=1).ok:
                break
        except requests.RequestException:
            time.sleep(0.1)
    config["hub"]["admin_users"] = []
    config["auth"] = {"type": "oidc", "oidc": {"issuer": issuer, "client_id": "hpclab-hub", "admin_groups": ["hpc-admins"]}}
    os.environ["HPCLAB_OIDC_CLIENT_SECRET"] = CLIENT_SECRET  # the hub reads the secret from its environment
    hub = Hub(workdir, config)
    try:
        hub.start()
        yield hub
    finally:
        hub.stop()
        hub.kill_servers()
        provider.terminate()
        os.environ.pop("HPCLAB_OIDC_CLIENT_SECRET", None)


def sso_login(browser, hub: Hub, name: str):
    """Log in through the provider's own login and consent pages; return the page, back on the hub."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{hub.url}/hub/login")
    page.click("a#login-main, a.btn-jupyter")  # "Sign in with single sign-on"
    page.fill("input[name=login]", name)
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")
    page.click("button[type=submit]")  # consent: Continue
    page.wait_for_url(f"{hub.url}/hub/**")
    return page


def test_sso_group_member_sees_and_non_member_cannot_start_gpu_profile(oidc_hub, browser, artifacts):
    alice = sso_login(browser, oidc_hub, "alice")
    alice.goto(f"{oidc_hub.url}/hub/spawn")
    assert alice.locator("input[name=profile][value=gpu-1]").count() == 1
    alice.screenshot(path=str(artifacts / "oidc-spawn-form.png"))

    bob = sso_login(browser, oidc_hub, "bob")
    bob.goto(f"{oidc_hub.url}/hub/spawn")
    assert bob.locator("input[name=profile][value=cpu-small]").count() == 1
    assert bob.locator("input[name=profile][value=gpu-1]").count() == 0
    xsrf = next(c["value"] for c in bob.context.cookies() if c["name"] == "_xsrf" and c["path"].startswith("/hub"))
    forged = bob.request.post(f"{oidc_hub.url}/hub/spawn/bob", form={"profile": "gpu-1", "_xsrf": xsrf}, max_redirects=0)
    assert forged.status == 403 and "restricted to the groups: gpu-users" in forged.text()


def test_sso_admin_group_gets_the_admin_page(oidc_hub, browser):
    erin = sso_login(browser, oidc_hub, "erin")
    assert erin.goto(f"{oidc_hub.url}/hub/admin").status == 200
    bob = sso_login(browser, oidc_hub, "bob")
    assert bob.goto(f"{oidc_hub.url}/hub/admin").status == 403


def hub_user_names(hub: Hub) -> set[str]:
    """The user names in the hub's database (read directly: no admin session needed)."""
    database = sqlite3.connect(f"file:{Path(hub.config['hub']['data_dir']) / 'jupyterhub.sqlite'}?mode=ro", uri=True)
    try:
        return {name for (name,) in database.execute("SELECT name FROM users")}
    finally:
        database.close()


def test_sso_names_follow_the_hub_name_rule(oidc_hub, browser):
    """The provider's preferred_username passes the hub's one name rule: a name it refuses (a leading dot;
    a tab and HTML) is a refused login that says why and creates no hub user; 'Grace' lands as 'grace'."""
    for upstream, reason in ((".mallory", "must not start with a dot"),
                             ("eve\t<script>alert(1)</script>", "may hold only letters a-z, digits")):
        page = sso_login(browser, oidc_hub, upstream)
        assert "/hub/oauth_callback" in page.url
        html = page.content()
        assert "Login refused: " in html and reason in html, html[-3000:]
        assert "<script>alert(1)" not in html
        page.context.close()
    grace = sso_login(browser, oidc_hub, "Grace")
    assert "/hub/oauth_callback" not in grace.url
    grace.goto(f"{oidc_hub.url}/hub/spawn")
    assert grace.locator("input[name=profile][value=cpu-small]").count() == 1
    names = hub_user_names(oidc_hub)
    assert "grace" in names and not {"Grace", ".mallory"} & names
    assert not any("<" in name or "\t" in name or "mallory" in name for name in names)
