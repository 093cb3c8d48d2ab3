"""hpclab.examples: the example notebooks land in examples/ of each server, refreshed without losing a user's edits.

Real files in temporary folders; the deployment's copy is a copy of the repository's notebooks/ that
the tests change to play a new release. The extension is loaded by a real `jupyter server`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hpclab import examples
from hpclab.examples import MANIFEST, TEMP_PREFIX, sync_examples

from support.paths import REPO_ROOT

REPO = REPO_ROOT
NOTEBOOKS = REPO / "notebooks"
JOSEPHSON = "josephson-sweep.ipynb"


@pytest.fixture
def source(tmp_path) -> Path:
    """The deployment's copy: the repository's notebooks, a data file in a subfolder, and things not to deliver."""
    src = tmp_path / "deployed"
    shutil.copytree(NOTEBOOKS, src)
    (src / "data").mkdir()
    (src / "data" / "table.csv").write_text("a,b\n1,2\n")
    (src / ".hidden").write_text("not delivered")
    (src / ".ipynb_checkpoints").mkdir()
    (src / ".ipynb_checkpoints" / "josephson-sweep-checkpoint.ipynb").write_text("{}")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    return src


@pytest.fixture
def target(tmp_path) -> Path:
    root = tmp_path / "home"
    root.mkdir()
    return root / "examples"


def release(source: Path, name: str, marker: str) -> bytes:
    """Play a new release of ``name`` in the deployment's copy: the text ``marker`` appended; its new bytes."""
    path = source / name
    path.write_text(path.read_text(encoding="utf-8") + marker, encoding="utf-8")
    return path.read_bytes()


def files_under(folder: Path) -> dict[str, tuple[int, bytes]]:
    """{relative path: (mtime_ns, bytes)} of every regular file, hidden ones included."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_first_sync_copies_every_file_with_a_manifest_and_usual_modes(source, target):
    old = os.umask(0o022)
    try:
        report = sync_examples(source, target)
    finally:
        os.umask(old)
    expected = sorted(p.name for p in NOTEBOOKS.iterdir() if p.is_file()) + ["data/table.csv"]
    assert sorted(report.copied) == sorted(expected)
    assert (report.updated, report.offered, report.skipped, report.failed) == ([], [], [], [])
    for name in expected:
        assert (target / name).read_bytes() == (source / name).read_bytes()
        assert (target / name).stat().st_mode & 0o777 == 0o644
    assert (target.stat().st_mode & 0o777, (target / "data").stat().st_mode & 0o777) == (0o755, 0o755)
    assert not (target / ".hidden").exists() and not (target / ".ipynb_checkpoints").exists()
    assert not (target / "__pycache__").exists()
    manifest = json.loads((target / MANIFEST).read_text())
    assert set(manifest) == set(expected) and all(len(v) == 64 for v in manifest.values())
    assert report.summary().startswith(f"{len(expected)} copied, 0 updated, 0 unchanged")


def test_identical_run_writes_nothing(source, target):
    sync_examples(source, target)
    before = files_under(target)
    time.sleep(0.01)
    report = sync_examples(source, target)
    assert (report.copied, report.updated, report.offered, report.skipped, report.failed) == ([], [], [], [], [])
    assert len(report.unchanged) == len(before) - 1  # all but the manifest
    assert files_under(target) == before  # not even the manifest was rewritten
    assert report.summary().startswith("0 copied, 0 updated")


def test_unedited_file_is_upgraded_in_place(source, target):
    sync_examples(source, target)
    new = release(source, JOSEPHSON, "\n")
    report = sync_examples(source, target)
    assert report.updated == [JOSEPHSON] and report.offered == []
    assert (target / JOSEPHSON).read_bytes() == new
    assert not (target / "josephson-sweep.updated.ipynb").exists()


def test_user_edit_survives_and_the_new_version_is_offered_beside_it_once(source, target):
    sync_examples(source, target)
    edited = (target / JOSEPHSON).read_bytes().replace(b"N = ", b"N = 2 * ")
    (target / JOSEPHSON).write_bytes(edited)
    beside = target / "josephson-sweep.updated.ipynb"

    assert sync_examples(source, target).offered == []  # no new release: nothing offered
    assert not beside.exists()

    new = release(source, JOSEPHSON, "\n")
    report = sync_examples(source, target)
    assert report.offered == [JOSEPHSON] and report.updated == []
    assert (target / JOSEPHSON).read_bytes() == edited
    assert beside.read_bytes() == new
    assert "josephson-sweep.updated.ipynb" in report.summary()

    beside.unlink()  # the user looked at it and threw it away: not offered again for the same release
    report = sync_examples(source, target)
    assert report.offered == [] and not beside.exists() and JOSEPHSON in report.unchanged

    newer = release(source, JOSEPHSON, " \n")  # the next release replaces an older .updated copy
    beside.write_bytes(b"an older offer")
    assert sync_examples(source, target).offered == [JOSEPHSON]
    assert beside.read_bytes() == newer and (target / JOSEPHSON).read_bytes() == edited


def test_file_edited_before_any_manifest_is_kept(source, target):
    target.mkdir()
    (target / JOSEPHSON).write_text("my own notebook of the same name")
    report = sync_examples(source, target)
    assert report.offered == [JOSEPHSON]
    assert (target / JOSEPHSON).read_text() == "my own notebook of the same name"
    assert (target / "josephson-sweep.updated.ipynb").read_bytes() == (source / JOSEPHSON).read_bytes()


def test_deleted_file_is_restored_and_files_gone_from_the_source_stay(source, target):
    sync_examples(source, target)
    (target / JOSEPHSON).unlink()
    (target / "data" / "table.csv").unlink()
    (target / "mine.ipynb").write_text("{}")
    (source / "mri-pipeline.ipynb").unlink()  # a release without this notebook
    report = sync_examples(source, target)
    assert sorted(report.copied) == ["data/table.csv", JOSEPHSON]
    assert (target / JOSEPHSON).read_bytes() == (NOTEBOOKS / JOSEPHSON).read_bytes()
    assert (target / "mri-pipeline.ipynb").exists() and (target / "mine.ipynb").read_text() == "{}"


def test_symlinked_file_is_not_followed(source, target, tmp_path):
    sync_examples(source, target)
    outside = tmp_path / "outside.ipynb"
    outside.write_text("the user's file elsewhere")
    (target / JOSEPHSON).unlink()
    (target / JOSEPHSON).symlink_to(outside)
    release(source, JOSEPHSON, "\n")
    report = sync_examples(source, target)
    assert report.skipped == [JOSEPHSON] and JOSEPHSON not in report.copied + report.updated + report.offered
    assert outside.read_text() == "the user's file elsewhere"
    assert (target / JOSEPHSON).is_symlink() and not (target / "josephson-sweep.updated.ipynb").exists()
    assert f"skipped (symlink or not a regular file: {JOSEPHSON})" in report.summary()


def test_symlinked_target_or_subfolder_is_not_followed(source, target, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target.symlink_to(elsewhere)
    report = sync_examples(source, target)
    assert report.skipped == ["."] and report.copied == [] and list(elsewhere.iterdir()) == []

    target.unlink()
    target.mkdir()
    (target / "data").symlink_to(elsewhere)
    report = sync_examples(source, target)
    assert report.skipped == ["data"] and "data/table.csv" not in report.copied
    assert JOSEPHSON in report.copied and list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("step", ["fsync", "replace"])  # the data not on disk / the rename refused
def test_failed_write_leaves_the_old_file_and_no_temp_file(source, target, monkeypatch, step):
    sync_examples(source, target)
    old = files_under(target)
    release(source, JOSEPHSON, "\n")

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(examples.os, step, full_disk)
    report = sync_examples(source, target)
    assert report.failed == [f"{JOSEPHSON}: No space left on device"]  # the manifest did not change: not written
    assert files_under(target) == old
    assert not [p for p in target.rglob("*") if p.name.startswith(TEMP_PREFIX)]
    assert "1 failed" in report.summary()

    monkeypatch.undo()  # the disk has room again: the upgrade happens at the next start
    assert sync_examples(source, target).updated == [JOSEPHSON]


def test_a_temp_file_left_by_a_killed_server_is_removed(source, target):
    sync_examples(source, target)
    stale = target / f"{TEMP_PREFIX}0123456789ab-{JOSEPHSON}"
    stale.write_text('{"cells": [')  # half a notebook: the rename never happened
    (target / "data" / f"{TEMP_PREFIX}x-table.csv").write_text("a,")
    young = target / f"{TEMP_PREFIX}ba9876543210-{JOSEPHSON}"  # another server may be writing it right now
    young.write_text('{"cells": [')
    an_hour_ago = time.time() - 3600
    for path in (stale, target / "data" / f"{TEMP_PREFIX}x-table.csv"):
        os.utime(path, (an_hour_ago, an_hour_ago))
    sync_examples(source, target)
    assert [p for p in target.rglob("*") if p.name.startswith(TEMP_PREFIX)] == [young]
    assert (target / JOSEPHSON).read_bytes() == (source / JOSEPHSON).read_bytes()


def test_missing_source_raises(target, tmp_path):
    with pytest.raises(FileNotFoundError):
        sync_examples(tmp_path / "no-such-folder", target)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(NotADirectoryError):
        sync_examples(tmp_path / "a-file", target)
    assert not target.exists()


# -- the server extension --------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_server(root: Path, examples_dir: str, tmp_path: Path) -> str:
    """Start `jupyter server` with the extension, wait until it answers, stop it; its log."""
    port = _free_port()
    log = tmp_path / f"server-{port}.log"
    env = {**os.environ, "HPCLAB_EXAMPLES_DIR": examples_dir, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    env.pop("HPCLAB_EXAMPLES_TARGET", None)
    with log.open("w") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "jupyter"), "server", "--no-browser",
                                 "--ServerApp.jpserver_extensions=hpclab.examples=True", f"--ServerApp.root_dir={root}",
                                 f"--port={port}", "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
                                 "--ServerApp.token=x", *(["--allow-root"] if os.geteuid() == 0 else [])], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"jupyter server exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token=x", timeout=2) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, f"jupyter server did not answer:\n{log.read_text()[-3000:]}"
                time.sleep(0.2)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return log.read_text()


@pytest.mark.slow  # starts a Jupyter server: about 12 s
@pytest.mark.timeout(60)
def test_jupyter_server_delivers_the_examples_and_starts_despite_a_broken_source(tmp_path):
    root = tmp_path / "home"
    root.mkdir()
    text = _run_server(root, str(NOTEBOOKS), tmp_path)
    assert (root / "examples" / JOSEPHSON).read_bytes() == (NOTEBOOKS / JOSEPHSON).read_bytes()
    assert (root / "examples" / MANIFEST).is_file()
    delivered = sum(1 for p in NOTEBOOKS.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert f"hpclab.examples: {root / 'examples'} from {NOTEBOOKS}: {delivered} copied, 0 updated" in text, text[-3000:]

    (root / "examples" / JOSEPHSON).unlink()
    text = _run_server(root, str(tmp_path / "no-such-folder"), tmp_path)  # the server still starts
    assert "hpclab.examples: could not refresh" in text and "[W " in text, text[-3000:]
    assert not (root / "examples" / JOSEPHSON).exists()
