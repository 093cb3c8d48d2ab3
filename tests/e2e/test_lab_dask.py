"""dask dashboards in the lab (issue 30, item 4), on a real hub and Debian's chromium.

A profile with the ``dask`` lab feature gets dask-labextension; a cluster that hpclab.dask_cluster starts in a notebook
serves its dashboard on the loopback and links it through the server's proxy (``/user/<name>/proxy/<port>/``); the
dask panel finds that link in the notebook's kernel and shows the live cluster's plots. A profile without the feature
gets none of it: no dashboard, no link, no panel.
"""

from __future__ import annotations

import os
import re

import pytest

from support.browsertools import browser_login, run_in_new_notebook
from support.docs_images import docs_image
from support.hubtools import home_of, hub_yaml, login, started_hub, stop_server
from support.labsteps import DASK_CLUSTER, show_dask_dashboard

pytestmark = [pytest.mark.hub, pytest.mark.browser]

@pytest.fixture(scope="module")
def dask_hub(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dask-hub")
    profiles = [
        {"slug": "sweeps", "display_name": "Sweeps", "backend": "local", "cpus": 1, "memory": "3G", "lab_features": ["dask"]},
        {"slug": "plain", "display_name": "Plain", "backend": "local", "cpus": 1, "memory": "3G", "default": True},
    ]
    with started_hub(workdir, hub_yaml(workdir / "state", profiles=profiles), accounts=("alice",)) as hub:
        yield hub


def _start_cluster(page, hub, slug: str) -> str:
    """alice starts ``slug`` from the form and a cluster in a new notebook; returns what the cell printed."""
    browser_login(page, hub, "alice")
    page.wait_for_url("**/hub/spawn**")
    page.check(f"#profile-{slug}")
    page.click("form#spawn_form [type=submit]")
    page.wait_for_url("**/user/alice/lab**", timeout=240_000)
    run_in_new_notebook(page, DASK_CLUSTER)
    output = page.locator(".jp-OutputArea-output", has_text="DASHBOARD=").first
    output.wait_for(timeout=180_000)
    return output.inner_text()


def test_the_dask_panel_shows_the_dashboard_of_a_live_cluster_through_the_proxy(dask_hub, browser, artifacts):
    alice = login(dask_hub, "alice")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(90_000)
    try:
        printed = _start_cluster(page, dask_hub, "sweeps")
        link = re.search(r"DASHBOARD=(\S+)", printed).group(1)
        assert re.fullmatch(r"/user/alice/proxy/\d+/status", link), printed
        assert printed.rstrip().endswith(" 200 285")  # the dashboard answers, and the cluster ran the tasks
        base = dask_hub.user_url("alice")
        assert alice.http.get(base + "lab").status_code == 200  # logs in to the server (OAuth)
        plots = alice.http.get(base + link.removeprefix("/user/alice/").replace("status", "individual-plots.json"))
        assert plots.status_code == 200 and "Individual Task Stream" in plots.json(), plots.text[:300]

        # the dask panel: its search button asks the notebook's kernel for the link, then lists the cluster's plots;
        # a plot opens in a lab panel, an iframe of the dashboard through the proxy
        show_dask_dashboard(page, link)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(docs_image(artifacts, "lab-dask.png")))
    except Exception:
        page.screenshot(path=str(artifacts / "lab-dask-failure.png"))
        raise
    finally:
        page.close()
        stop_server(alice, "alice")


def test_without_the_feature_the_cluster_has_no_dashboard_and_the_lab_no_panel(dask_hub, browser, artifacts):
    alice = login(dask_hub, "alice")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(90_000)
    try:
        printed = _start_cluster(page, dask_hub, "plain")
        assert printed.rstrip().endswith(" 404 285") and "/proxy/" not in printed, printed  # no dashboard, no link
        assert page.locator('.jp-SideBar [data-id="dask-dashboard-launcher"]').count() == 0
    except Exception:
        page.screenshot(path=str(artifacts / "lab-dask-plain-failure.png"))
        raise
    finally:
        page.close()
        stop_server(alice, "alice")


def test_the_panels_new_button_makes_an_hpclab_cluster_of_the_servers_size(dask_hub):
    """dask-labextension's "+NEW" (``PUT <server>/dask/clusters``) starts hpclab.dask_cluster.lab_cluster in the server:
    one single-threaded worker per core of the allocation (the profile's 1 CPU) with its memory (3G), hpclab's worker
    environment, and the dashboard on the loopback, linked through the server's proxy."""
    from distributed import Client, Security

    alice = login(dask_hub, "alice")
    assert alice.post_spawn("alice", "sweeps").status_code == 302
    try:
        alice.wait_ready("alice", timeout=180)
        base = dask_hub.user_url("alice")
        assert alice.http.get(base + "lab").status_code == 200  # logs in to the server (OAuth)
        xsrf = alice.http.cookies.get("_xsrf", "", domain=f"alice.{dask_hub.config['hub']['public_host']}") or ""
        made = alice.http.put(base + "dask/clusters", headers={"X-XSRFToken": xsrf}, timeout=120)
        assert made.status_code == 200, made.text[:500]
        model = made.json()
        assert (model["workers"], model["cores"], model["memory"]) == (1, 1, "3.00 GiB"), model
        assert re.fullmatch(r"/user/alice/proxy/\d+/status", model["dashboard_link"]), model
        assert model["scheduler_address"].startswith("tls://127.0.0.1:")  # only alice's key gets in (test_dask_cluster_tls)
        dashboard = alice.http.get(base + model["dashboard_link"].removeprefix("/user/alice/"), timeout=60)
        assert dashboard.status_code == 200 and "Dask" in dashboard.text
        tls = home_of(dask_hub.config["hub"]["data_dir"], "alice") / ".config" / "hpclab" / "dask-tls"
        assert (tls / "key.pem").stat().st_mode & 0o077 == 0
        keys = {f"tls_{role}_{part}": str(tls / f"{part}.pem") for role in ("client", "scheduler", "worker")
                for part in ("cert", "key")}
        alices = Security(require_encryption=True, tls_ca_file=str(tls / "cert.pem"), **keys)  # root reads alice's key
        # hpclab's worker environment: zarr keeps to 1 thread
        with Client(model["scheduler_address"], security=alices, timeout=60) as client:
            assert list(client.run(lambda: os.environ.get("ZARR_THREADING__MAX_WORKERS")).values()) == ["1"]
        assert [c["id"] for c in alice.http.get(base + "dask/clusters").json()] == [model["id"]]
        gone = alice.http.delete(base + f"dask/clusters/{model['id']}", headers={"X-XSRFToken": xsrf}, timeout=60)
        assert gone.status_code in (200, 204) and alice.http.get(base + "dask/clusters").json() == []
    finally:
        stop_server(alice, "alice")
