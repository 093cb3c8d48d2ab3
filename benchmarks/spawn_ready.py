#!/usr/bin/env python
"""Spawn-to-ready: HPCLab's local backend against bare JupyterHub's SimpleLocalProcessSpawner.

Starts two hubs side by side on free ports, both with configurable-http-proxy and SQLite in a
temporary folder, both starting the same ``jupyterhub-singleuser`` (default URL /lab):

* bare (the reference): ``jupyterhub -f benchmarks/configs/bare_jupyterhub_config.py``; a service
  token with the admin:users/admin:servers scopes drives it over the REST API;
* ours: ``hpclab-hub run`` on benchmarks/configs/hpclab-local.yaml (profile cpu-small); an API
  token of the admin, created after logging in like a browser, drives it.

Each repetition, for each hub in turn (the order alternates every round to spread machine noise):
wait for a quiet machine, POST /hub/api/users/admin/server, poll GET /hub/api/users/admin until
servers[""].ready, record the seconds from the POST to ready, then DELETE the server and wait until
it is gone. From the hub log (hub and server write to the same file): when the server logged
"is running at" (listening) and the rest, until the hub marked it ready.

Options, measured in the same rounds for both hubs:

* --kernel: after ready, a kernel is started in the server and a first cell (``print(6 * 7)``) runs over the kernel's
  websocket through the proxy, as JupyterLab does; kernel-ready = seconds from the POST until the cell's output;
* --browser: after the API spawn of the round, Debian's chromium (Playwright, logged in once per hub) opens the
  spawn form (ours: /hub/spawn, the profile form; bare: /hub/home, which has no form) and clicks Start;
  click-to-lab = seconds from the click until JupyterLab's launcher is drawn (recorded by the page); then
  the server is stopped through the API.

Run from the repository root:

    .venv/bin/python benchmarks/spawn_ready.py --repeat 5

Prints a table and writes benchmarks/results/spawn_ready-<timestamp>.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


from harness import (ADMIN_PASSWORD, Api, BenchError, CpuWatch, Hub, add_spawn_options, bare_hub, exit_on_signals,
                     hpclab_hub, ignore_signals, machine_info, print_table, stop_hubs, summary, wait_quiet, write_results)
from load_clients import run_cell

USER = "admin"
PROFILE = "cpu-small"
GOAL_PCT = 10.0
NAMES = {"bare": "bare JupyterHub (simple)", "ours": f"ours (hpclab-hub {PROFILE})"}
LOG_LINE = re.compile(r"^\[(?P<level>[DIWEC]) (?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (?P<src>\S+)")


def first_cell(api: Api, timeout: float) -> float:
    """Start a kernel in the user's running server, run a first cell over its websocket, shut it down; seconds taken."""
    token = api.http.headers["Authorization"].split()[1]
    base = f"{api.hub.user_url(api.user)}/api"
    t0 = time.perf_counter()
    kernel = api.http.post(f"{base}/kernels", json={}, timeout=timeout)
    if kernel.status_code != 201:
        raise BenchError(f"{api.hub.label}: starting a kernel answered {kernel.status_code}: {kernel.text}")
    kernel_id = kernel.json()["id"]
    try:
        cell = run_cell(f"{base}/kernels/{kernel_id}/channels".replace("http", "ws", 1), token, "print(6 * 7)", timeout)
        with ThreadPoolExecutor(1) as thread:  # its own event loop: Playwright's (--browser) runs in this thread
            out = thread.submit(asyncio.run, cell).result()
        if out.strip() != "42":
            raise BenchError(f"{api.hub.label}: the first cell printed {out!r}")
        return time.perf_counter() - t0
    finally:
        api.http.delete(f"{base}/kernels/{kernel_id}", timeout=60)


def browser_login(page: Any, hub: Hub, password: str) -> None:
    page.goto(f"{hub.url}/hub/login?next=%2Fhub%2Fhome")  # not /hub/spawn: the bare hub would start a server
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", password)
    page.click("#login_submit")
    page.wait_for_url("**/hub/**", timeout=60_000)
    if "/hub/login" in page.url:
        raise BenchError(f"{hub.label}: the browser could not log in")


#: run in every document the browser opens: the moment (Date.now(), ms) JupyterLab's launcher is first drawn — a
#: launcher card laid out (a non-empty box) with the splash screen gone, taken after the next frame. Timed in the page,
#: because Playwright's own waiting polls with a back-off of up to 0.5 s, which would count as start time.
LAUNCHER_DRAWN_JS = """
(() => {
  const drawn = () => {
    const card = document.querySelector('.jp-LauncherCard');
    return card && card.getBoundingClientRect().width > 0 && !document.getElementById('jupyterlab-splash');
  };
  const watch = new MutationObserver(() => {
    if (window.__launcherDrawnAt || !drawn()) return;
    watch.disconnect();
    requestAnimationFrame(() => setTimeout(() => { window.__launcherDrawnAt = Date.now(); }, 0));
  });
  watch.observe(document, {childList: true, subtree: true, attributes: true});
})();
"""


def click_to_lab(page: Any, name: str, api: Api, poll: float, timeout: float) -> dict[str, Any]:
    """Open the spawn form, click Start, wait until JupyterLab's launcher is drawn; then stop the server (API).

    The clock starts just before Playwright's click and stops at the page's own record of the launcher's first frame
    (LAUNCHER_DRAWN_JS, set up with the browser context); both read the machine's wall clock.
    """
    if api.server() is not None:
        raise BenchError(f"{api.hub.label}: {api.user} still has a server before the browser's start")
    page.goto(f"{api.hub.url}/hub/spawn" if name == "ours" else f"{api.hub.url}/hub/home")
    start = "form#spawn_form [type=submit]" if name == "ours" else "#start"
    page.locator(start).first.wait_for(timeout=60_000)
    t0 = time.time()
    page.locator(start).first.click()
    drawn_ms = page.wait_for_function("() => window.__launcherDrawnAt", timeout=timeout * 1000).json_value()
    polled_s = time.time() - t0  # when Playwright saw it: what this benchmark reported before (issue 32)
    page.goto("about:blank")
    return {"click_to_lab_s": round(drawn_ms / 1000 - t0, 4), "click_to_lab_polled_s": round(polled_s, 4),
            "browser_stop_s": api.stop(poll, timeout)}


def spawn_once(api: Api, body: dict[str, Any], poll: float, timeout: float, kernel: bool = False) -> dict[str, Any]:
    """Start the admin's server, wait until ready, stop it, wait until gone; timings and others' CPU meanwhile.
    ``kernel``: before the stop, a first cell in a new kernel (kernel_ready_s: from the POST until its output)."""
    watch = CpuWatch()
    run = api.spawn(body, poll, timeout)
    if kernel:
        run["first_cell_s"] = round(first_cell(api, timeout), 4)
        run["kernel_ready_s"] = round(time.time() - run["post_epoch"], 4)
    run["foreign_cpu_s"] = round(watch.read()["others_cpu_s"], 2)
    api.hub.remember_processes()
    run["stop_s"] = api.stop(poll, timeout)
    return run


def listening_at(log: Path, since: float, until: float | None) -> float | None:
    """Epoch time of the first "Jupyter Server ... is running at" line logged in [since, until)."""
    for line in log.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if not match or not match["src"].startswith("ServerApp") or "running at" not in line:
            continue
        when = dt.datetime.strptime(match["stamp"], "%Y-%m-%d %H:%M:%S.%f").timestamp()  # local time, like the log
        if when >= since - 0.002 and (until is None or when < until):
            return when
    return None


def add_phases(hub: Hub, runs: list[dict[str, Any]]) -> None:
    """POST -> the server listening, and listening -> ready (the hub noticing), for each run, from the hub log."""
    for k, run in enumerate(runs):
        until = runs[k + 1]["post_epoch"] if k + 1 < len(runs) else None
        listening = listening_at(hub.log_path, run["post_epoch"], until)
        if listening is not None:
            run["phases"] = {"to_server_listening_s": round(listening - run["post_epoch"], 3),
                             "listening_to_ready_s": round(run["ready_epoch"] - listening, 3)}


def report(args: argparse.Namespace, hubs: dict[str, Hub], runs: dict[str, list], warmups: dict[str, list],
           order: list[list[str]], info: dict[str, Any]) -> dict[str, Any]:
    """Summaries, the comparison with bare, and everything measured, as the results file holds them."""
    raw = {name: [r["ready_s"] for r in runs[name]] for name in runs}
    s = {name: summary(raw[name]) for name in raw}
    phases_median = {}
    for name in runs:
        values = {key: [r["phases"][key] for r in runs[name] if "phases" in r]
                  for key in ("to_server_listening_s", "listening_to_ready_s")}
        phases_median[name] = {key: round(statistics.median(v), 3) for key, v in values.items() if v}
    foreign = {name: [r["foreign_cpu_s"] for r in runs[name]] for name in runs}
    overhead = s["ours"]["median"] - s["bare"]["median"]
    listening = [phases_median[h].get("to_server_listening_s") for h in ("ours", "bare")]
    info["loadavg_end"] = list(os.getloadavg())
    extra = {}
    for key in ("kernel_ready_s", "first_cell_s", "click_to_lab_s"):
        values = {name: [r[key] for r in runs[name] if key in r] for name in runs}
        if all(values.values()):
            extra[key] = {"raw": values, "summary": {name: summary(v) for name, v in values.items()},
                          "ratio": round(statistics.median(values["ours"]) / statistics.median(values["bare"]), 4),
                          "paired_ratio_median": round(statistics.median(
                              o / b for o, b in zip(values["ours"], values["bare"], strict=False)), 4)}
    return {"variants": extra,
        "description": "seconds from POST /hub/api/users/admin/server to servers[''].ready; "
        "bare JupyterHub SimpleLocalProcessSpawner vs hpclab-hub run (local backend, profile cpu-small)",
        "repeat": args.repeat, "warmup": args.warmup, "poll_s": args.poll, "pause_s": args.pause,
        "zygote": "spare" if args.spare else args.zygote, "ours": NAMES["ours"], "quiet_cores": args.quiet, "settle_max_s": args.settle, "order": order, "machine": info,
        "hub_startup_s": {name: round(h.started_in, 3) for name, h in hubs.items()},
        "raw": raw, "runs": runs, "warmup_runs": warmups, "summary": s, "phases_median": phases_median,
        "cpu": {name: {"foreign_cpu_s_median": round(statistics.median(v), 2), "foreign_cpu_s_max": round(max(v), 2)}
                for name, v in foreign.items()},
        "comparison": {
            "ratio": round(s["ours"]["median"] / s["bare"]["median"], 4),
            "overhead_s": round(overhead, 4),
            "overhead_pct": round(100 * overhead / s["bare"]["median"], 2),
            "goal_pct": GOAL_PCT,
            "within_goal": overhead <= GOAL_PCT / 100 * s["bare"]["median"],
            "paired_ratio_median": round(statistics.median(o / b for o, b in zip(raw["ours"], raw["bare"])), 4),
            # POST -> "is running at": the spawner's and the server's share, without the hub's lag in noticing
            "listening_ratio": round(listening[0] / listening[1], 4) if all(listening) else None,
        },
    }


def print_report(results: dict[str, Any]) -> None:
    m, c, ph, cpu = results["machine"], results["comparison"], results["phases_median"], results["cpu"]
    print(f"\nspawn-to-ready, s: {results['repeat']} repetitions per hub (+{results['warmup']} warm-up), {m['nproc']} cores, "
          f"JupyterHub {m['jupyterhub']}, JupyterLab {m['jupyterlab']}, Python {m['python']}")
    print_table({NAMES[h]: results["raw"][h] for h in ("bare", "ours")}, reference=NAMES["bare"],
                extra={NAMES[h]: {"listening": ph[h].get("to_server_listening_s"),
                                  "->ready": ph[h].get("listening_to_ready_s"),
                                  "others CPU": cpu[h]["foreign_cpu_s_median"]} for h in ("bare", "ours")})
    print(f"ours/bare (medians): {c['ratio']:.3f}; overhead {c['overhead_s']:+.2f} s = {c['overhead_pct']:+.1f} % of bare "
          f"(goal <= {c['goal_pct']:.0f} %: {'met' if c['within_goal'] else 'not met'}); "
          f"paired per-round ratio, median {c['paired_ratio_median']:.3f}"
          + (f"; POST->listening ratio {c['listening_ratio']:.3f}" if c["listening_ratio"] else ""))
    print(f"hub start-up to first /hub/api answer: bare {results['hub_startup_s']['bare']:.2f} s, "
          f"ours {results['hub_startup_s']['ours']:.2f} s; load average {m['loadavg_start'][0]:.2f} -> {m['loadavg_end'][0]:.2f}")
    print("listening = median s from the POST until the server logged 'is running at'; ->ready = from there until the "
          "hub marked it ready;\nothers CPU = median CPU s used during a spawn by processes other than this benchmark's.")
    for key, label in (("kernel_ready_s", "POST -> first cell executed"), ("click_to_lab_s", "click on Start -> launcher drawn")):
        if key in results["variants"]:
            v = results["variants"][key]
            print(f"\n{label}, s:")
            print_table({NAMES[h]: v["raw"][h] for h in ("bare", "ours")}, reference=NAMES["bare"])
            print(f"ours/bare (medians): {v['ratio']:.3f}; paired per-round ratio, median {v['paired_ratio_median']:.3f}")
    print(f"results: {results['path']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_spawn_options(parser, "spawn_ready", repeat=5, quiet=0.3, settle=60, timeout=180)
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--zygote", action="store_true",
                     help="our servers forked from the local backend's zygote (backends.local.zygote: true)")
    how.add_argument("--spare", action="store_true",
                     help="our servers from the zygote's spares, one process each (backends.local.zygote: spare)")
    parser.add_argument("--kernel", action="store_true", help="also kernel-ready: from the POST until a first cell ran")
    parser.add_argument("--browser", action="store_true",
                        help="also click-to-lab in Debian's chromium: from the click on Start until the launcher is drawn")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    zygote: bool | str = "spare" if args.spare else args.zygote
    NAMES["ours"] = f"ours (hpclab-hub {PROFILE}, {'spare' if args.spare else 'zygote' if args.zygote else 'fresh'})"
    exit_on_signals()
    tmp = Path(tempfile.mkdtemp(prefix="spawn_ready-"))
    hubs = {"bare": bare_hub("bare", tmp / "bare", USER, login=args.browser), "ours": hpclab_hub("ours", tmp / "ours", "hpclab-local.yaml",
                                                                     {"backends.local.zygote": zygote})}
    bodies = {"bare": {}, "ours": {"profile": PROFILE}}
    info = machine_info("jupyterhub", "jupyterlab", "jupyter_server")
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "ours": []}
    warmups: dict[str, list[dict[str, Any]]] = {"bare": [], "ours": []}
    order: list[list[str]] = []
    failed = False
    playwright = browser = None
    pages: dict[str, Any] = {}
    try:
        for name, hub in hubs.items():
            print(f"starting {name} hub ...", flush=True)
            hub.start(timeout=90)
            print(f"  {name} hub answers at {hub.url} after {hub.started_in:.2f} s", flush=True)
        apis = {"bare": Api(hubs["bare"], USER, hubs["bare"].service_token),
                "ours": Api.login(hubs["ours"], USER, ADMIN_PASSWORD, "spawn_ready benchmark")}
        if args.browser:
            from playwright.sync_api import sync_playwright

            from support.browsertools import CHROMIUM, CHROMIUM_ARGS

            playwright = sync_playwright().start()
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for name, hub in hubs.items():
                context = browser.new_context()
                context.add_init_script(LAUNCHER_DRAWN_JS)
                pages[name] = context.new_page()
                browser_login(pages[name], hub, ADMIN_PASSWORD)
                if apis[name].server() is not None:
                    apis[name].stop(args.poll, args.timeout)
        for measured, i in [(False, k) for k in range(args.warmup)] + [(True, k) for k in range(args.repeat)]:
            names = ("bare", "ours") if i % 2 == 0 else ("ours", "bare")  # alternate, warm-ups and rounds alike
            if measured:
                order.append(list(names))
            for name in names:
                waited, foreign = wait_quiet(args.quiet, args.settle) if measured and args.settle > 0 else (0.0, None)
                run = spawn_once(apis[name], bodies[name], args.poll, args.timeout, kernel=args.kernel)
                if args.browser:
                    if measured and args.settle > 0:
                        wait_quiet(args.quiet, args.settle)
                    run.update(click_to_lab(pages[name], name, apis[name], args.poll, args.timeout))
                if not measured:
                    warmups[name].append(run)
                    print(f"warm-up {name}: ready in {run['ready_s']:.2f} s", flush=True)
                else:
                    run.update(round=i, settle_waited_s=round(waited, 1),
                               foreign_cores_before=None if foreign is None else round(foreign, 2))
                    runs[name].append(run)
                    more = "".join(f", {key} {run[key]:.2f} s" for key in ("kernel_ready_s", "click_to_lab_s") if key in run)
                    print(f"round {i + 1}/{args.repeat} {name}: ready in {run['ready_s']:.2f} s{more} "
                          f"(other processes' CPU meanwhile {run['foreign_cpu_s']:.1f} s, stop {run['stop_s']:.2f} s)",
                          flush=True)
                time.sleep(args.pause)
    except Exception as exc:  # requests, Playwright's timeouts, a hub misbehaving: report, then clean up
        failed = True
        print(f"spawn_ready: stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
    except (KeyboardInterrupt, SystemExit) as exc:
        failed = True
        print(f"spawn_ready: stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        ignore_signals()  # clean-up is bounded (about 25 s per hub at worst)
        if browser is not None:
            browser.close()
        if playwright is not None:
            playwright.stop()
        for name, hub in hubs.items():
            try:
                add_phases(hub, warmups[name] + runs[name])  # from the logs, before anything is removed
            except Exception as exc:  # a log we cannot read must not stop the clean-up
                print(f"spawn_ready: phases of {name}: {exc}", file=sys.stderr)
        for problem in stop_hubs(hubs):
            print(f"spawn_ready: clean-up: {problem}", file=sys.stderr)
        if args.keep or failed:
            print(f"hub logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if failed or not runs["bare"] or not runs["ours"]:
        return 1
    results = report(args, hubs, runs, warmups, order, info)
    results["path"] = str(write_results("spawn_ready", results, args.out))
    print_report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
