"""Pure parts of the SLURM backend: batch script lines, SLURM output parsers, the shared queue's caching rules."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hpclab_hub.backends.slurm.batch_script import build_batch_script, sbatch_options
from hpclab_hub.backends.slurm.ending import describe_end, describe_pending
from hpclab_hub.backends.slurm.errors import SlurmUnavailable
from hpclab_hub.backends.slurm.outputs import JobInfo, parse_node_address, parse_sinfo_json, parse_squeue, parse_start_times
from hpclab_hub.backends.slurm.queue import JobQueue
from hpclab_hub.backends.without_root import without_root_refusals
from hpclab_hub.config import parse_deployment

YAML = """
backends:
  cluster:
    type: slurm
    partition: cpu
    account: proj42
    setup: ["module load python/3.11", "source /sw/hpclab/bin/activate"]
profiles:
  - slug: gpu-a100
    display_name: GPU
    backend: cluster
    cpus: 8
    memory: 32G
    gpus: 2
    time_limit: "1-12:00:00"
    slurm:
      partition: gpu
      qos: gpu-normal
      reservation: course
      constraint: a100
      gpu_type: a100
      extra_sbatch: ["--exclusive"]
      setup: ["export HF_HOME=/scratch/$USER/hf"]
  - slug: small
    display_name: Small
    backend: cluster
"""


@pytest.fixture
def deployment():
    return parse_deployment(YAML, Path("/etc/hpclab"))


def test_batch_script_lists_every_profile_setting_line_by_line(deployment):
    profile, backend = deployment.profiles[0], deployment.backends["cluster"]
    script = build_batch_script(profile, backend, "alice", "/home/alice", ["/sw/bin/hpclab-singleuser", "jupyterhub-singleuser"], hub_id="abc")
    assert script.splitlines() == [
        "#!/bin/bash -l",
        "#SBATCH --job-name=hpclab-alice",
        "#SBATCH --comment=hpclab:abc:gpu-a100",
        "#SBATCH --chdir=/home/alice",
        "#SBATCH --output=/home/alice/.hpclab-jupyter-%j.log",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj42",
        "#SBATCH --qos=gpu-normal",
        "#SBATCH --reservation=course",
        "#SBATCH --mem=32G",
        "#SBATCH --gres=gpu:a100:2",
        "#SBATCH --time=1-12:00:00",
        "#SBATCH --constraint=a100",
        "#SBATCH --exclusive",
        "",
        "set -e",
        "unset XDG_RUNTIME_DIR",
        "# environment set-up (deploy YAML: backends.*.setup, profiles[].slurm.setup)",
        "module load python/3.11",
        "source /sw/hpclab/bin/activate",
        "export HF_HOME=/scratch/$USER/hf",
        "",
        "exec /sw/bin/hpclab-singleuser jupyterhub-singleuser",
    ]


def test_jobs_with_a_time_limit_are_signalled_ahead_of_it_for_the_final_save(deployment):
    timed, untimed = deployment.profiles
    options = sbatch_options(timed, deployment.backends["cluster"], "alice", "/home/alice", signal_before=120)
    assert options[options.index("--time=1-12:00:00") + 1] == "--signal=B:USR2@120"  # B: the batch shell, i.e. the exec'd server
    assert not any(o.startswith("--signal") for o in sbatch_options(timed, deployment.backends["cluster"], "a", "/h"))
    assert not any(o.startswith("--signal") for o in sbatch_options(untimed, deployment.backends["cluster"], "a", "/h", signal_before=120))
    # an early signal must not kill the server before hpclab.walltime handles it: ignored (inherited by exec) until then
    script = build_batch_script(timed, deployment.backends["cluster"], "alice", "/home/alice", ["x"], signal_before=120).splitlines()
    assert script[-3:] == ["trap '' USR2", "", "exec x"]
    assert "trap" not in build_batch_script(timed, deployment.backends["cluster"], "alice", "/home/alice", ["x"])


def test_minimal_profile_falls_back_to_backend_defaults_and_omits_unset_options(deployment):
    options = sbatch_options(deployment.profiles[1], deployment.backends["cluster"], "bob", "/home/bob")
    assert "--partition=cpu" in options and "--account=proj42" in options
    assert not any(o.startswith(("--gres", "--mem", "--time", "--qos", "--reservation")) for o in options)


def test_batch_script_never_contains_environment_values(deployment):
    script = build_batch_script(deployment.profiles[0], deployment.backends["cluster"], "alice", "/home/alice", ["x"])
    assert "JUPYTERHUB_API_TOKEN" not in script and "token" not in script.lower()


def test_squeue_output_is_parsed_with_empty_nodes_and_comments():
    jobs = parse_squeue("12|PENDING|Resources|n/a|alice|hpclab-alice|hpclab:abc:gpu\n13|RUNNING|None|node7|bob|hpclab-bob|(null)\n")
    assert jobs["12"] == JobInfo("12", "PENDING", "Resources", "", "alice", "hpclab-alice", "hpclab:abc:gpu")
    assert jobs["13"].node == "node7" and jobs["13"].comment == "" and jobs["13"].active


def test_start_times_skip_unknown_estimates():
    assert parse_start_times("12|2026-11-24T10:00:00\n13|N/A\n") == {"12": "2026-11-24T10:00:00"}


def test_sinfo_json_gives_free_cores_and_gpus_per_partition():
    data = {"nodes": [
        {"state": "mixed", "cpus": 8, "alloc_cpus": 3, "gres": "gpu:a100:4(S:0-1)", "gres_used": "gpu:a100:1(IDX:0)", "partitions": ["gpu"]},
        {"state": "drained", "cpus": 8, "alloc_cpus": 0, "gres": "gpu:4", "gres_used": "gpu:0", "partitions": ["gpu"]},
        {"state": "idle", "cpus": 16, "alloc_cpus": 0, "gres": "", "gres_used": "", "partitions": ["cpu"]},
    ]}
    parts = parse_sinfo_json(data)
    assert (parts["gpu"].nodes, parts["gpu"].cpus_free, parts["gpu"].gpus_total, parts["gpu"].gpus_free) == (2, 5, 8, 3)
    assert (parts["cpu"].cpus_free, parts["cpu"].gpus_total) == (16, 0)


def test_end_and_pending_descriptions_use_slurms_words():
    assert describe_end(JobInfo("7", "TIMEOUT", "None", "n1", "a", "hpclab-a", "")) == "SLURM job 7 reached its time limit (TIMEOUT)."
    text = describe_pending(JobInfo("8", "PENDING", "QOSMaxGRESPerUser", "", "a", "hpclab-a", ""), "2026-11-24T10:00:00", 42.7)
    assert "QOSMaxGRESPerUser" in text and "GPU limit" in text and "2026-11-24 10:00:00" in text and "42 s" in text


def run_async(coroutine):
    """Run a coroutine on a fresh loop in its own thread (another test tool may own this thread's loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class FakeSqueueClient:
    """A stand-in for SlurmClient.jobs() (a fake, named as such): scripted answers, counted calls."""

    slurm_conf = None

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = 0

    async def jobs(self):
        self.calls += 1
        await asyncio.sleep(0.05)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def start_times(self, job_ids):
        return {}


def test_concurrent_spawners_share_one_squeue_call():
    job = JobInfo("5", "RUNNING", "None", "n1", "a", "hpclab-a", "")
    client = FakeSqueueClient([{"5": job}])
    queue = JobQueue(client, max_age=10)

    async def many():
        return await asyncio.gather(*(queue.status("5") for _ in range(25)))

    results = run_async(many())
    assert client.calls == 1
    assert all(r.known and r.info == job for r in results)


def test_failed_query_means_unknown_never_gone():
    client = FakeSqueueClient([SlurmUnavailable("Unable to contact slurm controller")])
    queue = JobQueue(client, max_age=0)
    status = run_async(queue.status("5"))
    assert not status.known and not status.gone
    assert "Unable to contact" in queue.last_error


def test_job_missing_from_a_successful_query_is_gone():
    client = FakeSqueueClient([{}])
    status = run_async(JobQueue(client, max_age=0).status("5"))
    assert status.known and status.gone


def test_qos_wall_time_limits_are_read_from_sacctmgr():
    """``sacctmgr -nP show qos format=name,maxwall`` as Slurm 22.05 prints it: no limit is no entry."""
    from hpclab_hub.backends.slurm.availability import parse_qos_max_wall

    assert parse_qos_max_wall("normal|\ndebug|00:30:00\nlong|2-00:00:00\nodd|soon\n") == {"debug": 1800, "long": 172800}


def test_hostlists_expand_and_reserved_cores_count_in_every_partition_sharing_a_node():
    from hpclab_hub.backends.slurm.outputs import expand_hostlist, reserved_cores

    assert expand_hostlist("node[01-03,07],gpu1") == {"node01", "node02", "node03", "node07", "gpu1"}
    assert expand_hostlist("(null)") == set() and expand_hostlist("vm") == {"vm"}
    settings = {"cpu": {"Nodes": "node[01-04]"}, "gpu": {"Nodes": "gpu[1-2]"}, "all": {"Nodes": "node[01-04],gpu[1-2]"}}
    lines = ("ReservationName=course StartTime=x Nodes=node02 CoreCnt=1 PartitionName=cpu Flags=SPEC_NODES   NodeName=node02 "
             "CoreIDs=0 TRES=cpu=2 Users=alice State=ACTIVE\n"
             "ReservationName=later Nodes=gpu1 CoreCnt=4 TRES=cpu=4 State=INACTIVE\n"
             "ReservationName=maint Nodes=gpu2 CoreCnt=3 State=ACTIVE\n")
    assert reserved_cores(lines, settings) == {"cpu": {"course": 2}, "all": {"course": 2, "maint": 3}, "gpu": {"maint": 3}}


def test_a_pending_job_without_a_reason_yet_says_it_waits_for_the_scheduler():
    text = describe_pending(JobInfo("9", "PENDING", "None", "", "a", "hpclab-a", ""), "2026-12-06T12:00:00", 1.2)
    assert text == "Job 9 pending (queued, waiting for the scheduler), expected start 2026-12-06 12:00:00, waiting 1 s"
    assert "None" not in text


def test_a_nodes_address_is_its_nodeaddr_as_slurm_reaches_it():
    """The proxy's target for a job's server is the node's NodeAddr (the multi-node dev cluster's namespace address),
    read from ``scontrol show node -o`` as 22.05 writes it; the node's name where SLURM names no address."""
    line = ("NodeName=node2 Arch=x86_64 CoresPerSocket=1  CPUAlloc=0 CPUEfctv=8 CPUTot=8 Gres=gpu:2 NodeAddr=10.77.1.12 "
            "NodeHostName=node2 Version=22.05.8 OS=Linux 6.18.44 #1 SMP PREEMPT_DYNAMIC @0  RealMemory=16000")
    assert parse_node_address(line, "node2") == "10.77.1.12"
    assert parse_node_address("NodeName=gpu7 NodeAddr=(null) State=IDLE", "gpu7") == "gpu7"
    assert parse_node_address("", "gpu7") == "gpu7"


def test_internal_ssl_is_refused_to_a_hub_without_root_with_the_reason():
    """hub.internal_ssl hands each person a key in their home: a hub without root refuses to start on it, saying why;
    a hub as root (or without internal_ssl) has nothing to refuse."""
    yaml_text = """
hub: {internal_ssl: true}
backends:
  cluster: {type: slurm, submit_wrapper: /usr/local/libexec/hpclab-submit}
profiles:
  - {slug: cpu, display_name: CPU, backend: cluster, cpus: 1}
"""
    deployment = parse_deployment(yaml_text, Path("/etc/hpclab"))
    (refusal,) = without_root_refusals(deployment, euid=1000)
    assert refusal.startswith("hub.internal_ssl gives each person") and "run the hub as root" in refusal
    assert without_root_refusals(deployment, euid=0) == []
    plain = parse_deployment(yaml_text.replace("internal_ssl: true", "internal_ssl: false"), Path("/etc/hpclab"))
    assert without_root_refusals(plain, euid=1000) == []
