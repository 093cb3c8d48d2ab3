"""`hpclab josephson sweep` never loses work: SIGTERM, bad output paths, huge grids, old results.

Each test plays what a batch job meets: SLURM's SIGTERM at the wall time, a typo in --out, a grid
that cannot fit, a previous result that must survive a failed run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from hpclab.cli import main, one_line
from hpclab.josephson import load_sweep, sweep
from hpclab.josephson.cli import partial_path
from hpclab.safe_output import TEMP_PREFIX

HPCLAB = str(Path(sys.executable).with_name("hpclab"))
#: ~15 s of solve_ivp work on two loky workers: long enough to be interrupted half-way
SLOW = ["--G", "10:100:30", "--alpha", "0.02:0.2:30", "--solver", "reference", "--chunk-size", "4"]


def _sweep_cmd(out: Path, *extra: str) -> list[str]:
    return [HPCLAB, "josephson", "sweep", *SLOW, "--backend", "loky", "--jobs", "2", "--quiet",
            "--out", str(out), *extra]


def _wait_for_workers(proc: subprocess.Popen, n: int, timeout: float = 60) -> list[psutil.Process]:
    """The loky workers (grandchildren included) once ``n`` of them run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                   if "LokyProcess" in " ".join(p.cmdline())]
        if len(workers) >= n:
            return workers
        time.sleep(0.2)
    raise AssertionError(f"no {n} loky workers after {timeout} s")


def test_sigterm_keeps_finished_points_stops_workers_and_resume_finishes(tmp_path):
    out = tmp_path / "map.npz"
    previous = sweep(G=[10.0, 20.0], progress=False)
    previous.save(out)
    before = out.read_bytes()

    proc = subprocess.Popen(_sweep_cmd(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = _wait_for_workers(proc, 2)
    time.sleep(4)  # let some chunks finish
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 128 + signal.SIGTERM
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "stopped by SIGTERM" in lines[0] and "--resume" in lines[0], err
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"loky workers left running: {[p.pid for p in alive]}"
    assert out.read_bytes() == before, "the previous result was touched"
    partial = partial_path(out)
    with np.load(partial) as data:
        kept = int(data["done"].sum())
    assert 0 < kept < 900 and f"{kept} finished points kept" in lines[0]
    assert not list(tmp_path.glob(f"{TEMP_PREFIX}*"))

    # the same command without --resume refuses to start over the partial result
    refused = subprocess.run(_sweep_cmd(out), capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "add --resume" in refused.stderr

    done = subprocess.run(_sweep_cmd(out, "--resume"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not partial.exists()
    resumed = load_sweep(out)
    assert resumed.meta["resumed_points"] == kept
    direct = sweep(G=np.linspace(10, 100, 30), alpha=np.linspace(0.02, 0.2, 30), solver="reference",
                   n_jobs=2, backend="loky", chunk_size=4, progress=False)
    assert np.array_equal(resumed.state, direct.state)


def test_a_checkpoint_of_another_sweep_is_refused(tmp_path, monkeypatch):
    ck = tmp_path / "ck.npz"
    sweep_module = sys.modules["hpclab.josephson.sweep"]
    real_solve = sweep_module.solve_chunk
    calls = []

    def interrupted_on_second_chunk(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_solve(*args)

    monkeypatch.setattr(sweep_module, "solve_chunk", interrupted_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        sweep(G=[10.0, 20.0, 30.0], chunk_size=1, checkpoint=ck, progress=False)
    monkeypatch.setattr(sweep_module, "solve_chunk", real_solve)
    with np.load(ck) as data:
        assert data["done"].tolist() == [True, False, False]
    with pytest.raises(ValueError, match="belongs to another sweep"):
        sweep(G=[10.0, 40.0, 30.0], checkpoint=ck, progress=False)
    resumed = sweep(G=[10.0, 20.0, 30.0], checkpoint=ck, progress=False)
    assert resumed.meta["resumed_points"] == 1 and not ck.exists()
    assert np.array_equal(resumed.state, sweep(G=[10.0, 20.0, 30.0], progress=False).state)
    ck.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="cannot be read"):
        sweep(G=[10.0, 20.0], checkpoint=ck, progress=False)


def test_an_interrupted_save_leaves_the_previous_file(tmp_path, monkeypatch):
    out = tmp_path / "map.npz"
    sweep(G=[10.0], progress=False).save(out)
    before = out.read_bytes()
    result = sweep(G=[10.0, 20.0, 30.0], progress=False)

    def killed_mid_write(fh, **arrays):
        fh.write(b"PK\x03\x04" + b"\0" * 100)  # the first bytes of a zip, then the signal arrives
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        result.save(out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.npz"]


@pytest.mark.parametrize("bad_out, reason", [
    ("{tmp}/folder.npz", "is a folder"),
    ("{tmp}/file.txt/map.npz", "is not a folder"),
    ("{tmp}/map.csv", "must end in .npz"),
])
def test_bad_output_paths_fail_before_any_work(tmp_path, bad_out, reason):
    (tmp_path / "folder.npz").mkdir()
    (tmp_path / "file.txt").write_text("x")
    start = time.monotonic()
    proc = subprocess.run(_sweep_cmd(Path(bad_out.format(tmp=tmp_path))), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and reason in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert time.monotonic() - start < 10, "the sweep ran before the output was checked"


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to the nobody account needs root")
def test_an_unwritable_folder_fails_before_any_work(tmp_path):
    for parent in (tmp_path, *tmp_path.parents):  # nobody may enter the folders on the way ...
        if parent.stat().st_mode & 0o005 != 0o005:
            parent.chmod(parent.stat().st_mode | 0o005)
    folder = tmp_path / "results"
    folder.mkdir(mode=0o755)  # ... but not write in root's folder
    cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *_sweep_cmd(folder / "map.npz")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"hpclab josephson sweep: cannot write in {folder}: Permission denied"


def test_a_grid_too_large_for_memory_is_refused_before_allocating(tmp_path, capsys):
    out = tmp_path / "huge.npz"
    assert main(["josephson", "sweep", "--G", "1:100:100000", "--alpha", "0:1:100000", "--quiet",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "10,000,000,000 points and needs about" in err and "available" in err
    assert not out.exists()


def test_tolerances_are_bounded(tmp_path, capsys):
    assert main(["josephson", "sweep", "--G", "10", "--rtol", "10", "--quiet", "--out", str(tmp_path / "m.npz")]) == 2
    assert "rtol=10 is outside [1e-13, 0.01]" in capsys.readouterr().err
    with pytest.raises(ValueError, match="atol=0.5 is outside"):
        sweep(G=[10.0], atol=0.5, progress=False)


def test_negative_ranges_and_the_pulse_width_flag(tmp_path, capsys):
    out = tmp_path / "m.npz"
    assert main(["josephson", "sweep", "--A-s", "-1.5:1.5:3", "--G", "-0,20", "--pulse-width", "4", "--quiet",
                 "--out", str(out)]) == 0
    res = load_sweep(out)
    assert np.array_equal(res.axes["A_s"], np.linspace(-1.5, 1.5, 3))
    assert res.fixed["delta_t"] == 4.0
    assert "warning" not in capsys.readouterr().err


def test_dt_still_works_but_says_it_is_the_pulse_width(tmp_path, capsys):
    out = tmp_path / "m.npz"
    assert main(["josephson", "sweep", "--G", "10", "--dt", "0.5", "--quiet", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "--dt is the width of the current pulse, not a time step" in err and "--pulse-width" in err
    assert load_sweep(out).fixed["delta_t"] == 0.5


def test_one_line_names_the_file():
    assert one_line(FileNotFoundError(2, "No such file or directory", "/x/y.nii")) == "/x/y.nii: No such file or directory"
    assert one_line(ValueError("two\nlines")) == "two lines"
    assert "out of memory" in one_line(MemoryError())
