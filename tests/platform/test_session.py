"""Tests for hpclab.session(): real subprocesses with restricted affinity, rlimits and env."""

import datetime as dt
import json
import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import hpclab
from hpclab import Session, session
from hpclab.cgroup import cgroup_memory_limit
from hpclab.cli import main
from hpclab.slurm import parse_slurm_mem_mb, parse_slurm_time

GiB = 2**30
MiB = 2**20
_SCRUBBED_PREFIXES = ("SLURM_", "HPCLAB_")
_SCRUBBED = {"CUDA_VISIBLE_DEVICES", "MEM_LIMIT"}


def _env(**extra: str) -> dict[str, str]:
    """os.environ without anything session() reads (so tests behave the same inside a SLURM job)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES) and k not in _SCRUBBED
    }
    env.update(extra)
    return env


def _hpclab_cmd() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m hpclab``."""
    script = Path(sys.executable).with_name("hpclab")
    return [str(script)] if script.exists() else [sys.executable, "-m", "hpclab"]


def _session_json(env: dict[str, str], preexec_fn=None) -> dict:
    """Run ``hpclab session --json`` in a fresh process and parse its output."""
    proc = subprocess.run(
        [*_hpclab_cmd(), "session", "--json"],
        env=env,
        preexec_fn=preexec_fn,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# -- cores -------------------------------------------------------------------
def test_cores_follow_affinity_restricted_to_one_cpu():
    cpu = min(os.sched_getaffinity(0))
    data = _session_json(_env(), preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    assert data["cores"] == 1
    assert data["cores_source"] == "affinity"
    assert data["cpu_ids"] == [cpu]


def test_slurm_cpus_per_task_is_capped_by_a_narrower_affinity():
    cpu = min(os.sched_getaffinity(0))
    data = _session_json(
        _env(SLURM_CPUS_PER_TASK="3"), preexec_fn=lambda: os.sched_setaffinity(0, {cpu})
    )
    assert data["cores"] == 1  # three threads on one pinned CPU would only compete
    assert data["cores_source"] == "affinity (1 < SLURM_CPUS_PER_TASK=3)"
    assert data["cpu_ids"] == [cpu]


def test_slurm_cpus_per_task_wins_over_a_wider_affinity_and_session_and_launcher_agree():
    from hpclab.kernel_launcher import allocation_threads
    from hpclab.session import allocated_cores

    assert allocated_cores({"SLURM_CPUS_PER_TASK": "2"}, [0, 1, 2, 3]) == (2, "SLURM_CPUS_PER_TASK")
    assert allocated_cores({"SLURM_CPUS_PER_TASK": "8"}, [0, 1]) == (2, "affinity (2 < SLURM_CPUS_PER_TASK=8)")
    assert allocated_cores({}, [3, 5]) == (2, "affinity")
    env = {"SLURM_CPUS_PER_TASK": "1"}
    assert allocation_threads(env) == allocated_cores(env)


def test_invalid_slurm_cpus_per_task_falls_back_to_affinity():
    data = _session_json(_env(SLURM_CPUS_PER_TASK="lots"))
    assert data["cores_source"] == "affinity"
    assert data["cores"] == len(os.sched_getaffinity(0))


# -- memory ------------------------------------------------------------------
def _assert_capped(data: dict, cap: int, source: str) -> None:
    """memory_limit is at most *cap*; if exactly *cap*, *source* must be the one reported."""
    assert data["memory_limit"] is not None
    assert data["memory_limit"] <= cap
    if data["memory_limit"] == cap:
        assert data["memory_source"] == source


def test_rlimit_data_caps_memory_limit():
    def limit_data():
        _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        soft = GiB if hard == resource.RLIM_INFINITY else min(GiB, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))

    data = _session_json(_env(), preexec_fn=limit_data)
    _assert_capped(data, GiB, "RLIMIT_DATA")


def test_rlimit_as_caps_memory_limit():
    def limit_as():
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = 2 * GiB if hard == resource.RLIM_INFINITY else min(2 * GiB, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

    data = _session_json(_env(), preexec_fn=limit_as)
    _assert_capped(data, 2 * GiB, "RLIMIT_AS")


def test_mem_limit_env_caps_memory_limit():
    data = _session_json(_env(MEM_LIMIT=str(512 * MiB)))
    _assert_capped(data, 512 * MiB, "MEM_LIMIT")


def test_slurm_mem_per_cpu_is_multiplied_by_cores():
    data = _session_json(_env(SLURM_CPUS_PER_TASK="3", SLURM_MEM_PER_CPU="100"))
    _assert_capped(data, 300 * MiB, "SLURM_MEM_PER_CPU")


def test_slurm_mem_per_node():
    data = _session_json(_env(SLURM_MEM_PER_NODE="200"))
    _assert_capped(data, 200 * MiB, "SLURM_MEM_PER_NODE")


def test_smallest_memory_source_wins():
    data = _session_json(_env(MEM_LIMIT=str(700 * MiB), SLURM_MEM_PER_NODE="600"))
    _assert_capped(data, 600 * MiB, "SLURM_MEM_PER_NODE")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100", 100 * MiB), ("4G", 4 * GiB), ("512M", 512 * MiB), ("0", None), ("", None), ("x", None)],
)
def test_parse_slurm_mem_mb(text, expected):
    assert parse_slurm_mem_mb(text) == expected


# -- cgroups (a cgroup tree laid out in tmp_path, read by the real parser) -----
def _fake_proc(tmp_path: Path, cgroup: str, mountinfo: str) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    (proc / "mountinfo").write_text(mountinfo)
    return proc


def test_cgroup_v2_limit_on_parent_job_cgroup(tmp_path):
    root = tmp_path / "cg2"
    leaf = root / "slurm" / "job_7" / "step_0" / "task_0"
    leaf.mkdir(parents=True)
    (root / "slurm" / "job_7" / "memory.max").write_text(f"{3 * GiB}\n")
    (leaf.parent / "memory.max").write_text("max\n")
    (leaf / "memory.max").write_text("max\n")
    proc = _fake_proc(
        tmp_path,
        "0::/slurm/job_7/step_0/task_0\n",
        f"30 23 0:26 / {root} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
    )
    assert cgroup_memory_limit(proc) == (3 * GiB, "cgroup2")


def test_cgroup_v1_unlimited_value_is_ignored_and_real_limit_used(tmp_path):
    mem = tmp_path / "memory"
    (mem / "docker" / "abc").mkdir(parents=True)
    (mem / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (mem / "docker" / "abc" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    proc = _fake_proc(
        tmp_path,
        "4:memory:/docker/abc\n0::/\n",
        f"35 31 0:32 / {mem} rw,relatime - cgroup cgroup rw,memory\n",
    )
    assert cgroup_memory_limit(proc) is None
    (mem / "docker" / "abc" / "memory.limit_in_bytes").write_text(f"{2 * GiB}\n")
    assert cgroup_memory_limit(proc) == (2 * GiB, "cgroup1")


def test_cgroup_container_mount_of_own_cgroup(tmp_path):
    # Inside a container the mount's root is our own cgroup: the limit file is at the mountpoint.
    mnt = tmp_path / "sysfs"
    mnt.mkdir()
    (mnt / "memory.max").write_text(f"{GiB}\n")
    proc = _fake_proc(
        tmp_path,
        "0::/kubepods/pod1/ctr\n",
        f"40 31 0:38 /kubepods/pod1/ctr {mnt} ro - cgroup2 cgroup2 rw\n",
    )
    assert cgroup_memory_limit(proc) == (GiB, "cgroup2")


def test_cgroup_missing_proc_is_none(tmp_path):
    assert cgroup_memory_limit(tmp_path / "nope") is None


# -- GPUs ----------------------------------------------------------------------
def test_gpus_from_cuda_visible_devices_env_only_no_gpu_needed():
    """Environment-only check: there is no GPU here; we only read CUDA_VISIBLE_DEVICES."""
    data = _session_json(_env(CUDA_VISIBLE_DEVICES="0,2"))
    assert data["gpus"] == ["0", "2"]


@pytest.mark.parametrize("value", ["", "NoDevFiles", "-1", "-1,0"])
def test_gpus_none_values_env_only(value):
    """Environment-only check (no GPU here): values that CUDA treats as 'no device'."""
    assert session(_env(CUDA_VISIBLE_DEVICES=value)).gpus == ()


def test_gpus_unset_and_truncated_at_minus_one():
    assert session(_env()).gpus == ()
    assert session(_env(CUDA_VISIBLE_DEVICES="1,-1,2")).gpus == ("1",)
    assert session(_env(CUDA_VISIBLE_DEVICES="GPU-8f2a,GPU-77b1")).gpus == ("GPU-8f2a", "GPU-77b1")


# -- walltime ----------------------------------------------------------------
def test_hpclab_job_end_time_in_future():
    end = int(time.time()) + 3600
    data = _session_json(_env(HPCLAB_JOB_END_TIME=str(end)))
    assert 3600 - 120 <= data["walltime_left"] <= 3600
    assert data["walltime_source"] == "HPCLAB_JOB_END_TIME"
    assert data["backend"] == "local" and data["job_id"] is None


def test_slurm_job_end_time_and_earliest_end_wins():
    now = int(time.time())
    s = session(_env(SLURM_JOB_ID="77", SLURM_JOB_END_TIME=str(now + 600), HPCLAB_JOB_END_TIME=str(now + 7200)))
    assert s.walltime_source == "SLURM_JOB_END_TIME"
    assert dt.timedelta(seconds=500) <= s.walltime_left <= dt.timedelta(seconds=600)


def test_past_end_time_is_zero_and_garbage_is_ignored():
    assert session(_env(HPCLAB_JOB_END_TIME=str(int(time.time()) - 50))).walltime_left == dt.timedelta(0)
    assert session(_env(HPCLAB_JOB_END_TIME="soon")).walltime_left is None


def _fake_squeue(bin_dir: Path, body: str) -> None:
    """A stand-in ``squeue`` executable (SLURM is not installed on the test machine)."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "squeue"
    script.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    script.chmod(0o755)


def test_squeue_time_left_used_inside_slurm_job(tmp_path):
    _fake_squeue(
        tmp_path / "bin",
        """\
        [ "$1 $2 $3 $4 $5" = "-h -j 4242 -o %L" ] || exit 1
        echo "1-02:03:04"
        """,
    )
    data = _session_json(_env(SLURM_JOB_ID="4242", PATH=str(tmp_path / "bin")))
    assert data["walltime_left"] == 93784
    assert data["walltime_source"] == "squeue"
    assert data["backend"] == "slurm" and data["job_id"] == "4242"


@pytest.mark.parametrize(
    "body", ["echo UNLIMITED\n", "echo 'squeue: error: Invalid job id' >&2; exit 1\n", "echo garbage\n"]
)
def test_squeue_failures_are_soft(tmp_path, body):
    _fake_squeue(tmp_path / "bin", body)
    data = _session_json(_env(SLURM_JOB_ID="4242", PATH=str(tmp_path / "bin")))
    assert data["walltime_left"] is None and data["backend"] == "slurm"


def test_missing_squeue_is_soft(tmp_path):
    (tmp_path / "empty").mkdir()
    data = _session_json(_env(SLURM_JOB_ID="4242", PATH=str(tmp_path / "empty")))
    assert data["walltime_left"] is None and data["job_id"] == "4242"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1-02:03:04", dt.timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("10-00:00:00", dt.timedelta(days=10)),
        ("02:03:04", dt.timedelta(hours=2, minutes=3, seconds=4)),
        ("2:03:04", dt.timedelta(hours=2, minutes=3, seconds=4)),
        ("03:04", dt.timedelta(minutes=3, seconds=4)),
        ("45", dt.timedelta(minutes=45)),
        ("2-12", dt.timedelta(days=2, hours=12)),
        ("2-12:30", dt.timedelta(days=2, hours=12, minutes=30)),
        ("  0:00:59\n", dt.timedelta(seconds=59)),
    ],
)
def test_parse_slurm_time(text, expected):
    assert parse_slurm_time(text) == expected


@pytest.mark.parametrize("text", ["UNLIMITED", "NOT_SET", "INVALID", "unlimited"])
def test_parse_slurm_time_no_limit_words(text):
    assert parse_slurm_time(text) is None


@pytest.mark.parametrize("text", ["", "1:2:3:4", "abc", "1-", "-5", "1-2-3", "12h"])
def test_parse_slurm_time_rejects_garbage(text):
    with pytest.raises(ValueError):
        parse_slurm_time(text)


# -- views and CLI ------------------------------------------------------------
def _example(**changes) -> Session:
    fields = dict(
        cores=4,
        cores_source="SLURM_CPUS_PER_TASK",
        cpu_ids=(0, 1, 2, 3, 6),
        memory_limit=4 * GiB,
        memory_source="cgroup2",
        gpus=("0", "2"),
        walltime_left=dt.timedelta(hours=1, minutes=58, seconds=3),
        walltime_source="squeue",
        job_id="123456",
        backend="slurm",
        hostname="node042",
    )
    fields.update(changes)
    return Session(**fields)


def test_repr_is_one_line_with_cores():
    text = repr(_example())
    assert "\n" not in text
    assert text.startswith("Session(cores=4 [SLURM_CPUS_PER_TASK; affinity 0-3,6]")
    assert "memory=4.0 GiB" in text and "gpus=0,2" in text and "walltime_left=1:58:03" in text


def test_repr_of_real_session_contains_cores():
    s = session(_env())
    assert f"cores={s.cores} [affinity " in repr(s)
    assert f"host={s.hostname}" in repr(s)


def test_str_is_aligned_lines():
    lines = str(_example()).splitlines()
    assert [line.split("  ")[0].strip() for line in lines] == [
        "host", "job", "cores", "memory", "gpus", "walltime left"
    ]
    value_columns = {len(line) - len(line[len("walltime left"):].lstrip()) for line in lines}
    assert len(value_columns) == 1  # all values start in the same column
    assert any(line.startswith("cores") and " 4 " in line for line in lines)


def test_repr_html_has_cores_and_escapes():
    s = _example(hostname="<script>alert(1)</script>", gpus=("GPU-a&b",))
    out = s._repr_html_()
    assert out.startswith("<table") and out.endswith("</table>")
    assert "<td style='text-align:left'>4</td>" in out
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "GPU-a&amp;b" in out
    assert f">{session(_env()).cores}<" in session(_env())._repr_html_()


def test_session_is_frozen_and_as_dict_is_plain():
    s = _example()
    with pytest.raises(AttributeError):
        s.cores = 8  # type: ignore[misc]
    d = s.as_dict()
    assert d["cpu_ids"] == [0, 1, 2, 3, 6] and d["gpus"] == ["0", "2"]
    assert d["walltime_left"] == dt.timedelta(hours=1, minutes=58, seconds=3)
    assert set(d) == {f for f in Session.__dataclass_fields__}


def test_cli_json_in_process(capsys, monkeypatch):
    monkeypatch.setenv("HPCLAB_JOB_END_TIME", str(int(time.time()) + 90))
    assert main(["session", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert isinstance(data["walltime_left"], int) and 0 <= data["walltime_left"] <= 90
    assert data["cores"] >= 1


def test_python_dash_m_hpclab_session_prints_table():
    proc = subprocess.run(
        [sys.executable, "-m", "hpclab", "session"], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[2].startswith("cores")
    assert f"{len(os.sched_getaffinity(0))}" in proc.stdout


def test_cli_without_command_shows_help(capsys):
    assert main([]) == 2
    assert "session" in capsys.readouterr().out


def test_import_is_light():
    code = "import sys, hpclab; print(hpclab.__version__, sorted({'numpy', 'torch', 'psutil', 'subprocess'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split(" ", 1) == ["0.1.0", "[]\n"]
    assert hpclab.__version__ == "0.1.0"


def test_the_cli_imports_a_science_package_only_for_its_own_subcommand():
    """`hpclab session` starts without numpy, the MRI or training packages (issue 15)."""
    code = ("import sys, hpclab.cli; from hpclab.cli import main; main(['session', '--json']); "
            "print(sorted(m for m in sys.modules if m.split('.')[:2] in (['hpclab', 'josephson'], ['hpclab', 'mri'], "
            "['hpclab', 'training']) or m == 'numpy'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
    listing = subprocess.run([sys.executable, "-m", "hpclab", "--help"], capture_output=True, text=True, check=True).stdout
    for name in ("session", "josephson", "mri", "train"):
        assert name in listing
