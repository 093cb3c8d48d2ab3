"""A server's app tiles in Chromium (issue 30), for the local and the SLURM backend's browser tests: the TensorBoard
event files of a real ``hpclab train`` run, opening a launcher tile, and what shows that each app is there (VS Code's
workbench on the home, TensorBoard's scalars of the run, the xfce panel drawn over noVNC by a TigerVNC of the user's)."""

from __future__ import annotations

from pathlib import Path

from support.dltools import DL_VENV, dl_run, require_dl_venv
from support.slurmtools import wait_for

#: a two-epoch run on scikit-learn's digits (about 10 s)
TRAIN_ARGS = ["train", "resnet", "--data", "digits", "--arch", "resnet18", "--image-size", "16", "--epochs", "2",
              "--steps-per-epoch", "6", "--batch-size", "32", "--log-every", "2", "--progress", "log", "--nproc", "1",
              "--no-checkpoint"]


def train_events(run: Path) -> list[Path]:
    """TensorBoard event files of a real `hpclab train` run (the dl venv's trainer, tensorboardX) made in ``run``."""
    require_dl_venv()
    dl_run([str(DL_VENV / "bin" / "hpclab"), *TRAIN_ARGS, "--out-dir", str(run / "runs" / "resnet")], cwd=run, timeout=300)
    events = sorted((run / "runs" / "resnet").glob("events.out.tfevents.*"))
    assert events, "the trainer wrote no TensorBoard event file beside its metrics"
    return events


def open_tile(page, title: str):
    """Click the launcher's tile ``title`` in a JupyterLab page; the app's page (a new tab)."""
    tile = page.locator(".jp-LauncherCard", has_text=title)
    tile.wait_for()
    with page.expect_popup() as popup:
        tile.click()
    return popup.value


def wait_for_workbench(code, folder: str) -> None:
    """code-server's VS Code workbench, its explorer listing ``folder`` of the home it opened."""
    code.locator(".monaco-workbench").wait_for()
    code.get_by_text(folder, exact=True).first.wait_for()


def wait_for_scalars(board) -> None:
    """TensorBoard's scalars of the trainer's run: the "epoch" group open (the per-step "train" one folded)."""
    board.get_by_text("epoch/val_acc").first.wait_for()
    board.get_by_text("epoch/train_loss").first.wait_for()


def processes_of(uid: int) -> list[tuple[int, list[str], dict[str, str]]]:
    """(pid, argv, environment) of every process the account ``uid`` runs, read from /proc."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or proc.stat().st_uid != uid:
                continue
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
            env = dict(e.partition("=")[::2] for e in (proc / "environ").read_bytes().decode(errors="replace").split("\0") if e)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        found.append((int(proc.name), argv, env))
    return found


def xfce_panel_on_vnc(uid: int) -> tuple[int, str] | None:
    """(pid, display) of an xfce4-panel of ``uid`` drawing on the display of one of its TigerVNC servers that
    listens on a Unix socket (no TCP port), or None."""
    processes = processes_of(uid)
    displays = {argv[1] for _, argv, _ in processes if argv and argv[0].endswith("Xtigervnc") and "-rfbunixpath" in argv
                and argv[argv.index("-rfbport") + 1] == "-1"}
    panels = [(pid, env.get("DISPLAY", "")) for pid, argv, env in processes if argv and Path(argv[0]).name == "xfce4-panel"]
    return next(((pid, display) for pid, display in panels if display in displays), None)


def wait_for_desktop(desk, uid: int, shot: Path) -> tuple[int, str]:
    """noVNC connected in the desktop's page, an xfce4-panel of ``uid`` on a TigerVNC display, and the panel drawn
    along the canvas's top (a canvas screenshot goes to ``shot``); the panel's (pid, display)."""
    from PIL import Image

    desk.locator("#status", has_text="Connected").wait_for()  # noVNC's RFB handshake over the websocket is done
    pid, display = wait_for(lambda: xfce_panel_on_vnc(uid), 90, f"no xfce4-panel of uid {uid} on a TigerVNC display")
    canvas = desk.locator("#screen canvas")

    def panel_drawn() -> bool:
        # xfce's panel: a band along the top edge of one colour (give or take the JPEG encoding's noise), unlike
        # the wallpaper in the middle of the screen
        canvas.screenshot(path=str(shot))
        image = Image.open(shot).convert("RGB")
        width, height = image.size
        band = [image.getpixel((x, 6)) for x in range(width // 3, 2 * width // 3, 5)]
        middle = [image.getpixel((x, height // 2)) for x in range(width // 3, 2 * width // 3, 5)]
        spread = max(max(c[i] for c in band) - min(c[i] for c in band) for i in range(3))
        apart = sum(abs(sum(c[i] for c in band) / len(band) - sum(c[i] for c in middle) / len(middle)) for i in range(3))
        return height > 400 and spread < 24 and apart > 40

    wait_for(panel_drawn, 60, f"the xfce panel (pid {pid}, display {display}) is not drawn along the canvas top")
    return pid, display
