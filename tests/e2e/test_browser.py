"""A real browser (Debian's chromium via Playwright) from login to a notebook that reports its cores."""

from __future__ import annotations

import time

import pytest

from support.browsertools import browser_login, run_in_new_notebook, session_field
from support.hubtools import login, stop_server


pytestmark = [pytest.mark.hub, pytest.mark.browser]


def test_admin_logs_in_picks_cpu_profile_and_notebook_reports_its_cores(hub, browser, artifacts):
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.set_default_timeout(60_000)
    try:
        browser_login(page, hub, "admin")

        page.wait_for_url("**/hub/spawn**")
        assert page.locator("input[name=profile][value=gpu-1]").count() == 1  # admin is in gpu-users
        page.screenshot(path=str(artifacts / "spawn-form.png"), full_page=True)
        page.check("input[name=profile][value=cpu-small]")
        page.click("form#spawn_form [type=submit]")

        page.wait_for_url("**/user/admin/lab**", timeout=120_000)
        run_in_new_notebook(page, "import hpclab; hpclab.session()")
        cores = session_field(page, "cores")
        page.screenshot(path=str(artifacts / "jupyterlab-session.png"), full_page=True)
        assert cores == "1", "the cpu-small profile gives one core"

        # a second window of the same lab gets a workspace of its own, decided by hpclab's Web Lock on the name
        # (JupyterLab's own resolver, which waits 200-500 ms on every page load to decide it, is off: issue 32)
        config = page.evaluate("JSON.parse(document.getElementById('jupyter-config-data').textContent)")
        assert "@jupyterlab/apputils-extension:resolver" in config["disabledExtensions"]
        second = page.context.new_page()
        second.goto(page.url.split("/lab")[0] + "/lab")
        second.wait_for_url("**/lab/workspaces/auto-*", timeout=60_000)
        second.locator(".jp-LauncherCard").first.wait_for(timeout=60_000)  # and it starts
        assert "/lab/workspaces/" not in page.url  # the first window keeps the default workspace
        second.close()

        # the recent documents as JupyterLab keeps them (hpclab's load writes them back only when checking changed
        # them, issue 32): a workspace whose list names a file that is gone, and the notebook made above
        workspace = f"{page.url.split('/lab')[0]}/lab/api/workspaces/recents-check"
        recent = {"root": config["serverRoot"], "contentType": "notebook", "factory": "Notebook"}
        listed = {"opened": [{**recent, "path": "gone.ipynb"}, {**recent, "path": "Untitled.ipynb"}], "closed": []}
        answer = page.evaluate(
            """async ([url, recents]) => {
                const xsrf = decodeURIComponent((document.cookie.match(/_xsrf=([^;]+)/) || ['', ''])[1]);
                const body = {data: {'docmanager:recents': recents}, metadata: {id: 'recents-check'}};
                const put = await fetch(url, {method: 'PUT', headers: {'X-XSRFToken': xsrf}, body: JSON.stringify(body)});
                return put.status;
            }""",
            [workspace, listed],
        )
        assert answer == 204
        third = page.context.new_page()
        third.goto(page.url.split("/lab")[0] + "/lab/workspaces/recents-check")
        third.locator(".jp-LauncherCard, .jp-NotebookPanel").first.wait_for(timeout=60_000)

        def kept() -> list[str]:
            data = third.evaluate(
                """async url => {
                    const xsrf = decodeURIComponent((document.cookie.match(/_xsrf=([^;]+)/) || ['', ''])[1]);
                    return (await (await fetch(url, {headers: {'X-XSRFToken': xsrf}})).json()).data;
                }""",
                workspace,
            )
            return [entry["path"] for entry in data.get("docmanager:recents", {}).get("opened", [])]

        deadline = time.monotonic() + 30
        while kept() != ["Untitled.ipynb"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert kept() == ["Untitled.ipynb"], "the gone file should have left the recent documents, the notebook stay"
        third.close()
    except Exception:
        page.screenshot(path=str(artifacts / "browser-failure.png"), full_page=True)
        raise
    finally:
        page.context.close()
        stop_server(login(hub, "admin"), "admin")
