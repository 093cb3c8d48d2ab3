"""``hpclab-hub usage``: sessions, hours, core-hours and GPU-hours per group or user over a period, from the hub's history
(SLURM jobs with SLURM's own numbers: sacct, backends/slurm/accounting.py)."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import logging
import sys
from typing import Any

from hpclab_hub.backends.slurm import accounting
from hpclab_hub.cli.common import _load_or_report
from hpclab_hub.ops import history

COLUMNS = ("sessions", "hours", "core_hours", "gpu_hours")


def parse_date(text: str, option: str) -> float:
    """Epoch seconds of 2026-12-01 or 2026-12-01T09:00 (UTC unless the text names an offset)."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{option}: {text!r} is not a date; write it as 2026-12-01 or 2026-12-01T09:00 (UTC)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def report(rows: list[history.Usage], by: str, fmt: str, since: float, until: float) -> str:
    """The report as a table, CSV or JSON."""
    dicts = [row.as_dict(by) for row in rows]
    if fmt == "json":

        def iso(t: float) -> str:
            return dt.datetime.fromtimestamp(t, dt.UTC).isoformat()

        return json.dumps({"since": iso(since), "until": iso(until), "by": by, "rows": dicts}, indent=2) + "\n"
    if fmt == "csv":
        out: Any = _Lines()
        writer = csv.DictWriter(out, fieldnames=[by, *COLUMNS], lineterminator="\n")
        writer.writeheader()
        writer.writerows(dicts)
        return "".join(out.lines)
    width = max([len(by), *(len(d[by]) for d in dicts)])
    lines = [f"{by:<{width}}  {'sessions':>8}  {'hours':>10}  {'core-hours':>10}  {'GPU-hours':>10}"]
    lines += [
        f"{d[by]:<{width}}  {d['sessions']:>8}  {d['hours']:>10.2f}  {d['core_hours']:>10.2f}  {d['gpu_hours']:>10.2f}"
        for d in dicts
    ]
    return "\n".join(lines) + "\n"


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.append(text)


def cmd_usage(args: Any) -> int:
    deployment = _load_or_report(args.config)
    if deployment is None:
        return 1
    try:
        since = parse_date(args.since, "--since") if args.since else 0.0
        until = parse_date(args.until, "--until") if args.until else dt.datetime.now(dt.UTC).timestamp()
    except ValueError as error:
        print(f"hpclab-hub usage: {error}", file=sys.stderr)
        return 2
    if until <= since:
        print("hpclab-hub usage: --until must be after --since", file=sys.stderr)
        return 2
    engine = history.engine_for(deployment.hub.database_url)
    if any(b.type == "slurm" for b in deployment.backends.values()):  # SLURM jobs the hub did not settle from sacct
        asyncio.run(accounting.settle_all(deployment, engine, logging.getLogger("hpclab-hub usage")))
    with engine.connect() as connection:
        sessions = history.sessions_between(connection, since, until)
    sys.stdout.write(report(history.usage(sessions, args.by, since, until), args.by, args.format, since, until))
    return 0
