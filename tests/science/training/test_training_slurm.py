"""Training as a SLURM job: the batch script line by line, and a 2-task `srun` run on the dev cluster."""

from __future__ import annotations

import json
import os

import pytest

from hpclab.training import SlurmResources, TrainConfig, follow_slurm, sbatch_script, submit_slurm

from support.dltools import DL_PYTHON, compare_states, require_dl_venv

CFG = TrainConfig(data="digits", arch="resnet50", epochs=90, batch_size=256, warmup_epochs=5,
                  out_dir="/scratch/alice/eurosat")


def test_sbatch_script_for_two_nodes_with_four_gpus_each():
    resources = SlurmResources(nodes=2, gpus_per_node=4, cpus_per_task=8, mem="256G", time="12:00:00",
                               partition="booster", account="hpclab", extra_sbatch=["--exclusive"],
                               setup=["module load CUDA/12"])
    lines = sbatch_script(CFG, resources, python="/opt/dl/bin/python").splitlines()
    assert lines == [
        "#!/bin/bash",
        "#SBATCH --job-name=hpclab-train",
        "#SBATCH --chdir=/scratch/alice/eurosat",
        "#SBATCH --output=/scratch/alice/eurosat/slurm-%j.out",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --partition=booster",
        "#SBATCH --account=hpclab",
        "#SBATCH --mem=256G",
        "#SBATCH --gres=gpu:4",
        "#SBATCH --time=12:00:00",
        "#SBATCH --exclusive",
        "set -euo pipefail",
        "module load CUDA/12",
        'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))",
        "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}",
        "export PYTHONUNBUFFERED=1",
        'echo "hpclab-train: job $SLURM_JOB_ID, $SLURM_NTASKS tasks on $SLURM_JOB_NODELIST"',
        "srun --kill-on-bad-exit=1 /opt/dl/bin/python -m hpclab.training --data=digits --epochs=90 "
        "--batch-size=256 --warmup-epochs=5 --backend=ddp --out-dir=/scratch/alice/eurosat --progress=log",
    ]
    assert resources.ntasks == 8


def test_sbatch_script_with_horovodrun_inside_the_job_from_a_hub_profile():
    profile = {"slug": "gpu-4", "cpus": 32, "memory": 128 * 2**30, "gpus": 4, "time_limit": 7200,
               "slurm": {"partition": "gpu", "qos": "normal", "gpu_type": "h100", "setup": ["ulimit -n 4096"]}}
    resources = SlurmResources.from_profile(profile, nodes=3)
    assert (resources.nodes, resources.ntasks_per_node, resources.cpus_per_task) == (3, 4, 8)
    lines = sbatch_script(CFG, resources, python="/opt/dl/bin/python", launcher="horovodrun",
                          job_name="eurosat", env={"NCCL_DEBUG": "WARN"}).splitlines()
    assert lines[1] == "#SBATCH --job-name=eurosat"
    assert lines[4:12] == ["#SBATCH --nodes=3", "#SBATCH --ntasks-per-node=4", "#SBATCH --cpus-per-task=8",
                           "#SBATCH --partition=gpu", "#SBATCH --qos=normal", "#SBATCH --mem=128G",
                           "#SBATCH --gres=gpu:h100:4", "#SBATCH --time=02:00:00"]
    assert lines[12:15] == ["set -euo pipefail", "ulimit -n 4096", "export NCCL_DEBUG=WARN"]
    assert lines[-2] == ('HOSTS=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/$/:$SLURM_NTASKS_PER_NODE/"'
                         " | paste -sd, -)")
    assert lines[-1].startswith('/opt/dl/bin/horovodrun -np "$SLURM_NTASKS" -H "$HOSTS" --gloo /opt/dl/bin/python '
                                "-m hpclab.training ")
    assert "--backend=horovod" in lines[-1]


def test_sbatch_script_rejects_mismatched_launcher_and_backend():
    with pytest.raises(ValueError):
        sbatch_script(CFG, SlurmResources(), launcher="horovodrun", backend="ddp")
    with pytest.raises(ValueError):
        sbatch_script(CFG, SlurmResources(), launcher="mpirun")
    with pytest.raises(ValueError):
        SlurmResources(nodes=0)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("backend", ["ddp", "horovod"])
def test_two_srun_tasks_train_on_the_dev_cluster(slurm_cluster, tmp_path, backend):
    """sbatch + srun, 2 tasks over gloo on the real one-node SLURM, DDP or Horovod (its rendezvous run by rank 0, no
    horovodrun); the job's log is followed to the end."""
    require_dl_venv()
    env = dict(os.environ, SLURM_CONF=slurm_cluster)
    cfg = TrainConfig(data="digits", arch="resnet18", image_size=32, epochs=1, batch_size=32, lr=0.2,
                      steps_per_epoch=8, save_rank_states=True, log_every=4, out_dir=str(tmp_path / "run"))
    resources = SlurmResources(nodes=1, tasks_per_node=2, cpus_per_task=1, mem="4G", time="00:15:00",
                               partition="cpu")
    job = submit_slurm(cfg, resources, python=str(DL_PYTHON), backend=backend, env=env)
    assert job.output == tmp_path / "run" / f"slurm-{job.job_id}.out"
    lines: list[str] = []
    job = follow_slurm(job, echo=lines.append, poll_seconds=1, timeout=600, env=env)
    log = "\n".join(lines)
    assert job.ok, f"{job.state} {job.exit_code}\n{log}"
    assert f"hpclab-train: job {job.job_id}, 2 tasks on" in log
    described = {"ddp": "torch.distributed DDP 2 processes (gloo)", "horovod": "horovod 2 processes (gloo)"}[backend]
    assert described in log and "epoch 1/1: train loss" in log, log
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["backend"] == backend and metrics["threads_per_process"] == 1
    ranks = compare_states(tmp_path / "run" / "rank0.pt", tmp_path / "run" / "rank1.pt")
    assert ranks[str(tmp_path / "run" / "rank1.pt")]["max_abs"] <= 1e-6
