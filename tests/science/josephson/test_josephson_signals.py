"""`hpclab josephson sweep` under real signals and with --debug, from the installed command line.

SIGTERM is sent to the real process (not a KeyboardInterrupt raised in this one) at the moment that
matters: while the result file is being written. --debug turns the one-line errors into tracebacks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hpclab.josephson import load_sweep, sweep
from hpclab.josephson.checkpoint import finished_points
from hpclab.josephson.cli import partial_path
from hpclab.safe_output import TEMP_PREFIX

from support.proctools import left_behind, sigterm_when

HPCLAB = str(Path(sys.executable).with_name("hpclab"))
#: 700 x 700 points of a short pulse (t_end 1): ~4 s of solving on two loky workers, then ~1.5 s
#: writing an 18 MB compressed .npz: a save window wide enough to hit every time
BIG_CHEAP = ["--G", "10:100:700", "--alpha", "0.02:0.2:700", "--t-end", "1", "--t-s", "0.5", "--pulse-width", "0.2"]
N_POINTS = 700 * 700


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_sigterm_while_the_result_is_written_keeps_the_previous_file_and_every_point(tmp_path):
    out = tmp_path / "map.npz"
    sweep(G=[10.0, 20.0], progress=False).save(out)
    before = out.read_bytes()
    cmd = [HPCLAB, "josephson", "sweep", *BIG_CHEAP, "--backend", "loky", "--jobs", "2", "--quiet", "--out", str(out)]
    # SIGTERM while the result's temporary file is written (".hpclab-tmp-map-*"; the checkpoint's: "…map.partial-*")
    stop = sigterm_when(cmd, lambda _: list(tmp_path.glob(f"{TEMP_PREFIX}map-*")), "result file being written")
    err, mark, children = stop.err, stop.mark, stop.children
    line = _one_line(err)
    assert "stopped by SIGTERM" in line and f"{N_POINTS} finished points kept" in line and "--resume" in line
    assert sum("LokyProcess" in c for c in children) == 2, "the loky workers were not running"
    assert left_behind(mark) == [], "processes of the sweep still run"
    assert out.read_bytes() == before, "the previous result was touched"
    assert load_sweep(out).state.shape == (2, 4)
    assert not list(tmp_path.glob(f"{TEMP_PREFIX}*")), "a temporary file was left"
    # every point was saved before the result was written: --resume only writes the file
    partial = partial_path(out)
    assert finished_points(partial) == N_POINTS
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not partial.exists() and not list(tmp_path.glob(f"{TEMP_PREFIX}*"))
    resumed = load_sweep(out)
    assert resumed.meta["resumed_points"] == N_POINTS and resumed.state.shape == (700, 700, 4)


@pytest.mark.parametrize("flags, message", [
    (["--G", "10", "--out", "{tmp}/folder.npz"], "is a folder"),  # checked before the work
    (["--G", "10", "--rtol", "10", "--out", "{tmp}/m.npz"], "rtol=10 is outside"),  # refused by the sweep
])
def test_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, flags, message):
    (tmp_path / "folder.npz").mkdir()
    args = ["josephson", "sweep", "--quiet", *(f.format(tmp=tmp_path) for f in flags)]
    plain = subprocess.run([HPCLAB, *args], capture_output=True, text=True, timeout=60)
    assert plain.returncode == 2 and message in _one_line(plain.stderr)
    for debug_args in (["--debug", *args], [*args, "--debug"]):  # a flag of `hpclab`, accepted anywhere
        debug = subprocess.run([HPCLAB, *debug_args], capture_output=True, text=True, timeout=60)
        assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr, debug.stderr
        assert message in debug.stderr.strip().splitlines()[-1]
