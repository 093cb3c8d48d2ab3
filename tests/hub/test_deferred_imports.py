"""Issue 32, item 1: the hub and the servers start without building rfc3987_syntax's parser, and check IRIs as before."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: run in a fresh interpreter each: the stand-in only matters before anything imported the real module
PROBE = r"""
import json, sys, time
from hpclab_hub.deferred_imports import defer_rfc3987_syntax
deferred = {deferred}
if deferred:
    assert defer_rfc3987_syntax()
started = time.process_time()
import jupyter_server.serverapp, jupyterhub.app  # what a server and the hub import at start
imported = time.process_time() - started
loaded_at_start = type(sys.modules["rfc3987_syntax"]).__name__ != "DeferredModule"
import jsonschema
checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
verdicts = {{value: jsonschema.Draft202012Validator({{"format": kind}}, format_checker=checker).is_valid(value)
            for kind, value in {cases}}}
print(json.dumps({{"cpu_s": imported, "loaded_at_start": loaded_at_start, "verdicts": verdicts,
                  "real_after_check": type(sys.modules["rfc3987_syntax"]).__name__ == "module"}}))
"""

CASES = [("iri", "http://example.org/ä"), ("iri", "https://例え.テスト/パス?q=1#f"), ("iri", "not an iri"),
         ("iri", "http://[::1"), ("iri-reference", "../relative/päth"), ("iri-reference", "bad ref with spaces")]


def _probe(deferred: bool) -> dict:
    code = PROBE.format(deferred=deferred, cases=repr(CASES))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_parser_is_not_built_at_start_and_iri_checks_answer_as_before():
    plain, deferred = _probe(False), _probe(True)
    assert plain["loaded_at_start"] and not deferred["loaded_at_start"]
    assert deferred["verdicts"] == plain["verdicts"]  # the same answers, from the real module loaded on first use
    assert set(plain["verdicts"].values()) == {True, False}  # the cases tell valid from invalid
    assert deferred["real_after_check"]


@pytest.mark.parametrize("program", ["jupyterhub", "jupyterhub-singleuser"])
def test_the_hub_and_the_server_run_through_the_deferring_entry(program):
    done = subprocess.run([sys.executable, "-m", "hpclab_hub.deferred_imports", program, "--version"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    import jupyterhub

    assert done.stdout.strip() == jupyterhub.__version__


def test_an_unknown_program_is_refused_with_its_name():
    done = subprocess.run([sys.executable, "-m", "hpclab_hub.deferred_imports", "no-such-program"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 127 and "no console script 'no-such-program'" in done.stderr
