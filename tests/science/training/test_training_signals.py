"""`hpclab train resnet` under a real SIGTERM (the installed command of .venv-dl, in a subprocess).

The signal goes to the real process at the moment that matters: while rank 0 writes the next epoch's
checkpoint (its temporary file is in the output folder). Afterwards: a checkpoint that loads and
resumes, metrics that agree with it, no temporary file, no process of the run left (found by a marker
in their environment, also the ranks horovodrun starts in their own sessions), one line on stderr.
This process never imports torch: the checkpoint is read by .venv-dl's python.
"""

from __future__ import annotations

import json

import pytest

from hpclab.safe_output import TEMP_PREFIX

from support.dltools import DL_PYTHON, DL_VENV, dl_env, dl_run, require_dl_venv
from support.proctools import left_behind, sigterm_when

HPCLAB_DL = str(DL_VENV / "bin" / "hpclab")
STOPPED = "hpclab train: stopped by SIGTERM"
#: a few 4-image steps of a resnet18 on 32x32 synthetic images per epoch: a checkpoint (~90 MB with the
#: momentum) every second or two, for as many epochs as the test needs
SMALL = ["resnet", "--data", "synthetic", "--arch", "resnet18", "--image-size", "32", "--num-classes", "10",
         "--synthetic-size", "16", "--batch-size", "4", "--lr-scaling", "none", "--progress", "log"]
READ_CHECKPOINT = """
import json, sys, torch
c = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
print(json.dumps({"epoch": c["epoch"], "epochs": [r["epoch"] for r in c["history"]], "tensors": len(c["model"]),
                  "optimizer": bool(c["optimizer"]["state"])}))
"""


def _checkpoint(path) -> dict:
    return json.loads(dl_run([str(DL_PYTHON), "-c", READ_CHECKPOINT, str(path)], timeout=120).stdout)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("launch", [["--nproc", "2"], []], ids=["horovodrun-2-ranks", "one-process"])
def test_sigterm_while_a_checkpoint_is_written_keeps_the_last_one_and_stops_every_rank(launch, tmp_path):
    require_dl_venv()
    out = tmp_path / "run"
    cmd = [HPCLAB_DL, "train", *SMALL, "--out-dir", str(out), *launch]

    def next_checkpoint_written(_: int) -> bool:  # after the first: "<TEMP_PREFIX>checkpoint-*.pt" beside it
        return (out / "checkpoint.pt").exists() and bool(list(out.glob(f"{TEMP_PREFIX}checkpoint-*")))

    stop = sigterm_when([*cmd, "--epochs", "1000"], next_checkpoint_written, "next checkpoint being written",
                        env=dl_env(threads=1))
    err, mark = stop.err, stop.mark
    ranks = [c for c in stop.children if "hpclab.training" in c and "horovodrun" not in c]
    assert err.strip() == STOPPED and "Traceback" not in err, err
    if launch:
        assert len(ranks) >= 2, f"the ranks were not running: {ranks}"
    assert left_behind(mark) == [], "a process of the run (launcher or rank) still runs"
    assert not list(out.glob(f"{TEMP_PREFIX}*")), "a temporary file was left"

    # the last complete checkpoint: the one before the signal, or the one being written if it got finished
    ckpt = _checkpoint(out / "checkpoint.pt")
    assert ckpt["epoch"] >= 1 and ckpt["epochs"] == list(range(1, ckpt["epoch"] + 1)), ckpt
    assert ckpt["tensors"] > 100 and ckpt["optimizer"], ckpt
    # metrics.json is written after the checkpoint: the same epochs, or one less
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["history"]] in (ckpt["epochs"], ckpt["epochs"][:-1]), metrics["history"]

    # the work is kept: --resume continues after the checkpoint's epoch (one process, one more epoch)
    done = dl_run([HPCLAB_DL, "train", *SMALL, "--out-dir", str(out), "--resume", "--epochs",
                   str(ckpt["epoch"] + 1)], timeout=180, env=dl_env(threads=1))
    assert f"resumed after epoch {ckpt['epoch']}" in done.stdout, done.stdout
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["resumed_from_epoch"] == ckpt["epoch"]
    assert [r["epoch"] for r in resumed["history"]] == list(range(1, ckpt["epoch"] + 2))
    assert not list(out.glob(f"{TEMP_PREFIX}*"))
