"""Load a deploy YAML into a Deployment, or raise ConfigError listing every problem with its line."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import ValidationError

from hpclab_hub.config.checks import cross_checks
from hpclab_hub.config.errors import ConfigError, ConfigIssue, issues_from_validation
from hpclab_hub.config.model import Deployment
from hpclab_hub.config.yaml_source import YAMLProblem, load_with_lines


def parse_deployment(text: str, base_dir: Path, source: str = "<string>") -> Deployment:
    """Validate YAML text; relative paths in it are taken from ``base_dir``."""
    try:
        src = load_with_lines(text)
    except YAMLProblem as problem:
        raise ConfigError(source, [ConfigIssue(problem.path, problem.message, problem.line)]) from None
    if src.data is None:
        raise ConfigError(
            source, [ConfigIssue((), "the file is empty: expected a mapping with hub, auth, backends and profiles")]
        )
    if not isinstance(src.data, dict):
        raise ConfigError(
            source, [ConfigIssue((), f"expected a mapping at the top level, got {type(src.data).__name__}", src.line_of(()))]
        )
    try:
        deployment = Deployment.model_validate(src.data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(source, issues_from_validation(exc, src, Deployment)) from None
    problems = [ConfigIssue(i.path, i.message, src.line_of(i.path)) for i in cross_checks(deployment)]
    if problems:
        raise ConfigError(source, problems)
    return deployment


def load_deployment(path: str | Path) -> Deployment:
    """Read and validate a deploy YAML file."""
    path = Path(path).resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [ConfigIssue((), f"cannot read the file: {exc.strerror}")]) from None
    return parse_deployment(text, path.parent, str(path))


@lru_cache(maxsize=8)
def cached_deployment(path: str) -> Deployment:
    """The deployment at ``path``, read once per hub process (spawners share it)."""
    return load_deployment(path)
