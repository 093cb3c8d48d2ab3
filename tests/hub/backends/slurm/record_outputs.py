"""Record what one Slurm release really prints, for the parser tests (tests/hub/backends/slurm/data/<release>/).

    python tests/hub/backends/slurm/record_outputs.py <release> <SLURM_CONF> <folder of its commands>

Run against an idle dev cluster (deploy/slurm/dev-cluster up, any HPCLAB_SLURM_RELEASE, users alice and bob):
bob's job holds one of the two GPUs, alice's asks for two and pends (Resources) until the scheduler has
given it an expected start; then every output the hub parses is written (sinfo once more with the node
drained, then resumed), and both jobs are cancelled.
What the files show is described in tests/hub/backends/slurm/data/README.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).parent / "data"
COMMENT = "hpclab:0123abcd:gpu-1"  # the tag the hub writes into its jobs


def main(release: str, conf: str, bin_dir: str) -> None:
    out = DATA / release
    out.mkdir(parents=True, exist_ok=True)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_CONF": conf, "LANG": "C.UTF-8"}

    def run(*argv: str, user: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        prefix = ["sudo", "-E", "-u", user] if user else []
        return subprocess.run([*prefix, os.path.join(bin_dir, argv[0]), *argv[1:]], env=env, capture_output=True,
                              text=True, check=check, cwd="/tmp")

    def sbatch(user: str, *options: str) -> str:
        return run("sbatch", "--parsable", "-o", "/dev/null", "--chdir=/tmp", *options, "--wrap", "sleep 300",
                   user=user).stdout.strip().split(";")[0]

    running = sbatch("bob", "-p", "gpu", "--gres=gpu:1", "-c", "2", "-J", "hpclab-bob", f"--comment={COMMENT}")
    pending = sbatch("alice", "-p", "gpu", "--gres=gpu:2", "-c", "1", "-t", "00:30:00", "-J", "hpclab-alice",
                     f"--comment={COMMENT}")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = dict(line.split(" ", 1) for line in run("squeue", "-h", "-j", f"{running},{pending}",
                                                            "-o", "%i %T %r %S").stdout.splitlines())
            if rows.get(running, "").startswith("RUNNING") and rows.get(pending, "").startswith("PENDING Resources") \
                    and not rows[pending].endswith("N/A"):
                break
            time.sleep(0.5)
        files = {
            "version.txt": run("sinfo", "-V").stdout,
            "sinfo.json": run("sinfo", "--json").stdout,
            "sinfo-N.json": run("sinfo", "--json", "-N").stdout,
            "squeue.json": run("squeue", "--json").stdout,
            "squeue.txt": run("squeue", "-h", "-t", "all", "-o", "%i|%T|%r|%B|%u|%j|%k").stdout,
            "squeue-start.txt": run("squeue", "--start", "-h", "-j", pending, "-o", "%i|%S").stdout,
            "squeue-time-left.txt": run("squeue", "-h", "-j", running, "-o", "%L").stdout,
            "scontrol-partition.txt": run("scontrol", "show", "partition", "-o").stdout,
            "scontrol-reservation.txt": run("scontrol", "show", "reservation", "-o").stdout,
            "scontrol-job-pending.txt": run("scontrol", "show", "job", "-o", pending).stdout,
            "scontrol-job-running.txt": run("scontrol", "show", "job", "-o", running).stdout,
            "sacctmgr-qos.txt": run("sacctmgr", "-nP", "show", "qos", "format=name,maxwall").stdout,
            "sacctmgr-assoc-alice.txt": run("sacctmgr", "-nP", "show", "assoc", "user=alice", "format=account").stdout,
        }
        test_only = run("sbatch", "--test-only", "-p", "cpu", "-c", "1", "--wrap", "true", user="alice")
        files["sbatch-test-only.txt"] = test_only.stdout + test_only.stderr
        never = run("sbatch", "--test-only", "-p", "gpu", "--gres=gpu:9", "--wrap", "true", user="alice", check=False)
        files["sbatch-test-only-never.txt"] = never.stdout + never.stderr
        files["jobs.txt"] = f"running={running}\npending={pending}\n"
        node = run("sinfo", "-h", "-N", "-o", "%N").stdout.split()[0]
        run("scontrol", "update", f"nodename={node}", "state=drain", "reason=recorded-drain")
        try:
            files["sinfo-drained.json"] = run("sinfo", "--json", "-N").stdout
        finally:
            run("scontrol", "update", f"nodename={node}", "state=resume")
        for name, text in files.items():
            (out / name).write_text(text)
    finally:
        run("scancel", running, pending, check=False)
    print(f"recorded {len(files)} outputs of {files['version.txt'].strip()} into {out}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
