"""hpclab.training: data-parallel ResNet training with Horovod and torch.distributed (DDP).

The pure parts (settings, lr schedule, launch commands, import weight) run in this process. Everything
that needs torch runs in subprocesses with the deep-learning venv (.venv-dl): this process never imports
torch. Correctness on the CPU with 2 gloo ranks: identical weights on both ranks, and equal to one
process trained on the concatenated batch (GroupNorm resnet18, per the measured BatchNorm facts).
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import pytest

from hpclab.training import TrainConfig, TrainingRun, launch_local, local_command, lr_at, peak_lr
from hpclab.training.config import parse_argv

from support.dltools import DL_PYTHON, DL_VENV, compare_states, cuda_available, dl_env, dl_run, require_dl_venv

# -- pure parts (no torch) ------------------------------------------------------------------------------


def test_config_round_trips_through_its_flags():
    cfg = TrainConfig(data="digits", arch="resnet18", norm="group", image_size=32, epochs=3, batch_size=16,
                      steps_per_epoch=5, warmup_epochs=0.5, backend="ddp", channels_last=False, threads=1,
                      checkpoint=False, resume=True, out_dir="/tmp/x")
    argv = cfg.to_argv()
    assert "--channels-last=false" in argv and "--no-checkpoint" in argv and "--resume" in argv
    assert parse_argv(argv) == cfg
    assert TrainConfig().to_argv() == []
    assert parse_argv(["--channels-last=auto", "--threads=auto"]) == TrainConfig()


@pytest.mark.parametrize("bad", [dict(backend="mpi"), dict(amp="fp8"), dict(norm="layer"), dict(batch_size=0),
                                 dict(val_fraction=1.0), dict(device="tpu"), dict(steps_per_epoch=0)])
def test_config_rejects_settings_that_cannot_work(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_lr_scaling_and_warmup_schedule():
    assert peak_lr(0.1, 1024) == pytest.approx(0.4)                      # linear: x global/256
    assert peak_lr(0.1, 1024, scaling="sqrt") == pytest.approx(0.2)
    assert peak_lr(0.1, 1024, scaling="none") == 0.1
    # warm-up: linear to the peak over 10 steps, then cosine to 0 at step 110
    assert lr_at(0, 110, 0.4, 10) == pytest.approx(0.04)
    assert lr_at(9, 110, 0.4, 10) == pytest.approx(0.4)
    assert lr_at(60, 110, 0.4, 10) == pytest.approx(0.2)
    assert lr_at(110, 110, 0.4, 10) == pytest.approx(0.0, abs=1e-12)
    assert [lr_at(s, 100, 1.0, 0, "step") for s in (0, 49, 50, 74, 75, 99)] == \
        pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert lr_at(77, 100, 0.3, 0, "constant") == 0.3


def test_local_commands_for_each_backend():
    cfg = TrainConfig(data="digits", epochs=2, out_dir="/runs/a")
    hvd = local_command(cfg, 4, "horovod", python="/v/bin/python")
    assert hvd[:6] == ["/v/bin/horovodrun", "-np", "4", "-H", "localhost:4", "--gloo"]
    assert hvd[6:9] == ["/v/bin/python", "-m", "hpclab.training"] and "--backend=horovod" in hvd
    ddp = local_command(cfg, 2, "ddp", python="/v/bin/python")
    assert ddp[:7] == ["/v/bin/python", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                       "-m", "hpclab.training"]
    assert parse_argv(ddp[7:]) == cfg.replace(backend="ddp")
    assert local_command(cfg, 1, "none", python="/p")[:3] == ["/p", "-m", "hpclab.training"]
    with pytest.raises(ValueError):
        local_command(cfg, 2, "none")


def test_importing_hpclab_and_its_cli_does_not_import_torch():
    code = ("import sys, hpclab, hpclab.cli, hpclab.training; "
            "from hpclab.training import TrainConfig, sbatch_script, launch_local; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'horovod')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_bad_output_folder_is_refused_before_training_or_submitting(tmp_path):
    (tmp_path / "file").write_text("x")
    for extra in ([], ["--slurm", "--no-follow"], ["--nproc", "2"]):
        code = ("import sys; from hpclab.cli import main; rc = main(sys.argv[1:]); "
                "print(rc, 'torch' in sys.modules)")
        proc = subprocess.run([sys.executable, "-c", code, "train", "resnet", "--out-dir",
                               str(tmp_path / "file" / "run"), *extra], capture_output=True, text=True, timeout=60)
        assert proc.stdout.split() == ["2", "False"], proc.stderr  # refused before torch was even imported
        assert proc.stderr.strip() == f"hpclab train: --out-dir: cannot create folder {tmp_path / 'file' / 'run'}: Not a directory"


# -- the deep-learning venv ------------------------------------------------------------------------------


def test_dl_venv_has_the_pinned_torch_and_a_horovod_with_pytorch_and_gloo():
    require_dl_venv()
    versions = dl_run([str(DL_PYTHON), "-c", "import torch, torchvision, horovod; "
                       "print(torch.__version__.split('+')[0], torchvision.__version__.split('+')[0], horovod.__version__)"])
    assert versions.stdout.split() == ["2.14.1", "0.29.1", "0.28.1"]
    check = dl_run([str(DL_VENV / "bin" / "horovodrun"), "--check-build"]).stdout
    assert "[X] PyTorch" in check and "[X] Gloo" in check
    # the main venv holds only the CPU torch of the MRI kernel's brain extraction (images/mri/install-bet.sh):
    # no torchvision, no Horovod, no CUDA build
    main = subprocess.run([sys.executable, "-c", "import torch; print(torch.version.cuda)"], capture_output=True, text=True)
    assert main.returncode != 0 or main.stdout.strip() == "None"
    for module in ("torchvision", "horovod"):
        assert subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode != 0


def test_backend_from_the_launchers_environment():
    """horovodrun, torchrun and srun each set their own variables; srun's become torch.distributed's."""
    require_dl_venv()
    code = """
import json
from hpclab.training.distributed import _slurm_env_to_torch, environment_backend as b
env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_NTASKS_PER_NODE": "2(x2)",
       "SLURM_NNODES": "2", "SLURM_JOB_ID": "4242", "MASTER_ADDR": "node01"}
_slurm_env_to_torch(env)
one = {"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0", "SLURM_NNODES": "1", "SLURM_JOB_ID": "7"}
_slurm_env_to_torch(one)
print(json.dumps([b({"HOROVOD_RANK": "0", "RANK": "0", "WORLD_SIZE": "2"}), b({"RANK": "1", "WORLD_SIZE": "2"}),
                  b({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}), b({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}), b({}),
                  [env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")],
                  [one[k] for k in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")]]))
"""
    out = json.loads(dl_run([str(DL_PYTHON), "-c", code]).stdout)
    assert out == ["horovod", "ddp", "ddp", "none", "none", ["3", "4", "1", "2", "node01", "24242"],
                   ["127.0.0.1", "20007", "2"]]


def test_torch_threads_follow_the_one_rule_for_cores():
    """hpclab.session.allocated_cores: SLURM_CPUS_PER_TASK capped by the affinity is one srun task's (one rank's)
    share; an affinity without SLURM is shared by the node's ranks; --threads wins over both."""
    require_dl_venv()
    code = """
import json
from hpclab.training.config import TrainConfig
from hpclab.training.distributed import Backend
from hpclab.training.trainer import _threads
two = Backend(); two.local_size = 2
cfg = TrainConfig()
print(json.dumps([_threads(cfg, two, {"SLURM_CPUS_PER_TASK": "3"}, [0, 1, 2, 3, 4, 5]),
                  _threads(cfg, two, {"SLURM_CPUS_PER_TASK": "8"}, [0, 1]),
                  _threads(cfg, two, {"SLURM_CPUS_PER_TASK": "lots"}, [0, 1, 2, 3]),
                  _threads(cfg, two, {}, [0, 1, 2, 3, 4, 5]), _threads(cfg, two, {}, [0]),
                  _threads(TrainConfig(threads=5), two, {"SLURM_CPUS_PER_TASK": "3"}, [0])]))
"""
    out = json.loads(dl_run([str(DL_PYTHON), "-c", code]).stdout)
    assert out == [3, 2, 2, 3, 1, 5]


# Small enough for 2 cores: GroupNorm resnet18 (BatchNorm-free), 32x32 synthetic images, 3 SGD steps.
EQUIV = dict(data="synthetic", arch="resnet18", norm="group", image_size=32, num_classes=10, synthetic_size=24,
             epochs=1, lr=0.01, lr_scaling="none", schedule="constant", momentum=0.9, weight_decay=1e-4,
             checkpoint=False, save_rank_states=True, timing_skip_steps=0, log_every=1)


@pytest.fixture(scope="module")
def single_process_8(tmp_path_factory):
    """One process on the concatenated batch: 8 images per step, 3 steps."""
    require_dl_venv()
    out = tmp_path_factory.mktemp("single8")
    run = launch_local(TrainConfig(**EQUIV, batch_size=8, out_dir=str(out)), nproc=1, backend="none",
                       python=str(DL_PYTHON), progress=False, env=dl_env(), timeout=300)
    assert run.metrics["steps_per_epoch"] == 3 and run.metrics["world_size"] == 1
    return out / "rank0.pt"


_two_rank_runs: dict[str, object] = {}


def _two_ranks(backend: str, tmp_path_factory):
    if backend not in _two_rank_runs:
        out = tmp_path_factory.mktemp(f"two-{backend}")
        run = launch_local(TrainConfig(**EQUIV, batch_size=4, out_dir=str(out)), nproc=2, backend=backend,
                           python=str(DL_PYTHON), progress=False, env=dl_env(), timeout=300)
        _two_rank_runs[backend] = (out, run)
    return _two_rank_runs[backend]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("backend", ["horovod", "ddp"])
def test_two_gloo_ranks_equal_one_process_on_the_concatenated_batch(backend, single_process_8, tmp_path_factory):
    out, run = _two_ranks(backend, tmp_path_factory)
    m = run.metrics
    assert m["world_size"] == 2 and m["global_batch"] == 8 and m["steps_per_epoch"] == 3
    assert m["backend"] == backend and "gloo" in m["backend_detail"]
    ranks = compare_states(out / "rank0.pt", out / "rank1.pt")[str(out / "rank1.pt")]
    assert ranks["same_keys"] and ranks["max_abs"] <= 1e-6, ranks            # both ranks hold one model
    single = compare_states(single_process_8, out / "rank0.pt")[str(out / "rank0.pt")]
    assert single["same_keys"] and single["max_abs"] <= 1e-5, single         # = 1 process x 2b
    assert m["history"][0]["train_images"] == 24


def test_the_equivalence_check_is_sensitive(single_process_8, tmp_path):
    """One process with batch 4 (6 steps) is a different training: far outside the 1e-5 tolerance."""
    run = launch_local(TrainConfig(**EQUIV, batch_size=4, out_dir=str(tmp_path)), nproc=1, backend="none",
                       python=str(DL_PYTHON), progress=False, env=dl_env(), timeout=300)
    assert run.metrics["steps_per_epoch"] == 6
    diff = compare_states(single_process_8, tmp_path / "rank0.pt")[str(tmp_path / "rank0.pt")]
    assert diff["max_abs"] > 1e-3, diff


@pytest.mark.timeout(900)
def test_horovod_and_ddp_give_the_same_weights(tmp_path_factory):
    hvd_out, _ = _two_ranks("horovod", tmp_path_factory)
    ddp_out, _ = _two_ranks("ddp", tmp_path_factory)
    diff = compare_states(hvd_out / "rank0.pt", ddp_out / "rank0.pt")[str(ddp_out / "rank0.pt")]
    assert diff["max_abs"] <= 1e-6, diff


@pytest.mark.timeout(900)
def test_digits_under_horovodrun_reaches_90_percent_with_identical_batchnorm_ranks(tmp_path):
    """The CLI as users start it: `horovodrun -np 2 ... hpclab train resnet` (torchvision resnet18 with BatchNorm)."""
    require_dl_venv()
    out = tmp_path / "digits"
    cmd = [str(DL_VENV / "bin" / "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo",
           str(DL_VENV / "bin" / "hpclab"), "train", "resnet", "--data", "digits", "--arch", "resnet18",
           "--image-size", "32", "--epochs", "3", "--batch-size", "32", "--lr", "0.2", "--warmup-epochs", "0.3",
           "--out-dir", str(out), "--save-rank-states", "--log-every", "10"]
    proc = dl_run(cmd, timeout=840)
    assert "horovod 2 processes (gloo)" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert metrics["global_batch"] == 64 and metrics["peak_lr"] == pytest.approx(0.2 * 64 / 256)
    assert metrics["final"]["val_acc"] >= 0.90, rows
    assert math.isclose(float(rows[-1]["val_acc"]), metrics["final"]["val_acc"])
    # BatchNorm: gradients are averaged, and running statistics are averaged after each epoch
    ranks = compare_states(out / "rank0.pt", out / "rank1.pt")[str(out / "rank1.pt")]
    assert ranks["same_keys"] and ranks["max_abs"] <= 1e-6, ranks
    # rank 0's checkpoint holds the same model
    ckpt = compare_states(out / "rank0.pt", out / "checkpoint.pt")[str(out / "checkpoint.pt")]
    assert ckpt["max_abs"] == 0.0, ckpt
    events = [json.loads(line)["event"] for line in open(out / "events.jsonl")]
    assert events[0] == "start" and events.count("epoch") == 3 and events[-1] == "end"


RESUME = dict(data="synthetic", arch="resnet18", image_size=32, num_classes=10, synthetic_size=32, batch_size=4,
              lr=0.02, lr_scaling="none", schedule="constant", weight_decay=1e-4, save_rank_states=True,
              timing_skip_steps=0)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("backend", ["horovod", "ddp"])
def test_resume_from_checkpoint_continues_the_same_training(backend, tmp_path):
    """2 epochs straight == 1 epoch, then --resume to 2 (weights, momentum and BN statistics restored)."""
    require_dl_venv()
    go = lambda out, epochs, resume=False: launch_local(  # noqa: E731
        TrainConfig(**RESUME, epochs=epochs, resume=resume, out_dir=str(out)), nproc=2, backend=backend,
        python=str(DL_PYTHON), progress=False, env=dl_env(), timeout=300)
    straight = go(tmp_path / "straight", 2)
    go(tmp_path / "resumed", 1)
    resumed = go(tmp_path / "resumed", 2, resume=True)
    assert resumed.metrics["resumed_from_epoch"] == 1
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert resumed.history[0] == straight.history[0] | {k: resumed.history[0][k] for k in
                                                        ("images_per_s", "epoch_seconds")}
    ranks = compare_states(tmp_path / "resumed" / "rank0.pt", tmp_path / "resumed" / "rank1.pt",
                           tmp_path / "straight" / "rank0.pt")
    assert ranks[str(tmp_path / "resumed" / "rank1.pt")]["max_abs"] <= 1e-6
    assert ranks[str(tmp_path / "straight" / "rank0.pt")]["max_abs"] <= 1e-5, ranks


def test_imagefolder_data_trains_through_a_dataloader(tmp_path):
    """An ImageFolder (train/ and val/ with class folders), written from the digits as PNGs."""
    require_dl_venv()
    folder = tmp_path / "digits-png"
    dl_run([str(DL_PYTHON), "-c", "import sys; from hpclab.training import export_digits_image_folder as e; "
            "e(sys.argv[1], image_size=32, limit=200)", str(folder)])
    assert sorted(p.name for p in (folder / "train").iterdir()) == [str(d) for d in range(10)]
    # through the CLI, which starts the 2 processes itself (torchrun) and streams their progress
    proc = dl_run([str(DL_VENV / "bin" / "hpclab"), "train", "resnet", "--data", str(folder), "--arch", "resnet18",
                   "--image-size", "32", "--epochs", "1", "--batch-size", "25", "--workers", "1",
                   "--out-dir", str(tmp_path / "run"), "--nproc", "2", "--launcher", "torchrun"], timeout=300)
    assert "ddp × 2 on cpu" in proc.stdout and "epoch 1: train loss" in proc.stdout and "done in" in proc.stdout
    m = TrainingRun.load(tmp_path / "run").metrics
    assert m["num_classes"] == 10 and m["data"].startswith("ImageFolder") and "200 train / 200 val" in m["data"]
    assert m["steps_per_epoch"] == 4 and m["history"][0]["train_images"] == 200
    assert 0.0 <= m["final"]["val_acc"] <= 1.0


def test_fp16_autocast_with_grad_scaler_under_horovod_keeps_ranks_identical(tmp_path):
    """fp16 needs a GradScaler; under Horovod: synchronize, unscale, then step without a second allreduce."""
    require_dl_venv()
    run = launch_local(TrainConfig(data="synthetic", arch="resnet18", image_size=32, num_classes=10,
                                   synthetic_size=32, batch_size=8, amp="fp16", save_rank_states=True,
                                   out_dir=str(tmp_path)),
                       nproc=2, backend="horovod", python=str(DL_PYTHON), progress=False, env=dl_env(), timeout=300)
    assert run.metrics["amp"] == "float16" and math.isfinite(run.final["train_loss"])
    ranks = compare_states(tmp_path / "rank0.pt", tmp_path / "rank1.pt")[str(tmp_path / "rank1.pt")]
    assert ranks["max_abs"] <= 1e-6, ranks


def test_a_failing_run_raises_with_the_log_tail(tmp_path):
    require_dl_venv()
    from hpclab.training import TrainingError

    with pytest.raises(TrainingError, match="unknown torchvision model 'resnet7'"):
        launch_local(TrainConfig(data="digits", arch="resnet7", out_dir=str(tmp_path)), nproc=1, backend="none",
                     python=str(DL_PYTHON), progress=False, env=dl_env(), timeout=300)


def test_bf16_channels_last_on_cuda(tmp_path):
    require_dl_venv()
    if not cuda_available():
        pytest.skip("no CUDA device")
    run = launch_local(TrainConfig(data="synthetic", arch="resnet50", image_size=224, batch_size=64,
                                   steps_per_epoch=20, out_dir=str(tmp_path)),
                       nproc=1, backend="none", python=str(DL_PYTHON), progress=False, env=dl_env(), timeout=300)
    m = run.metrics
    assert m["amp"] == "bfloat16" and m["channels_last"] is True and m["device"].startswith("cuda")
    assert m["final"]["images_per_s"] > 100
