"""deploy/slurm/dev-cluster waits for apt's locks instead of failing (issue 25 item 7).

Two dev clusters set up at the same moment made one `apt-get install` exit 100 ("Could not get lock"), and
25 SLURM tests errored at set-up. Here a lock is held for two seconds, as another apt would hold it, while
`dev-cluster packages` runs on a machine whose packages are already installed: it must wait, then succeed.
Cheap (no download, no cluster started); it needs root, as apt and the dev cluster do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from support.slurmtools import DEV_CLUSTER

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="apt-get install needs root, as deploy/slurm/dev-cluster does")

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge", "sudo", "slurmdbd", "mariadb-server"]  # dev-cluster's, with accounting

# what apt and dpkg take: an fcntl write lock on the whole file; lockf waits if some other apt holds it now
HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o640)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _all_installed() -> bool:
    out = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}\n", *PACKAGES], capture_output=True, text=True).stdout
    return out.split() == ["installed"] * len(PACKAGES)


@pytest.mark.parametrize(
    "lock",
    ["/var/lib/dpkg/lock-frontend", "/var/cache/apt/archives/lock"],
    ids=["dpkg-frontend-lock", "download-folder-lock"],  # apt waits for the first itself; the second is retried
)
def test_packages_step_waits_for_a_held_apt_lock_then_succeeds(lock, slurm_cluster):
    # the dev cluster installed the packages: this test checks the waiting, not a download
    assert _all_installed(), "dev-cluster up left SLURM's Debian packages uninstalled"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, lock, "2"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        proc = subprocess.run([str(DEV_CLUSTER), "packages"], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "HPCLAB_SLURM_ACCOUNTING": "1", "HPCLAB_APT_LOCK_TIMEOUT": "120"})
        took = time.monotonic() - started
        # before: exit 100 at once, "E: Could not get lock …"
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
        assert "dev-cluster: packages installed" in proc.stdout
        assert holder.poll() is not None, "apt ran while the lock was held"  # it finished after the holder let go
        assert took > 1.0, took
        assert "E: " not in proc.stderr, proc.stderr  # no apt error left over
        if lock.startswith("/var/cache"):
            assert f"apt-get-wait: another apt or dpkg is running (Could not get lock {lock}); waiting up to 120s" in proc.stderr
    finally:
        holder.kill()
        holder.wait()
