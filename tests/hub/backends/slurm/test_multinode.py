"""Several nodes on a network (issue 28 item 2): the dev cluster with HPCLAB_SLURM_NODES=2, each slurmd its own host
(network namespace on a bridge, host name, spool, a mount namespace without the hub's venv), and the hub on the
login side reaching a job's server across that network, at the node's address, with software from a node-install
prefix. Then a Josephson sweep whose dask workers are SLURM jobs on both nodes, and DDP training with one rank on
each node that equals one process on twice the batch."""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import requests
import websocket
import yaml

from hpclab.mri import find_subjects
from hpclab.mri.cohort import SUBJECT_LIST, SUMMARY_NAME, cohort_scripts
from hpclab.mri.slurm import JobResources, submit, wait
from hpclab.training import SlurmResources, TrainConfig, follow_slurm, launch_local, submit_slurm
from support import mri_data
from support.dltools import DL_PYTHON, compare_states, dl_env, require_dl_venv
from support.hubtools import Hub, login, stop_server
from support.multinode import MultiNodeCluster, node_install
from support.slurmtools import slurm_hub_yaml, started_slurm_hub, wait_for

pytestmark = pytest.mark.hub

#: this cluster's own prefix, ports (slurmctld 6951; slurmd 6952 inside each node; slurmdbd and MariaDB 6953, 6954)
#: and subnet, apart from the one-node clusters of the other tests (6937, 6947, 6961-6972; 127.0.0.1) and from the
#: benchmarks' two-node cluster (benchmarks/dev_slurm.py: 6955-6958, 10.77.2.0/24). HPCLAB_TEST_MULTI_PREFIX, _PORT,
#: _SUBNET and _NODE_INSTALL give a second run its own cluster and node prefix (two runs of this module at once)
MULTI = MultiNodeCluster(prefix=Path(os.environ.get("HPCLAB_TEST_MULTI_PREFIX", "/tmp/hpclab-slurm-multi")),
                         ctld_port=int(os.environ.get("HPCLAB_TEST_MULTI_PORT", "6951")),
                         subnet=os.environ.get("HPCLAB_TEST_MULTI_SUBNET", "10.77.1"))
PREFIX, CTLD_PORT, SUBNET = MULTI.prefix, MULTI.ctld_port, MULTI.subnet
LOGIN_ADDR = MULTI.login_addr
NODE_ADDR = MULTI.node_addr  # node1 10.77.1.11, node2 10.77.1.12
NODE_INSTALL = Path(os.environ.get("HPCLAB_TEST_MULTI_NODE_INSTALL", "/tmp/hpclab-node-multi"))
#: the curated kernel the node prefix carries (node-install --config): its runtime is the prefix itself
NODE_KERNELS = {"josephson": {"display_name": "Josephson (SciPy, numba, joblib)",
                              "runtime": {"type": "venv", "prefix": str(NODE_INSTALL)}}}
#: what the nodes must not see: the hub's venv (the repository's .venv, and the interpreter running these tests)
HIDDEN = MULTI.hide
CONF = MULTI.conf


def _env() -> dict[str, str]:
    return MULTI.env()


def _squeue(*argv: str) -> str:
    return subprocess.run(["squeue", "-h", *argv], env=_env(), check=True, capture_output=True, text=True).stdout


def _cancel_all() -> None:
    subprocess.run(["scancel", "--user=alice"], env=_env(), capture_output=True)
    subprocess.run(["scancel", "--user=root"], env=_env(), capture_output=True)
    wait_for(lambda: not _squeue("-t", "PENDING,RUNNING,COMPLETING"), 30, f"jobs left: {_squeue()}")


@pytest.fixture(scope="module")
def multinode() -> Iterator[str]:
    """The two-node dev cluster, wiped and started, held by this test run alone; yields SLURM_CONF."""
    if os.geteuid() != 0:
        pytest.skip("the SLURM dev cluster needs root (it makes namespaces, starts slurmd and submits as test users)")
    for name in ("alice",):
        if subprocess.run(["id", name], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-m", name], check=True)
    with MULTI.running() as conf:
        yield conf
    # down removes what up made: no namespace, veth or bridge of this cluster is left
    assert not MULTI.leftovers(), MULTI.leftovers()


@pytest.fixture(scope="module")
def node_prefix(tmp_path_factory) -> str:
    """A shared software prefix from ``hpclab-hub node-install --config`` (what the nodes run instead of the hub's
    venv), with the curated josephson kernelspec of a deploy YAML under PREFIX/share/jupyter/kernels."""
    config = tmp_path_factory.mktemp("node-install") / "hpclab.yaml"
    config.write_text(yaml.safe_dump({**slurm_hub_yaml(config.parent / "state", CONF), "kernels": NODE_KERNELS}))
    node_install(NODE_INSTALL, config=config)
    return str(NODE_INSTALL)


@pytest.fixture
def cluster(multinode) -> Iterator[str]:
    """The cluster, with every job cancelled after each test."""
    yield multinode
    _cancel_all()


@dataclass
class BridgeHub(Hub):
    """A hub whose proxy listens on the bridge's address alone (hub.ip), opened there by the test's client."""

    @property
    def url(self) -> str:
        return f"http://{LOGIN_ADDR}:{self.config['hub']['port']}"


def _netns_inode(path: str) -> int:
    return os.stat(path).st_ino


def test_each_node_is_its_own_host_on_the_bridge_without_the_hubs_venv(cluster):
    """slurm.conf names each node at its namespace's address; a job step on each node runs under that node's host
    name, with that address, in a network namespace of its own whose one route is the bridge's subnet, and sees an
    empty .venv but the homes."""
    conf = Path(cluster).read_text()
    for name, address in NODE_ADDR.items():
        assert f"NodeName={name} NodeAddr={address} " in conf
    assert f"SlurmctldHost={socket.gethostname().split('.')[0]}({LOGIN_ADDR})" in conf
    probe = ("hostname; hostname -I; readlink /proc/self/ns/net; ls -A " + " ".join(HIDDEN) + " | wc -l; "
             "test -d /home/alice && echo homes; /usr/sbin/ip -4 -o route | tr -s ' ' | cut -d' ' -f1-3")
    for name, address in NODE_ADDR.items():
        out = subprocess.run(["sudo", "-u", "alice", "env", f"SLURM_CONF={cluster}", "srun", "-w", name, "-N1",
                              "bash", "-c", probe], capture_output=True, text=True, timeout=60).stdout.split("\n")
        assert out[0] == name, out
        assert out[1].split() == [address], out  # its only address besides the loopback
        assert out[2] == f"net:[{_netns_inode(f'/run/netns/hpcns{CTLD_PORT}-{name[-1]}')}]", out
        assert out[2] != os.readlink("/proc/self/ns/net"), out
        assert out[3] == "0", f"{name} sees files in {HIDDEN}"
        assert out[4] == "homes", out
        assert out[5:] == [f"{SUBNET}.0/24 dev eth0", ""], out  # one route, the bridge's subnet: no way beyond it


def test_a_server_on_node2_is_reached_by_the_proxy_at_node2s_address(cluster, node_prefix, tmp_path):
    """A job placed on node2 runs the server from the node prefix inside node2's namespaces; the hub and its proxy
    (on the login side, bound to the bridge's address) route to node2's address, never 127.0.0.1, and a page of
    the server comes back through the proxy."""
    config = slurm_hub_yaml(tmp_path / "state", cluster)
    config["hub"].update(ip=LOGIN_ADDR, user_subdomains=False)  # the proxy listens where the nodes reach it
    config["backends"]["cluster"]["node_prefix"] = node_prefix
    config["profiles"][0]["slurm"]["extra_sbatch"] = ["--nodelist=node2"]
    with started_slurm_hub(BridgeHub(tmp_path, config), cluster, accounts=("alice",)) as hub:
        admin, alice = login(hub, "admin"), login(hub, "alice")
        assert alice.post_spawn("alice", "cpu").status_code == 302
        try:
            alice.wait_ready("alice", timeout=150)
            assert _squeue("-u", "alice", "-o", "%N").split() == ["node2"]
            routes = admin.api("GET", "/proxy").json()
            target = routes["/user/alice/"]["target"]
            assert target.startswith(f"http://{NODE_ADDR['node2']}:"), routes
            assert not [r for r in routes.values() if "127.0.0.1" in r["target"] and r["routespec"] != "/"], routes

            def server():
                for proc in psutil.process_iter(["username", "cmdline"]):
                    if proc.info["username"] == "alice" and "jupyterhub-singleuser" in " ".join(proc.info["cmdline"] or []):
                        return proc
                return None

            proc = wait_for(server, 30, "no server process of alice's job")
            assert proc.environ()["SLURMD_NODENAME"] == "node2"
            assert os.readlink(f"/proc/{proc.pid}/ns/net") == f"net:[{_netns_inode(f'/run/netns/hpcns{CTLD_PORT}-2')}]"
            assert proc.cmdline()[0] == f"{node_prefix}/bin/python", proc.cmdline()
            for hidden in HIDDEN:  # the job's own view of the file system: the hub's venv is an empty folder
                assert os.listdir(f"/proc/{proc.pid}/root{hidden}") == [], hidden
            assert proc.environ()["JUPYTERHUB_API_URL"].startswith(f"http://{LOGIN_ADDR}:")
            page = alice.http.get(hub.user_url("alice") + "lab")  # through the hub's OAuth, then the proxy to node2
            assert page.status_code == 200 and page.url.startswith(hub.user_url("alice")), page.url
            assert alice.http.get(hub.user_url("alice") + "api/status").json()["started"], "no answer from the server's API"
        finally:
            stop_server(alice, "alice")


#: the cell the curated kernel runs: where it runs, from which Python, and a small Josephson sweep of hpclab's
CELL = ("import json, os, socket, sys\nfrom hpclab.josephson import sweep\n"
        "result = sweep(G=[10.0, 20.0], alpha=[0.1], r=0.1, progress=False)\n"
        "print(json.dumps({'host': socket.gethostname(), 'python': sys.executable, 'kernel': os.environ['HPCLAB_KERNEL'],"
        " 'job': os.environ['SLURM_JOB_ID'], 'points': int(result.state.size)}))")


def _run_cell(socket_url: str, cookie: str, code: str, timeout: float = 180) -> str:
    """Send ``code`` as an execute_request over the kernel's channels WebSocket (what a notebook cell does); its
    stdout once the kernel is idle again, or the error it raised."""
    channel = websocket.create_connection(socket_url, header=[f"Cookie: {cookie}"], timeout=timeout)
    msg_id = os.urandom(8).hex()
    channel.send(json.dumps({"header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "alice",
                                        "session": os.urandom(8).hex(), "version": "5.3"},
                             "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                             "content": {"code": code, "silent": False, "store_history": False,
                                         "user_expressions": {}, "allow_stdin": False}}))
    out: list[str] = []
    try:
        while True:
            message = json.loads(channel.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                raise AssertionError(f"the cell failed: {content['ename']}: {content['evalue']}")
            elif kind == "status" and content["execution_state"] == "idle":
                return "".join(out)
    finally:
        channel.close()


def test_a_curated_kernel_from_the_node_prefix_runs_a_cell_inside_a_job_on_node2(cluster, node_prefix, tmp_path):
    """The profile's curated kernel (josephson), installed into the node prefix by ``node-install --config``, is the
    one kernel the server on node2 offers; started through the server's REST API it runs there - hpclab-kernel of
    the prefix, in node2's network namespace, inside the server's job, with the hub's venv out of sight - and a cell
    of it runs a Josephson sweep and prints where it ran."""
    config = slurm_hub_yaml(tmp_path / "state", cluster)
    config["hub"].update(ip=LOGIN_ADDR, user_subdomains=False)
    config["backends"]["cluster"]["node_prefix"] = node_prefix
    config["kernels"] = NODE_KERNELS
    config["profiles"][0].update(kernels=["josephson"])
    config["profiles"][0]["slurm"]["extra_sbatch"] = ["--nodelist=node2"]
    with started_slurm_hub(BridgeHub(tmp_path, config), cluster, accounts=("alice",)) as hub:
        alice = login(hub, "alice")
        assert alice.post_spawn("alice", "cpu").status_code == 302
        try:
            alice.wait_ready("alice", timeout=150)
            base = hub.user_url("alice")
            assert alice.open_lab(base).status_code == 200  # the hub's OAuth: alice's cookie for her server
            specs = alice.http.get(base + "api/kernelspecs").json()
            assert set(specs["kernelspecs"]) == {"josephson"}, specs
            spec = specs["kernelspecs"]["josephson"]["spec"]  # PREFIX/share/jupyter/kernels/josephson/kernel.json's
            assert spec["argv"][0] == f"{node_prefix}/bin/hpclab-kernel", spec
            assert spec["metadata"]["hpclab"]["runtime"]["prefix"] == node_prefix, spec
            # the server's own _xsrf cookie (the hub's, on /hub/, has the same name)
            xsrf = next(c.value for c in alice.http.cookies if c.name == "_xsrf" and c.path.startswith("/user/alice"))
            started = alice.http.post(base + "api/kernels", json={"name": "josephson"}, headers={"X-XSRFToken": xsrf})
            assert started.status_code == 201, started.text
            kernel = started.json()["id"]
            cookie = alice.http.prepare_request(requests.Request("GET", base)).headers.get("Cookie", "")
            socket_url = base.replace("http://", "ws://", 1) + f"api/kernels/{kernel}/channels"
            printed = json.loads(_run_cell(socket_url, cookie, CELL).strip().splitlines()[-1])
            job = _squeue("-u", "alice", "-o", "%i").split()
            assert printed == {"host": "node2", "python": f"{node_prefix}/bin/python", "kernel": "josephson",
                               "job": job[0], "points": printed["points"]} and printed["points"] > 0, (printed, job)

            def kernel_process():
                for proc in psutil.process_iter(["username", "cmdline"]):
                    line = " ".join(proc.info["cmdline"] or [])
                    if proc.info["username"] == "alice" and "ipykernel" in line and kernel in line:
                        return proc
                return None

            proc = wait_for(kernel_process, 30, "no process of alice's kernel")
            assert os.readlink(f"/proc/{proc.pid}/ns/net") == f"net:[{_netns_inode(f'/run/netns/hpcns{CTLD_PORT}-2')}]"
            for hidden in HIDDEN:  # the kernel's view of the file system: the hub's venv is an empty folder
                assert os.listdir(f"/proc/{proc.pid}/root{hidden}") == [], hidden
        finally:
            stop_server(alice, "alice")


def test_a_josephson_sweep_runs_on_both_nodes_and_matches_the_serial_one(cluster, node_prefix, tmp_path, monkeypatch):
    """The sweep's dask workers are two exclusive SLURM jobs, so one per node; each runs the node prefix's Python and
    reaches the scheduler at the login address. The map equals the serial sweep's bit for bit, and SLURM's
    accounting lists both nodes."""
    from hpclab.josephson import slurm_cluster, sweep
    from hpclab.josephson.cluster import resolve_client, wait_for_workers

    grid = dict(G=np.linspace(10, 100, 6), alpha=np.linspace(0.02, 0.2, 5), r=0.1)
    serial = sweep(**grid, progress=False)
    monkeypatch.setenv("SLURM_CONF", cluster)
    workdir = tmp_path / "dask"
    workdir.mkdir()
    dask = slurm_cluster(jobs=2, cores=1, memory="1GiB", walltime="00:10:00", queue="cpu", python=f"{node_prefix}/bin/python",
                         job_extra_directives=["--exclusive"], log_directory=str(workdir), local_directory="/tmp",
                         scheduler_options={"host": LOGIN_ADDR}, job_name="hpclab-multinode")
    try:
        client, _ = resolve_client(dask)
        wait_for_workers(client, 2, timeout=180)
        hosts = client.run(socket.gethostname)
        assert sorted(hosts.values()) == ["node1", "node2"], hosts
        assert sorted(address.split("//")[1].split(":")[0] for address in hosts) == sorted(NODE_ADDR.values()), hosts
        executables = client.run(lambda: sys.executable)
        assert set(executables.values()) == {f"{node_prefix}/bin/python"}, executables
        result = sweep(**grid, backend="dask", cluster=client, n_jobs=-1, chunk_size=5, progress=False)
        job_ids = ",".join(sorted(set(client.run(os.getenv, "SLURM_JOB_ID").values())))
        client.close()
    finally:
        dask.close()
    assert np.array_equal(serial.state, result.state)
    for key in serial.stats:
        assert np.array_equal(serial.stats[key], result.stats[key], equal_nan=True), key

    def accounted() -> set[str]:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_ids, "-o", "NodeList"], env=_env(),
                             capture_output=True, text=True).stdout
        return set(out.split())

    assert wait_for(lambda: accounted() == {"node1", "node2"} and accounted(), 30, f"sacct: {accounted()}")


def test_internal_ssl_the_proxy_reaches_a_server_on_node2_over_mutual_tls(cluster, node_prefix, tmp_path):
    """hub.internal_ssl: the proxy's route to a server on node2 is HTTPS at node2's address; the server's certificate
    (made before SLURM picked the node) names node2's address and verifies against the hub's notebooks CA; it answers
    no plain HTTP and no TLS client without a certificate of the hub's CAs; the page comes back through the proxy."""
    config = slurm_hub_yaml(tmp_path / "state", cluster)
    config["hub"].update(ip=LOGIN_ADDR, user_subdomains=False, internal_ssl=True)
    config["backends"]["cluster"]["node_prefix"] = node_prefix
    config["profiles"][0]["slurm"]["extra_sbatch"] = ["--nodelist=node2"]
    with started_slurm_hub(BridgeHub(tmp_path, config), cluster, accounts=("alice",)) as hub:
        admin, alice = login(hub, "admin"), login(hub, "alice")
        assert alice.post_spawn("alice", "cpu").status_code == 302
        try:
            alice.wait_ready("alice", timeout=150)
            target = admin.api("GET", "/proxy").json()["/user/alice/"]["target"]
            assert target.startswith(f"https://{NODE_ADDR['node2']}:"), target
            server = f"{target}/user/alice/api"
            certs = tmp_path / "state" / "internal-ssl"
            client = (str(certs / "proxy-client" / "proxy-client.crt"), str(certs / "proxy-client" / "proxy-client.key"))
            answer = requests.get(server, cert=client, verify=str(certs / "notebooks-ca" / "notebooks-ca.crt"), timeout=10)
            assert answer.status_code == 200 and "version" in answer.json()  # hostname (node2's IP) checked too
            with pytest.raises(requests.exceptions.ConnectionError):
                requests.get(server.replace("https://", "http://"), timeout=10)
            with pytest.raises(requests.exceptions.SSLError):  # no client certificate
                requests.get(server, verify=str(certs / "notebooks-ca" / "notebooks-ca.crt"), timeout=10)
            folder = Path("/home/alice/.jupyterhub/jupyterhub-certs")
            assert folder.stat().st_uid == pwd.getpwnam("alice").pw_uid and folder.stat().st_mode & 0o077 == 0
            page = alice.http.get(hub.user_url("alice") + "lab")
            assert page.status_code == 200 and page.url.startswith(hub.user_url("alice")), page.url
        finally:
            stop_server(alice, "alice")

@pytest.mark.timeout(900)
def test_an_mri_cohort_array_runs_its_subjects_on_both_nodes(cluster, node_prefix, tmp_path):
    """The cohort's job array (hpclab.mri.cohort's scripts, run by the node prefix's Python) with tasks of a whole
    node each (8 cores) runs one subject on node1 and one on node2; both are processed from the shared folder, and
    the summary job after them lists both."""
    root, out = tmp_path / "cohort", tmp_path / "out"
    small = mri_data.downsample(mri_data.template_t1(), 3)
    data = np.asarray(small.dataobj, dtype=np.float32)
    for k in range(2):
        mri_data.write_series(np.rint(data * (0.8 + 0.2 * k)).astype(np.float32), small.affine,
                              root / f"sub-{k + 1:02d}" / "scan", patient_id=f"P{k}")
    ids = [s.id for s in find_subjects(root)]
    assert ids == ["sub-01", "sub-02"]
    (out / "slurm").mkdir(parents=True)
    (out / SUBJECT_LIST).write_text("\n".join(ids) + "\n")
    array_text, summary_text = cohort_scripts(root, out, ids, resources=JobResources(cpus=8, mem="2G", time="00:20:00"),
                                              views=False, python=f"{node_prefix}/bin/python")
    (out / "slurm" / "array.sbatch").write_text(array_text)
    (out / "slurm" / "summary.sbatch").write_text(summary_text)
    env = _env()
    array_job = submit(out / "slurm" / "array.sbatch", env=env)
    summary_job = submit(out / "slurm" / "summary.sbatch", dependency=f"afterany:{array_job}", env=env)
    states = wait([array_job, summary_job], timeout=600, poll=1.0, env=env)
    assert {k: v for k, v in states.items()} == {f"{array_job}_0": "COMPLETED", f"{array_job}_1": "COMPLETED",
                                                  summary_job: "COMPLETED"}, states
    placed = subprocess.run(["sacct", "-n", "-X", "-P", "-j", array_job, "-o", "JobID,NodeList"], env=env,
                            capture_output=True, text=True).stdout.split()
    assert sorted(line.split("|")[1] for line in placed) == ["node1", "node2"], placed
    table = pd.read_csv(out / SUMMARY_NAME).set_index("subject")
    assert table["status"].to_dict() == {"sub-01": "ok", "sub-02": "ok"}

# the training tests' equivalence set-up (tests/science/training/test_training.py): GroupNorm resnet18, 3 SGD steps
EQUIV = dict(data="synthetic", arch="resnet18", norm="group", image_size=32, num_classes=10, synthetic_size=24,
             epochs=1, lr=0.01, lr_scaling="none", schedule="constant", momentum=0.9, weight_decay=1e-4,
             checkpoint=False, save_rank_states=True, timing_skip_steps=0, log_every=1)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("backend", ["ddp", "horovod"])
def test_two_ranks_on_two_nodes_equal_one_process_on_twice_the_batch(cluster, tmp_path, backend):
    """`hpclab train --slurm` as a job of 2 nodes x 1 task: srun starts one rank in each node's namespaces, they meet
    at node1's address (MASTER_ADDR from the node list, resolved by the nodes' /etc/hosts) over gloo - DDP, or Horovod
    with rank 0 running its rendezvous (no horovodrun, no ssh between nodes) - and the weights equal one process
    trained on the concatenated batch (batch 8 = 2 ranks x 4)."""
    require_dl_venv()
    single = launch_local(TrainConfig(**EQUIV, batch_size=8, out_dir=str(tmp_path / "one")), nproc=1, backend="none",
                          python=str(DL_PYTHON), progress=False, env=dl_env(), timeout=300)
    assert single.metrics["world_size"] == 1 and single.metrics["steps_per_epoch"] == 3
    run = tmp_path / "two"
    env = dict(os.environ, SLURM_CONF=cluster)
    resources = SlurmResources(nodes=2, tasks_per_node=1, cpus_per_task=1, mem="4G", time="00:15:00", partition="cpu")
    job = submit_slurm(TrainConfig(**EQUIV, batch_size=4, out_dir=str(run)), resources, python=str(DL_PYTHON),
                       backend=backend, env=env)
    lines: list[str] = []
    job = follow_slurm(job, echo=lines.append, poll_seconds=1, timeout=600, env=env)
    log = "\n".join(lines)
    assert job.ok, f"{job.state} {job.exit_code}\n{log}"
    assert f"hpclab-train: job {job.job_id}, 2 tasks on node[1-2]" in log, log
    nodes = subprocess.run(["sacct", "-n", "-P", "-j", job.job_id, "-o", "JobName,NodeList"], env=_env(),
                           capture_output=True, text=True).stdout
    assert "node[1-2]" in nodes, nodes
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_batch"] == 8 and metrics["backend"] == backend, metrics
    if backend == "horovod":
        assert "horovod 2 processes (gloo)" in log, log
    ranks = compare_states(run / "rank0.pt", run / "rank1.pt")[str(run / "rank1.pt")]
    assert ranks["same_keys"] and ranks["max_abs"] <= 1e-6, ranks  # both ranks hold one model
    same = compare_states(tmp_path / "one" / "rank0.pt", run / "rank0.pt")[str(run / "rank0.pt")]
    assert same["same_keys"] and same["max_abs"] <= 1e-5, same  # = 1 process x twice the batch
