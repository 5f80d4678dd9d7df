"""Pydantic's validation errors of a catalog file as `CatalogFileError`s at file:line:col, one
sentence each (a "did you mean" for an unknown key), only the union branch that fits the YAML."""

from __future__ import annotations

import difflib
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .errors import CatalogFileError
from .yamlparse import node_location


def explain(error: ValidationError, node: yaml.Node, relative_path: str, model: type[BaseModel],
             translate=None) -> list[CatalogFileError]:
    """Pydantic's errors at file:line:col; `translate` maps a field's key path to where it sits in
    the file when the file's shape is not the model's (a Backstage descriptor)."""
    explained: dict[tuple, CatalogFileError] = {}
    items = error.errors(include_url=False)
    fitting = [item for item in items if _is_branch_for_node(node, tuple(item["loc"]))]
    for item in fitting or items:  # never none: an invalid file without an error would pass as good
        loc = tuple(item["loc"]) + getattr((item.get("ctx") or {}).get("error"), "loc", ())  # schema.AtKey
        loc = loc if translate is None else translate(loc)
        field_path = ".".join(str(p) for p in loc if not _is_branch_name(p))
        is_extra = item["type"] == "extra_forbidden"
        where = node_location(node, loc, relative_path, at_key=is_extra)
        message = _message(item, loc, model)
        key = (where.line, where.col, field_path)
        if key not in explained:
            prefix = f"{field_path}: " if field_path and not is_extra else ""
            explained[key] = CatalogFileError(where, prefix + message)
    return sorted(explained.values(), key=lambda e: (e.location.line, e.location.col))


def _is_branch_name(part: Any) -> bool:
    return isinstance(part, str) and ("Selector" in part or "[" in part or part.startswith("literal"))


def _is_branch_for_node(node: yaml.Node, loc: tuple) -> bool:
    """For a union (`services:`), keep only the errors of the branch that fits the YAML's shape."""
    current = node
    for index, part in enumerate(loc):
        if _is_branch_name(part):
            wanted = (
                yaml.MappingNode if "Selector" in part
                else yaml.SequenceNode if part.startswith("list")
                else yaml.ScalarNode
            )
            if not isinstance(current, wanted):
                return False
            continue
        if isinstance(current, yaml.MappingNode) and isinstance(part, str):
            match = next((v for k, v in current.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
            if match is None:
                return True
            current = match
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int) and part < len(current.value):
            current = current.value[part]
    return True


def _message(item: dict, loc: tuple, model: type[BaseModel]) -> str:
    kind, ctx = item["type"], item.get("ctx") or {}
    if kind == "extra_forbidden":
        name = str(loc[-1])
        known = _known_keys(model, loc[:-1])
        hint = difflib.get_close_matches(name, known, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else f" (known keys: {', '.join(known)})" if known else ""
        return f"unknown key {name!r}{suggestion}"
    if kind == "missing":
        return "is required"
    if kind == "less_than_equal":
        return f"must be <= {ctx.get('le')}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}"
    if kind == "int_type":
        return "must be a whole number"
    if kind == "string_type":
        return "must be text"
    if kind == "bool_type":
        return "must be true or false"
    if kind == "list_type":
        return "must be a list"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "must be a mapping (key: value)"
    if kind == "string_pattern_mismatch" and "[a-z0-9]+" in str(ctx.get("pattern", "")):
        return "must be a slug: lower-case letters and digits in words joined by single dashes"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind == "value_error":
        return str(item["msg"]).removeprefix("Value error, ")
    return str(item["msg"]).lower() if item["msg"][:1].isupper() else str(item["msg"])


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names allowed at a location, for 'did you mean' hints."""
    from .schema import Defaults, Level, Selector, Writeback

    plain = tuple(part for part in loc if not (isinstance(part, str) and "Selector" in part))
    nested = {("defaults",): Defaults, ("writeback",): Writeback, ("services",): Selector}
    if len(plain) == 2 and plain[0] == "levels" and isinstance(plain[1], int):
        return sorted(Level.model_fields)
    target = nested.get(plain, model if not plain else None)
    return sorted(target.model_fields) if target else []
