#!/usr/bin/env python
"""Where a single-user server's start-up time goes, without any hub.

Two kinds of measurement, each repeated (default 3) with the variants interleaved:

* processes that exit: ``python -c pass``, importing the big pieces (jupyter_server, jupyterlab,
  jupyterhub.singleuser, rfc3987_syntax), ``jupyterhub-singleuser --help``: wall seconds;
* a JupyterLab server started stand-alone (``python -m jupyterlab``; jupyterhub-singleuser is the
  same server plus the hub extension, which needs a hub): seconds from exec to the first HTTP
  answer on /api, and the CPU seconds the process had used by then. Variants: every installed
  server extension; jupyter_lsp, jupyter_server_terminals and notebook_shim disabled; and each of
  those with jsonschema's optional ``rfc3987_syntax`` hidden (it builds a Lark grammar on import).

Run from the repository root:

    .venv/bin/python benchmarks/singleuser_startup.py --repeat 3

Prints tables (medians, and ratios against the unchanged variant) and writes
benchmarks/results/singleuser_startup-<timestamp>.json (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

from harness import add_out_option, free_port, machine_info, print_table, write_results

PY = sys.executable
BIN = Path(sys.executable).parent

EXITING = {
    "python -c pass": [PY, "-c", "pass"],
    "import rfc3987_syntax": [PY, "-c", "import rfc3987_syntax"],
    "import jupyter_server.serverapp": [PY, "-c", "import jupyter_server.serverapp"],
    "import jupyterlab": [PY, "-c", "import jupyterlab.labapp"],
    "import jupyterhub.singleuser": [PY, "-c", "import jupyterhub.singleuser"],
    "jupyterhub-singleuser --help": [str(BIN / "jupyterhub-singleuser"), "--help"],
}

LIGHT = "{'jupyter_lsp': False, 'jupyter_server_terminals': False, 'notebook_shim': False}"
SERVERS = {
    "lab, all extensions": [],
    "lab, no lsp/terminals/notebook_shim": [f"--ServerApp.jpserver_extensions={LIGHT}"],
}


def no_rfc3987_dir(tmp: Path) -> Path:
    """A folder whose ``rfc3987_syntax`` raises ImportError, so jsonschema skips its IRI format checker."""
    folder = tmp / "no_rfc3987"
    (folder / "rfc3987_syntax").mkdir(parents=True, exist_ok=True)
    (folder / "rfc3987_syntax" / "__init__.py").write_text('raise ImportError("hidden by singleuser_startup.py")\n')
    return folder


def timed_exit(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def timed_server(extra: list[str], env: dict[str, str], home: Path, timeout: float = 120) -> dict[str, float]:
    """Start JupyterLab stand-alone; seconds to the first answer on /api and the CPU used by then."""
    port = free_port()
    cmd = [PY, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={home}", *extra]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    env = dict(env, HOME=str(home), JUPYTER_RUNTIME_DIR=str(home / "runtime"))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        ps = psutil.Process(proc.pid)
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd} exited with {proc.returncode}")
            with contextlib.suppress(requests.RequestException):  # not listening yet: try again
                if requests.get(f"http://127.0.0.1:{port}/api", timeout=2).status_code < 500:
                    answered = time.perf_counter() - t0
                    cpu = ps.cpu_times()
                    return {"first_answer_s": answered, "cpu_s": cpu.user + cpu.system}
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"no answer from {cmd} in {timeout}s")
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def med(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="rounds, every variant once each (default 3)")
    add_out_option(parser, "singleuser_startup")
    args = parser.parse_args(argv)
    info = machine_info("jupyterhub", "jupyterlab", "jupyter_server", "jsonschema")

    tmp = Path(tempfile.mkdtemp(prefix="singleuser_startup-"))
    base_env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    hidden = dict(base_env, PYTHONPATH=os.pathsep.join(filter(None, [str(no_rfc3987_dir(tmp)), os.environ.get("PYTHONPATH")])))
    exiting: dict[str, list[float]] = {name: [] for name in EXITING}
    exiting["import jupyterhub.singleuser, rfc3987_syntax hidden"] = []
    servers: dict[str, list[dict[str, float]]] = {}
    for name in SERVERS:
        servers[name] = []
        servers[name + ", rfc3987_syntax hidden"] = []
    try:
        for i in range(args.repeat):
            print(f"round {i + 1}/{args.repeat}", flush=True)
            for name, cmd in EXITING.items():
                exiting[name].append(timed_exit(cmd, base_env))
            exiting["import jupyterhub.singleuser, rfc3987_syntax hidden"].append(
                timed_exit(EXITING["import jupyterhub.singleuser"], hidden)
            )
            for name, extra in SERVERS.items():
                for label, env in ((name, base_env), (name + ", rfc3987_syntax hidden", hidden)):
                    home = tmp / f"home-{len(servers[label])}-{abs(hash(label))}"
                    home.mkdir()
                    servers[label].append(timed_server(extra, env, home))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{info['nproc']} cores, Python {info['python']}, load average {os.getloadavg()[0]:.2f}")
    print("Processes that exit, wall s (ratio: against importing jupyterhub.singleuser):")
    print_table(exiting, reference="import jupyterhub.singleuser")
    print("JupyterLab stand-alone, s from exec to the first answer on /api (ratio: against all extensions):")
    print_table({k: [r["first_answer_s"] for r in v] for k, v in servers.items()}, reference="lab, all extensions",
                extra={k: {"CPU s": med([r["cpu_s"] for r in v])} for k, v in servers.items()})
    out = write_results("singleuser_startup", {
        "machine": {**info, "loadavg_end": list(os.getloadavg())},
        "repeat": args.repeat,
        "exiting_wall_s": {k: [round(x, 4) for x in v] for k, v in exiting.items()},
        "servers": {k: [{kk: round(vv, 4) for kk, vv in r.items()} for r in v] for k, v in servers.items()},
        "medians": {
            "exiting_wall_s": {k: med(v) for k, v in exiting.items()},
            "server_first_answer_s": {k: med([r["first_answer_s"] for r in v]) for k, v in servers.items()},
            "server_cpu_s": {k: med([r["cpu_s"] for r in v]) for k, v in servers.items()},
        },
    }, args.out)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
