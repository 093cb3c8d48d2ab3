"""Turn validation failures into one readable line each: key path, what is wrong, YAML line."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from hpclab_hub.config.yaml_source import KeyPath, SourceMap, format_path


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a deploy YAML, located by key path and line."""

    path: KeyPath
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = format_path(self.path) or "<file>"
        at = f" (line {self.line})" if self.line else ""
        return f"{where}: {self.message}{at}"


class ConfigError(Exception):
    """A deploy YAML that must not be used; holds every issue found."""

    def __init__(self, source: str, issues: list[ConfigIssue]):
        self.source = source
        self.issues = issues
        super().__init__("\n".join(f"{source}: {issue}" for issue in issues))


def _allowed_keys(model: Any, path: KeyPath) -> list[str]:
    """Field names allowed at ``path`` inside ``model`` (for 'did you mean')."""
    from pydantic import BaseModel

    current: Any = model
    for part in path:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            current = _inner_model(current)
            if isinstance(part, int):
                continue
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = _inner_model(current.model_fields[part].annotation)
        else:
            current = _inner_model(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _inner_model(annotation: Any) -> Any:
    """The pydantic model inside list[...], dict[..., ...], X | None, Annotated[...]."""
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in reversed(get_args(annotation)):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _message(error: dict[str, Any], allowed: list[str]) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else (f"; allowed: {', '.join(allowed)}" if allowed else "")
        return f"unknown key{hint}"
    if kind == "missing":
        return "required key is missing"
    if kind == "greater_than_equal":
        return f"must be ≥ {ctx.get('ge')}"
    if kind == "greater_than":
        return f"must be > {ctx.get('gt')}"
    if kind == "less_than_equal":
        return f"must be ≤ {ctx.get('le')}"
    if kind in ("string_type",):
        return f"must be a string, got {type(error.get('input')).__name__} {error.get('input')!r}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer, got {error.get('input')!r}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, got {error.get('input')!r}"
    if kind in ("list_type",):
        return f"must be a list, got {type(error.get('input')).__name__}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping of keys to values, got {type(error.get('input')).__name__}"
    if kind == "string_pattern_mismatch":
        return f"{error.get('input')!r} does not match the allowed form {ctx.get('pattern')}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} entr{'y' if ctx.get('min_length') == 1 else 'ies'}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {error.get('input')!r}"
    if kind == "union_tag_invalid":
        return f"unknown type {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"needs a '{ctx.get('discriminator', 'type').strip(chr(39))}' key"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return error["msg"]


def issues_from_validation(exc: Any, source: SourceMap, model: Any) -> list[ConfigIssue]:
    """One ConfigIssue per pydantic error, with tagged-union, union-member and dict-key noise removed from paths."""
    found: list[tuple[KeyPath, str, str, set[KeyPath]]] = []
    for error in exc.errors(include_url=False):
        loc: list[Any] = []
        unions: set[KeyPath] = set()  # paths where pydantic tried the members of a plain union
        raw = list(error["loc"])
        for i, part in enumerate(raw):
            if part == "[key]":
                continue
            # a discriminated union adds the tag value ("local") as a path element: drop it
            if isinstance(part, str) and i > 0 and loc and _is_tag(source.data, loc, part):
                continue
            # a plain union ('auto' | list[int]) adds a member label ("literal['auto']", "str"): drop it
            if isinstance(part, str) and loc and _is_union_label(source.data, model, loc, part):
                unions.add(tuple(loc))
                continue
            loc.append(part)
        path = tuple(loc)
        allowed = _allowed_keys(model, path[:-1]) if error["type"] == "extra_forbidden" else []
        message = _message(error, allowed)
        if "[key]" in raw:
            message = f"key {raw[raw.index('[key]') - 1]!r} is not valid: {message}"
            path = tuple(p for p in path if p != raw[raw.index("[key]") - 1]) or path
        found.append((path, error["type"], message, unions))
    issues: list[ConfigIssue] = []
    seen: set[tuple[KeyPath, str]] = set()
    for path, _kind, message, _unions in _pick_union_members(found):
        key = (path, message)
        if key not in seen:
            seen.add(key)
            issues.append(ConfigIssue(path, message, source.line_of(path)))
    return issues


_TYPE_MISMATCH = {
    "string_type",
    "int_type",
    "int_parsing",
    "int_from_float",
    "float_type",
    "bool_type",
    "bool_parsing",
    "list_type",
    "dict_type",
    "model_type",
    "model_attributes_type",
    "literal_error",
}


def _pick_union_members(found: list[tuple[KeyPath, str, str, set[KeyPath]]]) -> list[tuple[KeyPath, str, str, set[KeyPath]]]:
    """For a value that failed every member of a union, keep what the admin most likely meant, as one line."""
    # a member whose shape fits went deeper (cpus: [0, -1] -> cpus[1]): the other members' complaints are noise
    kept = [
        f
        for f in found
        if not (f[0] in f[3] and any(f[0] in g[3] and len(g[0]) > len(f[0]) and g[0][: len(f[0])] == f[0] for g in found))
    ]
    out: list[tuple[KeyPath, str, str, set[KeyPath]]] = []
    for f in kept:
        path, kind, message, unions = f
        if path not in unions:
            out.append(f)
            continue
        rivals = [g for g in kept if g[0] == path and path in g[3]]
        fitting = [g for g in rivals if g[1] not in _TYPE_MISMATCH]  # right type, wrong value: say only that
        chosen = fitting or rivals
        if f is chosen[0]:
            out.append((path, kind, "; or ".join(dict.fromkeys(g[2] for g in chosen)), unions))
    return out


def _is_union_label(data: Any, model: Any, loc: list[Any], part: str) -> bool:
    node = data
    for p in loc:
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            return False
    return not (isinstance(node, dict) and part in node) and part not in _allowed_keys(model, tuple(loc))


def _is_tag(data: Any, loc: list[Any], part: str) -> bool:
    node = data
    for p in loc:
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            return False
    return isinstance(node, dict) and node.get("type") == part and part not in node
