"""Read YAML while remembering the line of every key, so errors can point at it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

#: keys from the mapping's root down: names, list indices, and the numbers YAML allows as keys
KeyPath = tuple[str | int | float, ...]


@dataclass
class YAMLProblem(Exception):
    """A YAML file that cannot be read as data (syntax error, duplicate key, ...)."""

    message: str
    line: int | None = None
    path: KeyPath = ()

    def __str__(self) -> str:
        return self.message


@dataclass
class SourceMap:
    """Data read from YAML plus the 1-based line where each key path starts."""

    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int | None:
        """Line of ``path``, or of its nearest ancestor present in the file."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1 surprises we care about (duplicate keys are errors)."""


def _walk(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], loader: yaml.Loader) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise YAMLProblem(
                    "keys must be plain scalars (strings or numbers)",
                    key_node.start_mark.line + 1,
                    path,
                )
            if key in result:
                child = path + (key,)
                raise YAMLProblem(
                    f"duplicate key (first at line {lines.get(child)})",
                    key_node.start_mark.line + 1,
                    child,
                )
            lines[path + (key,)] = key_node.start_mark.line + 1
            result[key] = _walk(value_node, path + (key,), lines, loader)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, path + (i,), lines, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _fmt(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


format_path = _fmt


def load_with_lines(text: str) -> SourceMap:
    """Parse one YAML document into plain data and a key-path -> line map."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return SourceMap(data=None)
        lines: dict[KeyPath, int] = {}
        data = _walk(node, (), lines, loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if mark is not None and exc.context_mark is not None and mark.index >= len(text):
            mark = exc.context_mark  # found only at the end of the file: point at what was left open
        line = mark.line + 1 if mark else None
        problem = exc.problem or str(exc)
        raise YAMLProblem(f"invalid YAML: {problem}", line) from exc
    finally:
        loader.dispose()
    return SourceMap(data=data, lines=lines)
