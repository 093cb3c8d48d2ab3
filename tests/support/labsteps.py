"""Steps in a JupyterLab page (issue 30) shared by the local and the SLURM backend's browser tests: the resource
display's memory limit, a git clone and commit from jupyterlab-git's panel, a dask cluster's dashboard in the dask
panel through the server's proxy, and jupyter-collaboration's share dialog: a share, a visitor editing with the
owner, the revoke that shuts the visitor out."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from hpclab.share_guard import CHECK_EVERY_MS
from support.slurmtools import wait_for

#: a cell that starts an hpclab.dask_cluster local cluster, runs tasks on it and prints its dashboard link, whether
#: the dashboard answers on the loopback, and the tasks' sum (285)
DASK_CLUSTER = (
    "from distributed import Client\n"
    "from hpclab.dask_cluster import local_cluster\n"
    "cluster = local_cluster(1, memory_limit='512MiB')\n"
    "client = Client(cluster)\n"
    "import requests\n"
    "port = cluster.scheduler_info['services']['dashboard']\n"
    "status = requests.get(f'http://127.0.0.1:{port}/status', timeout=30).status_code\n"
    "print('DASHBOARD=' + str(client.dashboard_link), status, sum(client.gather(client.map(lambda x: x * x, range(10)))))"
)


def wait_for_memory_limit(page, megabytes: int) -> None:
    """jupyter-resource-usage's status bar item shows memory against a limit of ``megabytes`` MB."""
    page.locator("#jp-main-statusbar", has_text="Mem:").wait_for()
    page.wait_for_function(
        "mb => new RegExp('Mem: [\\\\d.]+ \\\\/ ' + mb + '\\\\.00 MB').test("
        "document.querySelector('#jp-main-statusbar').innerText)",
        arg=str(megabytes),
    )


def seed_origin(home: Path, owner: tuple[int, int]) -> Path:
    """A bare repository ``origin.git`` in ``home`` with one commit (README.md), owned by ``owner`` (uid, gid)."""
    origin = home / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    seed = home / "seed"
    subprocess.run(["git", "clone", "-q", str(origin), str(seed)], check=True, capture_output=True)
    (seed / "README.md").write_text("# data analysis\n")
    git_as_test = ["git", "-C", str(seed), "-c", "user.name=Test", "-c", "user.email=test@example.org"]
    subprocess.run([*git_as_test, "add", "README.md"], check=True)
    subprocess.run([*git_as_test, "commit", "-q", "-m", "first"], check=True)
    subprocess.run([*git_as_test, "push", "-q", "origin", "main"], check=True)
    shutil.rmtree(seed)
    for path in [origin, *origin.rglob("*")]:
        os.chown(path, *owner)
    return origin


def last_commit(repository: Path) -> str:
    """``subject|author`` and the files of the repository's last commit."""
    log = subprocess.run(
        ["git", "-c", "safe.directory=*", "-C", str(repository), "log", "-1", "--format=%s|%an", "--name-only"],
        capture_output=True,
        text=True,
    )
    return log.stdout


def clone_and_commit_in_panel(page, lab: str, origin: Path, home: Path, owner: tuple[int, int], author: str) -> None:
    """From jupyterlab-git's panel: clone ``origin`` into ``home``/origin, track a new notes.txt and commit it; the
    commit is checked in the clone, by ``author`` (the home's .gitconfig)."""
    panel = page.locator("#jp-git-sessions")
    page.locator('.jp-SideBar [data-id="jp-git-sessions"]').click()
    panel.get_by_role("button", name="Clone a Repository").click()
    page.get_by_placeholder("https://host.com/org/repo.git").fill(str(origin))
    # jupyterlab-git 0.55.0 reads this box the wrong way round (jupyterlab/jupyterlab-git#1529, open): left
    # unchecked, the panel downloads the files without .git; checked, it clones (docs/user-guide.md, "git")
    page.locator(".jp-Dialog #download").check()
    page.locator(".jp-Dialog").get_by_role("button", name="Clone", exact=True).click()
    wait_for(lambda: (home / "origin" / "README.md").exists(), 60, "the panel did not clone the repository")
    assert (home / "origin" / ".git").is_dir()

    (home / "origin" / "notes.txt").write_text("first look at the cohort\n")
    os.chown(home / "origin" / "notes.txt", *owner)
    page.goto(lab + "/lab/tree/origin")
    page.locator(".jp-DirListing-item", has_text="README.md").or_(panel.get_by_text("notes.txt")).first.wait_for()
    if not panel.is_visible():  # the workspace may reopen the git panel itself; a click would close it
        page.locator('.jp-SideBar [data-id="jp-git-sessions"]').click()
    panel.get_by_text("notes.txt").wait_for()  # listed as untracked
    track = panel.locator('[title="Track all untracked files"]')
    track.locator("xpath=..").hover()  # the section's buttons show on hover
    track.click()
    panel.get_by_placeholder("Commit message").fill("Notes on the cohort")
    panel.get_by_role("button", name="Commit", exact=True).click()
    clone = home / "origin"
    wait_for(lambda: f"Notes on the cohort|{author}" in last_commit(clone), 60, "the panel did not commit")
    assert "notes.txt" in last_commit(clone)


def show_dask_dashboard(page, link: str) -> None:
    """The dask panel finds the dashboard ``link`` in the notebook's kernel and lists the cluster's plots; the Task
    Stream plot opens in a lab panel, an iframe of the dashboard through the server's proxy."""
    page.locator('.jp-SideBar [data-id="dask-dashboard-launcher"]').click()
    panel = page.locator("#dask-dashboard-launcher")
    url = panel.locator(".dask-URLInput input")
    if link.split("status")[0] not in (url.input_value() or ""):
        panel.get_by_title("Auto-detect dashboard URL").first.click()
    page.wait_for_function(
        "() => (document.querySelector('#dask-dashboard-launcher .dask-URLInput input') || {}).value.includes('/proxy/')"
    )
    item = panel.locator(".dask-DashboardListing-item", has_text="Task Stream")
    item.wait_for()
    assert panel.locator(".dask-DashboardListing-item").count() > 5
    item.click()
    frame = page.locator("iframe[src*='/proxy/']").first
    frame.wait_for()
    assert f"{link.split('/proxy/')[0]}/proxy/" in frame.get_attribute("src")
    page.frame_locator("iframe[src*='/proxy/']").first.locator(".bk-Figure, .bk-root, canvas").first.wait_for()


def open_notebook(page, lab_url: str, path: str) -> None:
    """Open ``path`` in a JupyterLab at ``lab_url`` (ending in a slash), its first cell's editor shown."""
    page.goto(lab_url + f"lab/tree/{path}?reset")
    page.locator(".jp-Notebook .jp-Cell .cm-content").first.wait_for(timeout=120_000)


def share_dialog(page):
    """Open jupyter-collaboration's share dialog from the top bar (a click while the lab still starts may be lost)."""
    dialog = page.locator(".jp-Dialog", has=page.locator(".jp-ManageSharesBody-search-container"))
    for _ in range(4):
        page.locator('[data-command="collaboration:shared-link"]').first.click()
        try:
            dialog.wait_for(timeout=20_000)
            return dialog
        except Exception:
            page.keyboard.press("Escape")
    raise AssertionError("the share dialog did not open (or opened without JupyterHub's sharing)")


def first_cell_text(page) -> str:
    return page.locator(".jp-Notebook .jp-Cell .cm-content").first.inner_text()


def share_from_dialog(page, owner_api, owner: str, visitor: str) -> None:
    """In ``owner``'s lab: the share dialog shares the server with ``visitor``, as the hub's sharing API then lists."""
    dialog = share_dialog(page)
    dialog.locator(".jp-ManageSharesBody-user-item", has_text=visitor).click()
    dialog.locator(".jp-ManageSharesBody-shares-table", has_text=visitor).wait_for()
    assert [s["user"]["name"] for s in owner_api.api("GET", f"/shares/{owner}/").json()["items"]] == [visitor]


def close_dialog(page) -> None:
    page.locator(".jp-Dialog").get_by_role("button", name="Close").click()


def open_share_from_home(page, hub, owner: str) -> None:
    """The visitor (logged in in ``page``) opens ``owner``'s shared server from "Shared with you" on the hub's home
    page; the hub asks once whether the owner's server may know them."""
    page.goto(f"{hub.url}/hub/home")
    row = page.locator("#hpclab-shared .hpclab-shared-row", has_text=owner)
    row.locator(".hpclab-shared-open").click()
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(f"{hub.user_url(owner)}lab**", timeout=120_000)


def edit_together(owner, visitor, visitor_name: str) -> None:
    """Both edit the first cell of the notebook they have open: each sees the other's text, and the owner sees the
    visitor's cursor with their name (the visitor the owner's)."""
    owner.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
    owner.keyboard.type("cohort = 'from the owner'")
    wait_for(lambda: "from the owner" in first_cell_text(visitor), 30, "the visitor does not see the owner's typing")
    visitor.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
    visitor.keyboard.press("Control+End")
    visitor.keyboard.press("Enter")
    visitor.keyboard.type("tutor = 'from the visitor'")
    wait_for(lambda: "from the visitor" in first_cell_text(owner), 30, "the owner does not see the visitor's typing")
    flag = owner.locator(".jp-remote-cursor .jp-remote-userFlag-name", has_text=visitor_name).or_(
        owner.locator(".jp-remote-userFlag", has_text=visitor_name)
    )
    visitor.keyboard.type("  # here")
    flag.first.wait_for(state="attached", timeout=30_000)
    assert visitor.locator(".jp-remote-cursor").count() >= 1  # the owner's cursor in the visitor's browser


def revoke_shuts_out(owner, visitor, owner_api, name: str, lab_url: str, path: str, meanwhile=None) -> None:
    """The owner revokes the share from the dialog: the visitor's requests are refused within the hub's 30 s, and
    the notebook the visitor still has open no longer reaches the owner's (hpclab.share_guard closes its
    connections at the server's next check). ``meanwhile``, if given, runs between the revoke and the checks (a
    test's next steps, instead of a wait)."""
    dialog = share_dialog(owner)
    dialog.get_by_role("button", name="Revoke").click()
    wait_for(lambda: not owner_api.api("GET", f"/shares/{name}/").json()["items"], 30, "the share is still there")
    revoked = time.monotonic()
    dialog.get_by_role("button", name="Close").click()
    if meanwhile is not None:
        meanwhile()

    def shut_out() -> bool:
        answer = visitor.request.get(lab_url + f"api/contents/{path}", max_redirects=0)
        return answer.status in (302, 403)

    wait_for(shut_out, 75, "the visitor still reads the owner's notebook after the revoke")
    visitor.wait_for_timeout(max(0, CHECK_EVERY_MS + 2000 - 1000 * (time.monotonic() - revoked)))
    while visitor.locator(".jp-Dialog").count():  # the lab says it lost the kernel: dismissed, and typing goes on
        visitor.locator(".jp-Dialog .jp-mod-accept, .jp-Dialog .jp-mod-reject").first.click()
        visitor.wait_for_timeout(500)
    visitor.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
    visitor.keyboard.type("  # after the revoke")
    owner.wait_for_timeout(5000)
    assert "after the revoke" not in first_cell_text(owner)
