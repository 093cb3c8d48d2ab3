"""``hpclab-hub check`` and ``hpclab-hub schema``: the YAML checked (here and against a live cluster), its schema printed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hpclab_hub.backends.slurm.live_check import live_report
from hpclab_hub.cli.common import _load_or_report
from hpclab_hub.config.checks import runtime_issues
from hpclab_hub.config.reference import json_schema, markdown_reference
from hpclab_hub.config.yaml_source import load_with_lines
from hpclab_hub.host_notes import app_warnings, deployment_notes


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a deploy YAML: one summary line when valid, one line per problem otherwise.

    Beyond the YAML itself, every kernel runtime must be on this machine (a missing one is an error: that
    kernel cannot start), and with --live the SLURM profiles must fit the running cluster.
    """
    deployment = _load_or_report(args.file)
    if deployment is None:
        return 1
    lines = load_with_lines(Path(args.file).read_text(encoding="utf-8"))
    failed = runtime_issues(deployment, lines, Path(args.file).resolve().parent)
    for issue in failed:
        print(f"{args.file}: {issue}", file=sys.stderr)
    if args.live:
        issues, warnings = live_report(deployment)
        # warnings: it fits, but some choices will be refused at start
        for kind, found in (("warning: ", warnings), ("", issues)):
            for issue in found:
                print(f"{args.file}: {kind}{type(issue)(issue.path, issue.message, lines.line_of(issue.path))}", file=sys.stderr)
        failed += issues
    if failed:
        return 1
    backends = ", ".join(f"{name} ({b.type})" for name, b in deployment.backends.items())
    print(
        f"{args.file}: OK — {len(deployment.profiles)} profiles "
        f"({', '.join(p.slug for p in deployment.profiles)}), backends: {backends}, "
        f"hub on {deployment.hub.public_url()}{deployment.hub.base_url}" + (" — fits the running cluster" if args.live else "")
    )
    for warning in app_warnings(deployment):  # valid, but a tile would fail: said, never an error
        print(f"{args.file}: warning: {warning}")
    for note in deployment_notes(deployment):
        print(f"{args.file}: note: {note}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the JSON schema, or the Markdown admin reference."""
    print(markdown_reference() if args.markdown else json.dumps(json_schema(), indent=2), end="" if args.markdown else "\n")
    return 0
