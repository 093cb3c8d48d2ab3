#!/usr/bin/env python
"""What isolation costs a server's start-up: JupyterLab as root (pinned with affinity) against JupyterLab
under its own account inside a cgroup (cpuset, memory, pids), interleaved, without a hub.

The same server command both ways (``python -m jupyterlab``, one core, a fresh home each way); seconds
from exec to the first HTTP answer on /api. Needs root (it creates the account ``jupyter-bench`` and
cgroups, as the hub does). Run from the repository root:

    .venv/bin/python benchmarks/isolation_overhead.py --repeat 6

Prints both medians and their ratio and writes benchmarks/results/isolation_overhead-<timestamp>.json
(or --out).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from harness import add_out_option, free_port, machine_info, print_table, summary, write_results
from hpclab_hub.backends.local.cgroups import ServerCgroup, ServerLimits
from hpclab_hub.backends.local.preexec import server_preexec
from hpclab_hub.backends.local.unix_accounts import ensure_home, resolve_account

MEMORY = 3 * 2**30
NAMES = {"root": "root, affinity (reference)", "isolated": "own account + cgroup (isolated)"}


def start_and_wait(isolated: bool, account, core: int, root_home: Path, timeout: float = 120) -> float:
    """Seconds from exec to JupyterLab's first answer on /api, then stop it (and its cgroup)."""
    port = free_port()
    home = account.home if isolated else str(root_home)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8"}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
           "--IdentityProvider.token=bench"]
    group = None
    if isolated:
        group = ServerCgroup.create(f"bench-{port}", ServerLimits((core,), memory=MEMORY, pids=4096))
        preexec = server_preexec(account, group, (core,), MEMORY)
    else:
        cmd.append("--allow-root")

        def preexec() -> None:
            os.sched_setaffinity(0, (core,))
            os.chdir(home)

    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, preexec_fn=preexec, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {proc.returncode} ({'isolated' if isolated else 'root'})")
            if time.monotonic() - started > timeout:
                raise TimeoutError("JupyterLab did not answer")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=1)
                return time.monotonic() - started
            except OSError:
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait()
        if group is not None:
            group.kill_all()
            group.remove()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=6, help="measured starts per variant (default 6)")
    add_out_option(parser, "isolation_overhead")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("isolation_overhead: needs root (accounts and cgroups)", file=sys.stderr)
        return 1
    core = sorted(os.sched_getaffinity(0))[-1]
    info = machine_info("jupyterlab", "jupyter_server")
    with tempfile.TemporaryDirectory(prefix="hpclab-isolation-bench-") as tmp:
        Path(tmp).chmod(0o755)
        account = resolve_account("bench", "create", "jupyter-", Path("/home"), f"{tmp}/{{account}}")
        ensure_home(account)
        root_home = Path(tmp) / "root"
        root_home.mkdir()
        times: dict[str, list[float]] = {"root": [], "isolated": []}
        start_and_wait(True, account, core, root_home)  # warm-up: file cache, first-run folders
        start_and_wait(False, account, core, root_home)
        for i in range(args.repeat):
            for isolated in ((False, True) if i % 2 == 0 else (True, False)):  # alternate who goes first
                seconds = start_and_wait(isolated, account, core, root_home)
                times["isolated" if isolated else "root"].append(seconds)
                print(f"round {i + 1}/{args.repeat} {'isolated' if isolated else 'root    '}: {seconds:.2f} s", flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["isolated"] / medians["root"]
    print(f"\nJupyterLab start to first /api answer, s, {args.repeat} starts each, core {core}")
    print_table({NAMES[k]: times[k] for k in ("root", "isolated")}, reference=NAMES["root"])
    print(f"isolated/root: {ratio:.3f} ({(ratio - 1) * 100:+.1f} %)")
    out = write_results("isolation_overhead", {
        "machine": {**info, "loadavg_end": list(os.getloadavg())}, "repeat": args.repeat, "core": core, "times_s": times,
        "medians_s": medians, "summary": {k: summary(v) for k, v in times.items()}, "ratio": ratio}, args.out)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
