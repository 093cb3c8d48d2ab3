"""The deploy YAML: every mistake an admin can make is reported once, at its key path and line.

The broken files live in tests/hub/config/configs/ (one defect each, readable by admins); the table below says
exactly which issues each one must produce: ``key.path[2].x: message (line N)``, nothing more.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from hpclab_hub.config import ConfigError, load_deployment, parse_deployment
from hpclab_hub.config.yaml_source import format_path

from support.paths import REPO_ROOT

REPO = REPO_ROOT
CONFIGS = Path(__file__).resolve().parent / "configs"
HUB_CLI = Path(sys.executable).with_name("hpclab-hub")
DEFAULT_YAML = REPO / "deploy" / "hub.yaml"

MINIMAL = """\
backends:
  local:
    type: local
profiles:
  - slug: small
    display_name: Small
    backend: local
"""

# file -> every issue it must produce, in order: (key path, line or None, a piece of the message)
BROKEN: dict[str, list[tuple[str, int | None, str]]] = {
    # wrong types
    "port-as-word.yaml": [("hub.port", 3, "must be an integer, got 'eighty'")],
    "cpus-as-word.yaml": [("profiles[0].cpus", 9, "must be an integer, got 'two'")],
    "memory-not-a-size.yaml": [("profiles[0].memory", 9, "must be a size such as 4G or 512M, got 'lots'")],
    "gpus-boolean.yaml": [("profiles[0].gpus", 9, "must be an integer, got true (a boolean)")],
    "bad-time-limit.yaml": [("profiles[0].time_limit", 9, "must be a duration such as 01:30:00")],
    "profile-group-not-string.yaml": [("profiles[0].groups[0]", 9, "must be a string, got int 1")],
    "auth-group-member-not-string.yaml": [("auth.groups.gpu-users[1]", 4, "must be a string, got int 1")],
    "backend-cpus-word.yaml": [("backends.local.cpus", 5, "must be one of 'auto', got 'all'; or must be a list")],
    # out of range
    "negative-cpus.yaml": [("profiles[0].cpus", 9, "must be ≥ 1")],
    "negative-gpus.yaml": [("profiles[1].gpus", 12, "must be ≥ 0")],
    "backend-cpu-id-negative.yaml": [("backends.local.cpus[2]", 5, "must be ≥ 0")],
    "account-prefix-invalid.yaml": [("backends.local.accounts.prefix", 6, "does not match the allowed form")],
    "walltime-signal-too-early.yaml": [("walltime.save_before", 10, "must be ≤ 65535")],
    # unknown keys, with a hint for near misses
    "unknown-top-level-key.yaml": [
        ("profiles", 2, "required key is missing"),
        ("proflies", 5, "unknown key; did you mean 'profiles'?"),
    ],
    "unknown-hub-key.yaml": [("hub.prot", 4, "unknown key; did you mean 'port'?")],
    "unknown-profile-key.yaml": [("profiles[1].gpu", 12, "unknown key; did you mean 'gpus'?")],
    # missing or dangling references
    "profile-missing-backend.yaml": [("profiles[0].backend", 6, "required key is missing")],
    "profile-undeclared-backend.yaml": [("profiles[1].backend", 11, "unknown backend 'slurm'; declared under backends: local")],
    "profile-unknown-kernel.yaml": [("profiles[0].kernels[1]", 12, "unknown kernel 'julia'; declared under kernels: python")],
    "backend-missing-type.yaml": [("backends.local", 3, "needs a 'type' key")],
    "unknown-backend-type.yaml": [("backends.k8s", 5, "unknown type 'kubernetes'; expected one of 'local'")],
    # rules across keys
    "duplicate-slug.yaml": [("profiles[1].slug", 9, "duplicate slug 'small' (also profiles[0])")],
    "two-defaults.yaml": [("profiles[1].default", 13, "only one profile may be the default (profiles[0] already is)")],
    "port-clash.yaml": [("hub.hub_port", 4, "port 8000 is already used by hub.port")],
    "admin-name-invalid.yaml": [
        ("hub.admin_users[0]", 3, "user names are lower case; write 'admin'"),
        ("auth.groups.gpu-users[1]", 6, "may hold only letters a-z"),
    ],
    "home-dir-in-data-dir.yaml": [("backends.local.home_dir", 7, "homes cannot be inside hub.data_dir (/var/lib/hpclab)")],
    # not a deployment at all
    "invalid-yaml-syntax.yaml": [("<file>", 9, "invalid YAML: expected ',' or ']'")],
    "duplicate-key.yaml": [("hub.port", 5, "duplicate key (first at line 3)")],
    "empty.yaml": [("<file>", None, "the file is empty")],
    "only-comment.yaml": [("<file>", None, "the file is empty")],
    "top-level-list.yaml": [("<file>", 2, "expected a mapping at the top level, got list")],
    # several defects: all of them, in file order
    "many-errors.yaml": [
        ("hub.port", 3, "must be an integer, got 'eighty'"),
        ("hub.prot", 4, "did you mean 'port'?"),
        ("profiles[0].cpus", 12, "must be ≥ 1"),
        ("profiles[0].memory", 13, "must be a size such as 4G or 512M, got 'lots'"),
        ("profiles[1].gpus", 17, "must be ≥ 0"),
        ("profiles[1].groups[0]", 18, "must be a string, got int 1"),
    ],
}


def issues_of(path: Path) -> list:
    with pytest.raises(ConfigError) as caught:
        load_deployment(path)
    return caught.value.issues


def run_cli(*args: str, timeout: float = 60, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HUB_CLI), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


# --- the corpus of broken files ---------------------------------------------------------------


def test_every_file_in_the_corpus_has_an_expectation():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(BROKEN)


@pytest.mark.parametrize(("name", "expected"), sorted(BROKEN.items()), ids=sorted(BROKEN))
def test_broken_file_reports_exactly_its_issues_with_path_and_line(name, expected):
    issues = issues_of(CONFIGS / name)
    assert [(format_path(i.path) or "<file>", i.line) for i in issues] == [(p, line) for p, line, _ in expected], [
        str(i) for i in issues
    ]
    for issue, (path, line, fragment) in zip(issues, expected, strict=True):
        text = str(issue)
        assert text.startswith(f"{path}: "), text
        assert fragment in text, text
        if line is None:
            assert "(line " not in text, text
        else:
            assert text.endswith(f" (line {line})"), text


def test_several_errors_in_one_file_are_all_reported_together():
    issues = issues_of(CONFIGS / "many-errors.yaml")
    assert len(issues) == 6
    assert len({i.line for i in issues}) == 6


def test_config_error_message_names_the_file_on_every_line():
    path = (CONFIGS / "many-errors.yaml").resolve()
    with pytest.raises(ConfigError) as caught:
        load_deployment(path)
    lines = str(caught.value).splitlines()
    assert len(lines) == len(caught.value.issues)
    assert all(line.startswith(f"{path}: ") for line in lines)


def test_unknown_key_without_a_near_match_lists_the_allowed_keys():
    text = MINIMAL.replace("    backend: local\n", "    backend: local\n    colour: blue\n")
    with pytest.raises(ConfigError) as caught:
        parse_deployment(text, Path("/tmp"))
    (issue,) = caught.value.issues
    assert str(issue).startswith("profiles[0].colour: unknown key; allowed: slug, display_name, ")
    assert issue.line == 8


def test_missing_file_is_one_issue_saying_it_cannot_be_read(tmp_path):
    (issue,) = issues_of(tmp_path / "nowhere.yaml")
    assert str(issue).startswith("<file>: cannot read the file")


def test_union_member_labels_never_leak_into_key_paths():
    text = MINIMAL.replace("    type: local\n", "    type: local\n    gpus: [0, -1, 1.5]\n")
    with pytest.raises(ConfigError) as caught:
        parse_deployment(text, Path("/tmp"))
    assert [str(i) for i in caught.value.issues] == [
        "backends.local.gpus[1]: must be ≥ 0 (line 4)",
        "backends.local.gpus[2]: must be a string, got float 1.5; or must be an integer, got 1.5 (line 4)",
    ]


# --- valid files ----------------------------------------------------------------------------


def test_shipped_default_is_valid_with_one_default_profile():
    deployment = load_deployment(DEFAULT_YAML)
    assert deployment.profiles
    assert sum(p.default for p in deployment.profiles) == 1
    assert all(p.backend in deployment.backends for p in deployment.profiles)


def test_minimal_deployment_fills_in_defaults(tmp_path):
    deployment = parse_deployment(MINIMAL, tmp_path)
    assert deployment.hub.port == 8000
    assert deployment.profiles[0].cpus == 1 and deployment.profiles[0].gpus == 0
    assert deployment.profiles[0].memory is None


def test_units_in_a_profile_are_parsed_to_bytes_and_seconds(tmp_path):
    text = MINIMAL + "    memory: 1.5GiB\n    time_limit: '1-12'\n"
    profile = parse_deployment(text, tmp_path).profiles[0]
    assert profile.memory == 3 * 2**29
    assert profile.time_limit == 36 * 3600


def test_deployment_dumped_as_json_loads_back_unchanged():
    deployment = load_deployment(DEFAULT_YAML)
    dumped = deployment.model_dump(mode="json")
    assert dumped["profiles"][0]["memory"] == "2G"
    assert dumped["culling"]["timeout"] == "01:00:00"
    assert type(deployment).model_validate(dumped) == deployment


# --- relative paths ---------------------------------------------------------------------------


def _write(folder: Path, hub_section: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "hub.yaml"
    path.write_text(hub_section + MINIMAL, encoding="utf-8")
    return path


def test_relative_data_dir_is_taken_from_the_yaml_folder_not_the_cwd(tmp_path, monkeypatch):
    config = _write(tmp_path / "site" / "deploy", "hub:\n  data_dir: state\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_deployment(config).hub.data_dir == tmp_path / "site" / "deploy" / "state"


def test_relative_data_dir_with_a_relative_config_path(tmp_path, monkeypatch):
    _write(tmp_path / "deploy", "hub:\n  data_dir: ../.hpclab\n")
    monkeypatch.chdir(tmp_path)
    deployment = load_deployment("deploy/hub.yaml")
    assert deployment.hub.data_dir == tmp_path / ".hpclab"
    assert deployment.hub.data_dir.is_absolute()


def test_default_data_dir_sits_next_to_the_yaml(tmp_path, monkeypatch):
    config = _write(tmp_path / "conf", "")
    monkeypatch.chdir(tmp_path)
    deployment = load_deployment(config)
    assert deployment.hub.data_dir == tmp_path / "conf" / ".hpclab"
    assert deployment.hub.database_url == f"sqlite:///{tmp_path / 'conf' / '.hpclab' / 'jupyterhub.sqlite'}"


def test_absolute_data_dir_is_kept(tmp_path):
    config = _write(tmp_path / "conf", f"hub:\n  data_dir: {tmp_path / 'abs'}\n")
    assert load_deployment(config).hub.data_dir == tmp_path / "abs"


def test_relative_cookie_secret_file_is_taken_from_the_yaml_folder(tmp_path, monkeypatch):
    config = _write(tmp_path / "conf", "hub:\n  cookie_secret_file: secrets/cookie\n")
    monkeypatch.chdir(REPO)
    assert load_deployment(config).hub.cookie_secret_path == tmp_path / "conf" / "secrets" / "cookie"


def test_shipped_default_keeps_state_in_the_repository_root(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert load_deployment(DEFAULT_YAML).hub.data_dir == REPO / ".hpclab"


# --- hpclab-hub check / schema / run ------------------------------------------------------------


def test_cli_check_of_the_default_prints_one_ok_line_naming_the_profiles():
    result = run_cli("check", "deploy/hub.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    profiles = load_deployment(DEFAULT_YAML).profiles
    assert lines[0].startswith("deploy/hub.yaml: OK")
    assert f"{len(profiles)} profiles" in lines[0]
    assert all(p.slug in lines[0] for p in profiles)


@pytest.mark.parametrize("name", ["many-errors.yaml", "unknown-top-level-key.yaml", "invalid-yaml-syntax.yaml"])
def test_cli_check_of_a_broken_file_exits_1_with_one_line_per_error(name):
    target = f"tests/hub/config/configs/{name}"
    result = run_cli("check", target)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    expected = BROKEN[name]
    assert len(lines) == len(expected), result.stderr
    for line, (path, number, fragment) in zip(lines, expected, strict=True):
        assert line.startswith(f"{target}: {path}: "), line
        assert fragment in line, line
        assert line.endswith(f" (line {number})"), line


def test_cli_check_reports_every_corpus_file_as_broken():
    for name in sorted(BROKEN):
        result = run_cli("check", f"tests/hub/config/configs/{name}")
        assert result.returncode == 1, name
        assert len(result.stderr.splitlines()) == len(BROKEN[name]), (name, result.stderr)


def test_cli_schema_is_json_covering_every_section():
    result = run_cli("schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert {"hub", "auth", "backends", "profiles", "kernels", "culling"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"backends", "profiles"}


def test_cli_schema_forbids_unknown_keys_in_profiles_and_every_section():
    schema = json.loads(run_cli("schema").stdout)
    profile = schema["$defs"]["Profile"]
    assert profile["additionalProperties"] is False
    assert {"slug", "display_name", "backend"} <= set(profile["required"])
    for name, definition in schema["$defs"].items():
        if "properties" in definition:
            assert definition.get("additionalProperties") is False, name


def _jupyterhubs_for(config: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            command = " ".join(proc.info["cmdline"] or [])  # `hpclab-hub run` becomes the hub in its own process
            if ("jupyterhub" in command or "hpclab-hub run" in command) and proc.environ().get("HPCLAB_CONFIG") == str(config):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.mark.parametrize(
    ("defect", "expected"),
    [
        ("    cpus: -1\n", "profiles[0].cpus: must be ≥ 1 (line 10)"),  # fails typing
        ("  - slug: small\n    display_name: Again\n    backend: local\n", "profiles[1].slug: duplicate slug"),  # fails a cross-check
    ],
    ids=["type-error", "cross-check"],
)
def test_cli_run_refuses_an_invalid_file_before_starting_anything(tmp_path, defect, expected):
    config = tmp_path / "site" / "hub.yaml"
    config.parent.mkdir()
    config.write_text("hub:\n  data_dir: state\n" + MINIMAL + defect, encoding="utf-8")
    data_dir = config.parent / "state"
    started = time.monotonic()
    result = run_cli("run", "--config", str(config), timeout=30, cwd=tmp_path)
    assert time.monotonic() - started < 15
    assert result.returncode == 1
    assert expected in result.stderr
    assert "not starting" in result.stderr
    assert "starting JupyterHub" not in result.stdout
    assert not data_dir.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]
    assert sorted(p.name for p in config.parent.iterdir()) == ["hub.yaml"]
    assert _jupyterhubs_for(config.resolve()) == []


def test_cli_run_refuses_a_missing_file(tmp_path):
    result = run_cli("run", "--config", str(tmp_path / "absent.yaml"), timeout=30, cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot read the file" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_check_defaults_to_deploy_hub_yaml():
    result = run_cli("check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("deploy/hub.yaml: OK")


def test_admin_reference_in_docs_is_generated_from_the_current_model():
    """docs/admin-reference.md must be regenerated (make docs) whenever the YAML model changes."""
    from hpclab_hub.config.reference import markdown_reference

    committed = (REPO / "docs" / "admin-reference.md").read_text(encoding="utf-8")
    assert committed == markdown_reference(), "run `make docs` and commit docs/admin-reference.md"


def test_admin_reference_lists_every_key_of_both_backend_kinds():
    from hpclab_hub.config.model import LocalBackend, SlurmBackend
    from hpclab_hub.config.reference import markdown_reference

    reference = markdown_reference()
    assert "## `backends.<name>` (type: local)" in reference and "## `backends.<name>` (type: slurm)" in reference
    for model in (LocalBackend, SlurmBackend):
        for field in model.model_fields:
            assert f"| `backends.<name>.{field}` |" in reference, field


@pytest.mark.parametrize("example", sorted((REPO / "deploy" / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_example_is_valid(example):
    result = run_cli("check", str(example))
    assert result.returncode == 0, result.stderr


# --- the examples' folder: the shipped default may be absent, an admin's choice may not ---------------


def test_absent_default_examples_folder_turns_examples_off_with_a_note_and_a_warning(tmp_path, monkeypatch, capsys):
    """Outside a source checkout there is no notebooks/ folder: an unchanged YAML still checks OK and runs."""
    import logging
    from types import SimpleNamespace

    from traitlets.config import Config

    from hpclab_hub import cli
    from hpclab_hub.config import model
    from hpclab_hub.hubconfig import configure
    from hpclab_hub.spawner.spawner import HPCLabSpawner

    path = tmp_path / "hub.yaml"
    path.write_text(MINIMAL)
    assert model.SHIPPED_EXAMPLES.is_dir() and load_deployment(path).examples.delivered  # a source checkout: on
    monkeypatch.setattr(model, "SHIPPED_EXAMPLES", tmp_path / "site-packages" / "notebooks")
    deployment = load_deployment(path)  # valid: no error
    assert deployment.examples.enabled and not deployment.examples.delivered
    assert cli.main(["check", str(path)]) == 0
    out = capsys.readouterr()
    ok, note = out.out.splitlines()
    assert ok.startswith(f"{path}: OK") and out.err == ""
    assert note.startswith(f"{path}: note: examples are off: examples.source is not set and the default folder ")
    assert str(tmp_path / "site-packages" / "notebooks") in note
    # the hub says so in its log when it starts, and its servers get no examples
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("JupyterHub").addHandler(handler)
    try:
        configure(Config(), path)
    finally:
        logging.getLogger("JupyterHub").removeHandler(handler)
    assert [m for m in seen if "examples are off" in m] == [f"hpclab: {deployment.examples.off_note}"]
    spawner = HPCLabSpawner(deployment_file=str(path), user=SimpleNamespace(name="alice", groups=[], admin=False, settings={}))
    spawner.profile_slug = "small"
    assert "HPCLAB_EXAMPLES_DIR" not in spawner.profile_env()
    # turned off by the admin: nothing to say
    off = tmp_path / "off.yaml"
    off.write_text(MINIMAL.replace("backends:", "examples:\n  enabled: false\nbackends:"))
    assert cli.main(["check", str(off)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_an_examples_source_that_is_missing_is_an_error_at_its_key_and_line(tmp_path, monkeypatch):
    from hpclab_hub.config import model

    path = tmp_path / "hub.yaml"
    path.write_text(MINIMAL + "examples:\n  source: courses/notebooks\n")
    monkeypatch.setattr(model, "SHIPPED_EXAMPLES", tmp_path / "site-packages" / "notebooks")  # also where the default is absent
    (issue,) = issues_of(path)
    assert str(issue) == f"examples.source: no such folder: {tmp_path / 'courses' / 'notebooks'} (line 9)"
    result = run_cli("check", str(path))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == f"{path}: examples.source: no such folder: {tmp_path / 'courses' / 'notebooks'} (line 9)"
    (tmp_path / "courses" / "notebooks").mkdir(parents=True)
    assert load_deployment(path).examples.delivered


# --- kernel runtimes: `check` fails on one that is not here, saying what a relative path was taken from ----


def _fake_venv(prefix: Path, ipykernel: bool = True) -> Path:
    """A folder the launcher takes for a venv: an executable bin/python and, optionally, ipykernel's launcher."""
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")  # so asking it for ipykernel says no
    (prefix / "bin" / "python").chmod(0o755)
    if ipykernel:
        site = prefix / "lib" / "python3.11" / "site-packages"
        site.mkdir(parents=True)
        (site / "ipykernel_launcher.py").write_text("")
    return prefix


def test_a_copied_example_fails_check_naming_each_runtime_as_written_and_where_it_resolved(tmp_path):
    """Issue 25 item 5: site.yaml copied elsewhere keeps `../../.venv`, which now points at nothing; `check` said OK."""
    from hpclab_hub.config.yaml_source import load_with_lines

    folder = tmp_path / "etc" / "hpclab"
    folder.mkdir(parents=True)
    copy = folder / "site.yaml"
    shutil.copy(REPO / "deploy" / "examples" / "site.yaml", copy)
    result = run_cli("check", str(copy), cwd=REPO)
    assert result.returncode == 1, result.stdout
    assert result.stdout == ""  # no OK line
    lines = load_with_lines(copy.read_text())
    expected = [
        f"{copy}: kernels.{name}.runtime.prefix: kernel '{name}' cannot start: its venv runtime {written} resolves to "
        f"{tmp_path / written.removeprefix('../../')} (relative to {folder}, the folder of this YAML file), which does not "
        f"exist (line {lines.line_of(('kernels', name, 'runtime', 'prefix'))})"
        for name, written in (("josephson", "../../.venv"), ("mri", "../../.venv"), ("dl", "../../.venv-dl"))
    ]
    assert result.stderr.splitlines() == expected
    # written absolute, as the docs advise for a copy kept elsewhere: OK
    fixed = copy.read_text().replace("prefix: ../../.venv-dl}", f"prefix: {_fake_venv(tmp_path / 'dl')}}}")
    fixed = fixed.replace("prefix: ../../.venv}", f"prefix: {_fake_venv(tmp_path / 'main')}}}")
    copy.write_text(fixed)
    result = run_cli("check", str(copy), cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{copy}: OK")


def test_runtime_paths_are_taken_from_the_yaml_files_folder_not_the_cwd_and_each_defect_is_named(tmp_path):
    real = tmp_path / "real"
    env = _fake_venv(real / "envs" / "josephson")
    config = real / "hub.yaml"
    config.write_text(MINIMAL + "kernels:\n  josephson:\n    display_name: J\n    runtime: {type: venv, prefix: envs/josephson}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert run_cli("check", str(config), cwd=elsewhere).returncode == 0
    relative = run_cli("check", "../real/hub.yaml", cwd=elsewhere)
    assert relative.returncode == 0 and relative.stdout.startswith("../real/hub.yaml: OK"), relative.stderr
    # a symlink to the file: paths are taken from the real file's folder (where the hub also looks)
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "hub.yaml").symlink_to(config)
    assert run_cli("check", str(tmp_path / "link" / "hub.yaml"), cwd=elsewhere).returncode == 0

    where = f"envs/josephson resolves to {env} (relative to {real}, the folder of this YAML file)"
    (env / "lib" / "python3.11" / "site-packages" / "ipykernel_launcher.py").unlink()
    result = run_cli("check", str(config), cwd=elsewhere)
    assert result.returncode == 1
    assert result.stderr == (f"{config}: kernels.josephson.runtime.prefix: kernel 'josephson' cannot start: its venv runtime "
                             f"{where}, which lacks ipykernel ({env}/bin/python -m pip install ipykernel) (line 11)\n")
    (env / "bin" / "python").unlink()
    result = run_cli("check", str(config), cwd=elsewhere)
    assert result.stderr.endswith(f"its venv runtime {where}, which has no bin/python ({env}/bin/python) (line 11)\n")
    # an Apptainer image, written absolute: no "resolves to"; the `apptainer` command itself is not looked for
    config.write_text(MINIMAL + "kernels:\n  dl:\n    display_name: D\n    runtime:\n      type: apptainer\n"
                      f"      image: {tmp_path / 'dl.sif'}\n      apptainer: no-such-apptainer\n")
    result = run_cli("check", str(config), cwd=elsewhere)
    assert result.returncode == 1
    assert result.stderr == (f"{config}: kernels.dl.runtime.image: kernel 'dl' cannot start: its Apptainer image "
                             f"{tmp_path / 'dl.sif'}, which does not exist (line 13)\n")
    (tmp_path / "dl.sif").write_bytes(b"sif")
    assert run_cli("check", str(config), cwd=elsewhere).returncode == 0


def test_run_warns_of_a_missing_runtime_but_does_not_refuse(tmp_path, capsys):
    """The hub can run without one kernel (its users get an error kernel saying why): `run` warns, `check` fails."""
    from hpclab_hub.cli.run import warn_of_missing_runtimes

    config = tmp_path / "hub.yaml"
    config.write_text(MINIMAL + "kernels:\n  mri:\n    display_name: M\n    runtime: {type: conda, prefix: /no/such/conda}\n")
    warn_of_missing_runtimes(load_deployment(config), str(config))
    assert capsys.readouterr().err == (
        f"hpclab-hub: warning: {config}: kernels.mri.runtime.prefix: kernel 'mri' cannot start: its conda runtime "
        "/no/such/conda, which does not exist (line 11) (its users get an error kernel saying why)\n")


# --- a hub without root: the one-person trial ------------------------------------------------------


def test_a_trial_needs_an_admin_and_hub_user_mode_never_starts_as_root(tmp_path):
    """accounts.mode hub-user/auto serve the first admin without root: none is an error; as root, run refuses hub-user."""
    text = (REPO / "deploy" / "hub.yaml").read_text().replace("admin_users: [admin]", "admin_users: []")
    text = text.replace("gpu-users: [admin]", "gpu-users: []").replace("../.venv", str(REPO / ".venv"))
    (tmp_path / "no-admin.yaml").write_text(text)
    result = run_cli("check", str(tmp_path / "no-admin.yaml"))
    assert result.returncode == 1 and "backends.local.accounts.mode: auto needs hub.admin_users" in result.stderr, result.stderr
    trial = (REPO / "deploy" / "hub.yaml").read_text().replace("mode: auto", "mode: hub-user")
    trial = trial.replace("../.hpclab", str(tmp_path / "state")).replace("../.venv", str(REPO / ".venv"))
    (tmp_path / "trial.yaml").write_text(trial)
    if psutil.Process().uids().effective != 0:
        return  # without root, run would start the trial (tests/e2e/test_trial_without_root.py does that)
    result = run_cli("run", "--config", str(tmp_path / "trial.yaml"))
    assert result.returncode == 1 and "servers never run as root" in result.stderr, result.stderr
    assert not (tmp_path / "state").exists()  # refused before anything was created


def test_as_root_make_hub_says_several_people_each_as_their_own_account_and_how_limits_hold(tmp_path):
    """The mode line `make hub` prints as root (start_lines, through `hpclab-hub run`): own accounts, cgroups or not."""
    from hpclab_hub.backends.local.trial import start_lines

    if psutil.Process().uids().effective != 0:
        pytest.skip("the root mode's line is printed only by a hub running as root")
    assert start_lines(load_deployment(DEFAULT_YAML)) == [
        "mode: several people (the hub runs as root): each person's server runs as their own Unix account "
        "(jupyter-<name>), limits enforced by a cgroup per server."
    ]
    text = DEFAULT_YAML.read_text().replace("../.venv", str(REPO / ".venv")).replace("../.hpclab", str(tmp_path / "state"))
    existing = text.replace('accounts: {mode: auto, prefix: "jupyter-"}', "accounts: {mode: existing}\n    limits: best-effort")
    assert existing != text
    (tmp_path / "existing.yaml").write_text(existing)
    assert start_lines(load_deployment(tmp_path / "existing.yaml")) == [
        "mode: several people (the hub runs as root): each person's server runs as their own Unix account "
        "(<name>), limits best effort (limits: best-effort)."
    ]


def test_make_hub_prints_the_address_of_the_port_the_hub_listens_on(tmp_path):
    """`make hub`'s first line names the hub's public port: HPCLAB_PORT, else the CONFIG's hub.port, never a fixed 8000."""
    plan = subprocess.run(["make", "-n", "-s", "hub"], cwd=REPO, capture_output=True, text=True, timeout=60)
    echo = next(line for line in plan.stdout.splitlines() if line.startswith('echo "HPCLab hub:'))
    other = DEFAULT_YAML.read_text().replace("port: 8000", "port: 8123").replace("../.venv", str(REPO / ".venv"))
    (tmp_path / "other.yaml").write_text(other)
    cases = [
        ({}, "deploy/hub.yaml", 8000),
        ({"HPCLAB_PORT": "8765"}, "deploy/hub.yaml", 8765),
        ({}, str(tmp_path / "other.yaml"), 8123),
    ]
    for env, config, port in cases:
        line = echo.replace("deploy/hub.yaml", config)
        environment = {k: v for k, v in os.environ.items() if k != "HPCLAB_PORT"} | env
        shown = subprocess.run(["sh", "-c", line], cwd=REPO, capture_output=True, text=True, env=environment, timeout=60)
        assert shown.stdout.startswith(f"HPCLab hub: http://localhost:{port}/  — log in as 'admin'."), (env, config, shown)
