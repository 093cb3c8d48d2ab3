"""`hpclab train`: an error is one line; `--debug` (a flag of `hpclab`, accepted anywhere) shows the traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HPCLAB = str(Path(sys.executable).with_name("hpclab"))


def test_a_bad_out_dir_is_one_line_and_debug_shows_the_traceback(tmp_path):
    (tmp_path / "file").write_text("x")
    args = ["train", "resnet", "--out-dir", str(tmp_path / "file" / "run")]
    message = f"cannot create folder {tmp_path / 'file' / 'run'}: Not a directory"
    plain = subprocess.run([HPCLAB, *args], capture_output=True, text=True, timeout=60)
    assert plain.returncode == 2 and plain.stderr.strip() == f"hpclab train: --out-dir: {message}"
    for debug_args in (["--debug", *args], [*args, "--debug"]):
        debug = subprocess.run([HPCLAB, *debug_args], capture_output=True, text=True, timeout=60)
        assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr, debug.stderr
        assert debug.stderr.strip().splitlines()[-1].endswith(message)
