"""Apps beside notebooks and what the server uses, on a real hub (local backend) and Debian's chromium (issue 30).

A profile's ``apps`` become JupyterLab launcher tiles (jupyter-server-proxy, set up by hpclab.apps) and a server
gets only its profile's; TensorBoard shows the scalars a real ``hpclab train`` run wrote (the dl venv's trainer,
tensorboardX); jupyter-resource-usage shows memory against the profile's limit; jupyterlab-git's panel is there;
the desktop tile shows an xfce4 session over noVNC. Screenshots for the user guide go to docs/images only with
HPCLAB_DOCS_IMAGES=1 (support.docs_images).
"""

from __future__ import annotations

import pwd
import shutil
import time
from pathlib import Path

import psutil
import pytest

from support.apptiles import open_tile, wait_for_desktop, wait_for_scalars, wait_for_workbench, xfce_panel_on_vnc
from support.browsertools import browser_login
from support.docs_images import docs_image
from support.hubtools import home_of, hub_yaml, login, started_hub, stop_server, write_in_home
from support.labsteps import clone_and_commit_in_panel, seed_origin, wait_for_memory_limit
from support.slurmtools import wait_for

pytestmark = [pytest.mark.hub]

@pytest.fixture(scope="module")
def apps_hub(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("apps-hub")
    config = hub_yaml(
        workdir / "state",
        profiles=[
            {
                "slug": "dl",
                "display_name": "Deep learning",
                "backend": "local",
                "cpus": 1,
                "memory": "2G",
                "apps": ["tensorboard"],
                "default": True,
            },
            {"slug": "cpu-small", "display_name": "CPU small", "backend": "local", "cpus": 1, "memory": "3G"},
            {"slug": "code", "display_name": "Code", "backend": "local", "cpus": 1, "memory": "3G", "apps": ["vscode"]},
            {"slug": "desktop", "display_name": "Desktop", "backend": "local", "cpus": 1, "memory": "3G", "apps": ["desktop"]},
        ],
    )
    with started_hub(workdir, config) as hub:
        yield hub


def test_a_server_gets_only_its_profiles_apps_and_its_limits(apps_hub):
    alice = login(apps_hub, "alice")
    for slug, apps in (("dl", ["tensorboard"]), ("cpu-small", [])):
        assert alice.post_spawn("alice", slug).status_code == 302
        try:
            alice.wait_ready("alice")
            base = apps_hub.user_url("alice")
            assert alice.http.get(base + "lab").status_code == 200  # logs in to the server (OAuth)
            info = alice.http.get(base + "server-proxy/servers-info").json()
            assert [s["name"] for s in info["server_processes"]] == apps, info
            assert (alice.http.get(base + "tensorboard/").status_code == 200) == bool(apps)
            metrics = alice.http.get(base + "api/metrics/v1").json()
            limit = {"dl": 2 * 1024**3, "cpu-small": 3 * 1024**3}[slug]
            assert metrics["limits"]["memory"]["rss"] == limit, metrics
            assert 0 < metrics["rss"] < limit and "cpu_percent" in metrics
        finally:
            stop_server(alice, "alice")


@pytest.mark.browser
def test_tensorboard_tile_shows_a_real_runs_scalars_and_the_lab_memory_and_git(apps_hub, training_events, browser, artifacts):
    data_dir = apps_hub.config["hub"]["data_dir"]
    for event_file in training_events:
        write_in_home(data_dir, "bob", Path("runs/resnet") / event_file.name, event_file.read_bytes())
    bob = login(apps_hub, "bob")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(90_000)
    try:
        browser_login(page, apps_hub, "bob")
        page.wait_for_url("**/hub/spawn**")
        assert page.locator('[data-profile="dl"] .hpclab-apps').inner_text().strip() == "Apps: TensorBoard"
        assert page.locator('[data-profile="cpu-small"] .hpclab-apps').count() == 0
        page.click("form#spawn_form [type=submit]")
        page.wait_for_url("**/user/bob/lab**", timeout=240_000)
        page.goto(page.url.split("/lab")[0] + "/lab?reset")

        wait_for_memory_limit(page, 2048)  # jupyter-resource-usage's status bar item: the profile's 2G limit
        assert page.locator('.jp-SideBar [data-id="jp-git-sessions"]').count() == 1  # jupyterlab-git's panel

        started = time.monotonic()
        try:
            board = open_tile(page, "TensorBoard")
        except Exception:
            page.screenshot(path=str(artifacts / "apps-launcher.png"))
            raise
        board.set_default_timeout(120_000)
        wait_for_scalars(board)
        opened = time.monotonic() - started
        board.wait_for_timeout(2000)  # the charts drawn for the screenshot
        assert "/user/bob/tensorboard/" in board.url
        board.screenshot(path=str(docs_image(artifacts, "app-tensorboard.png")))
        print(f"TensorBoard tile to scalars: {opened:.1f} s")
        board.close()
        # TensorBoard listens on a Unix socket in a private folder, on no port another account could connect to
        boards = [proc for proc in psutil.process_iter(["cmdline", "username"])
                  if "hpclab.tensorboard_socket" in " ".join(proc.info["cmdline"] or [])
                  and proc.info["username"] in ("bob", "jupyter-bob")]
        assert len(boards) == 1, boards
        for proc in [boards[0], *boards[0].children(recursive=True)]:
            assert proc.net_connections(kind="inet") == [], (proc.cmdline(), proc.net_connections(kind="inet"))
        socket_arg = next(arg for arg in boards[0].cmdline() if arg.startswith("--host="))
        assert socket_arg.startswith("--host=unix:///tmp/jupyter-server-proxy-"), socket_arg
        folder = Path(f"/proc/{boards[0].pid}/root") / socket_arg.removeprefix("--host=unix:///").rsplit("/", 1)[0]
        assert folder.stat().st_mode & 0o077 == 0 and folder.stat().st_uid == boards[0].uids().real
    finally:
        page.close()
        stop_server(bob, "bob")


@pytest.mark.browser
def test_the_git_panel_clones_a_repository_and_commits_a_change(apps_hub, browser, artifacts):
    """jupyterlab-git on a profile without apps: clone a repository from the home, commit a new file, all from the panel."""
    data_dir = apps_hub.config["hub"]["data_dir"]
    write_in_home(data_dir, "alice", ".gitconfig", "[user]\n\tname = Alice Example\n\temail = alice@example.org\n")
    home = home_of(data_dir, "alice")
    owner = (home.stat().st_uid, home.stat().st_gid)
    origin = seed_origin(home, owner)

    alice = login(apps_hub, "alice")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(90_000)
    try:
        browser_login(page, apps_hub, "alice")
        page.wait_for_url("**/hub/spawn**")
        page.check("#profile-cpu-small")
        page.click("form#spawn_form [type=submit]")
        page.wait_for_url("**/user/alice/lab**", timeout=240_000)
        lab = page.url.split("/lab")[0]
        page.goto(lab + "/lab?reset")
        assert page.locator(".jp-LauncherCard", has_text="TensorBoard").count() == 0  # no apps on this profile
        clone_and_commit_in_panel(page, lab, origin, home, owner, "Alice Example")
        page.screenshot(path=str(docs_image(artifacts, "app-git.png")))
    except Exception:
        page.screenshot(path=str(artifacts / "apps-git-failure.png"))
        raise
    finally:
        page.close()
        stop_server(alice, "alice")


@pytest.mark.browser
def test_the_vscode_tile_opens_code_servers_workbench_on_the_home(apps_hub, browser, artifacts):
    """code-server (`make code-server`) through jupyter-vscode-proxy, on a Unix socket, opening the user's home."""
    from hpclab.apps import CODE_SERVER_DIR

    entry = CODE_SERVER_DIR / "node_modules" / "code-server" / "out" / "node" / "entry.js"
    assert entry.exists(), f"{entry} is missing: run `make code-server`"
    data_dir = apps_hub.config["hub"]["data_dir"]
    write_in_home(data_dir, "bob", "analysis/notes.md", "# what the cohort showed\n")
    bob = login(apps_hub, "bob")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(90_000)
    try:
        browser_login(page, apps_hub, "bob")
        page.wait_for_url("**/hub/spawn**")
        assert page.locator('[data-profile="code"] .hpclab-apps').inner_text().strip() == "Apps: VS Code"
        page.check("#profile-code")
        page.click("form#spawn_form [type=submit]")
        page.wait_for_url("**/user/bob/lab**", timeout=240_000)
        page.goto(page.url.split("/lab")[0] + "/lab?reset")
        page.locator(".jp-LauncherCard", has_text="VS Code").wait_for()
        assert page.locator(".jp-LauncherCard", has_text="TensorBoard").count() == 0
        started = time.monotonic()
        code = open_tile(page, "VS Code")
        code.set_default_timeout(180_000)
        wait_for_workbench(code, "analysis")  # the explorer shows the home's folders
        opened = time.monotonic() - started
        assert "/user/bob/vscode/" in code.url
        code.wait_for_timeout(2000)
        code.screenshot(path=str(docs_image(artifacts, "app-vscode.png")))
        print(f"VS Code tile to workbench: {opened:.1f} s")
        code.close()
    except Exception:
        page.screenshot(path=str(artifacts / "apps-vscode-failure.png"))
        raise
    finally:
        page.close()
        stop_server(bob, "bob")


@pytest.mark.browser
def test_the_desktop_tile_shows_xfces_panel_over_novnc(apps_hub, browser, artifacts):
    """jupyter-remote-desktop-proxy: Debian's TigerVNC on a Unix socket, an xfce4 session as the user, noVNC in the page."""
    assert shutil.which("vncserver") and shutil.which("xfce4-panel"), "TigerVNC or xfce4 missing: run `make system-packages`"
    bob = login(apps_hub, "bob")
    uid = pwd.getpwnam("jupyter-bob").pw_uid  # the local backend's account for bob
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(90_000)
    try:
        browser_login(page, apps_hub, "bob")
        page.wait_for_url("**/hub/spawn**")
        assert page.locator('[data-profile="desktop"] .hpclab-apps').inner_text().strip() == "Apps: Desktop"
        page.check("#profile-desktop")
        page.click("form#spawn_form [type=submit]")
        page.wait_for_url("**/user/bob/lab**", timeout=240_000)
        page.goto(page.url.split("/lab")[0] + "/lab?reset")
        page.locator(".jp-LauncherCard", has_text="Desktop").wait_for()
        assert page.locator(".jp-LauncherCard", has_text="VS Code").count() == 0
        started = time.monotonic()
        desk = open_tile(page, "Desktop")
        desk.set_default_timeout(120_000)
        assert desk.url.endswith("/user/bob/desktop/")
        wait_for_desktop(desk, uid, artifacts / "desktop-canvas.png")
        opened = time.monotonic() - started
        print(f"Desktop tile to xfce panel drawn: {opened:.1f} s")
        # JPEG: the wallpaper's detail makes a 1.7 MB PNG
        desk.screenshot(path=str(docs_image(artifacts, "app-desktop.jpg")), type="jpeg", quality=80)
        desk.close()
    except Exception:
        page.screenshot(path=str(artifacts / "apps-desktop-failure.png"))
        raise
    finally:
        page.close()
        stop_server(bob, "bob")
    # the session ends with the server: no desktop process of bob's is left behind
    wait_for(lambda: xfce_panel_on_vnc(uid) is None, 30, "bob's desktop outlived his server")
