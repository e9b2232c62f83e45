"""YAML read with the line of every key and mapping, for error messages that point at the
line to fix (follow-up protocols, education modules). Two equal keys in one mapping are
refused (YAML would silently keep the last)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml


class LineLoader(yaml.SafeLoader):
    """A YAML loader that remembers the line of every mapping (for error messages)."""


def _construct_mapping(loader: LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    # YAML loaders keep the last of two equal keys without a word: refuse them instead.
    lines: dict[Any, int] = {}
    for key_node, _value in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        line = key_node.start_mark.line + 1
        if key_node.value in lines:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"the key {key_node.value!r} is repeated (first on line {lines[key_node.value]})",
                key_node.start_mark,
            )
        lines[key_node.value] = line
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    mapping["__lines__"] = lines
    return mapping


LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

_LINE_KEYS = ("__line__", "__lines__")


def strip_lines(value: Any) -> Any:
    """The loaded data without the line bookkeeping."""
    if isinstance(value, dict):
        return {k: strip_lines(v) for k, v in value.items() if k not in _LINE_KEYS}
    if isinstance(value, list):
        return [strip_lines(item) for item in value]
    return value


def line_of(raw: Any, location: Sequence[int | str]) -> int | None:
    """The line of the innermost key or mapping of `location` found in the file."""
    line: int | None = raw.get("__line__") if isinstance(raw, dict) else None
    node = raw
    for part in location:
        if isinstance(node, dict):
            line = node.get("__lines__", {}).get(part, line)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
        if isinstance(node, dict) and "__line__" in node:
            line = node["__line__"]
    return line
