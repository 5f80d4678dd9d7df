"""Rules across catalog files: unique slugs, known dependencies without cycles, known check targets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import CatalogIntegrityError, Location
from .loader import locate


@dataclass
class Entities:
    """The catalog as it would be after a sync: for each file, what it defines and points at."""

    defines: dict[str, tuple[str, str]]  # path -> (kind, slug)
    dependencies: dict[str, list[str]]  # service path -> dependency slugs
    list_targets: dict[str, list[str]]  # check path -> targeted service slugs (list form)
    current_paths: dict[tuple[str, str], str]  # (kind, slug) -> path in the store before this sync

    @classmethod
    def build(cls, services: dict, checks: dict, defines: dict, records: dict[str, dict]) -> "Entities":
        dependencies, list_targets = {}, {}
        for path, (kind, slug) in defines.items():
            record = records.get(path)
            if kind == "service":
                deps = json.loads(record["dependencies"]) if record else services.get(slug, {}).get("dependencies", [])
                dependencies[path] = deps
            else:
                if record:
                    targets = json.loads(record["targets"]) if record["target_kind"] == "list" else []
                else:
                    targets = checks.get(slug, {}).get("list_targets", [])
                list_targets[path] = targets
        current = {("service", s): row["path"] for s, row in services.items() if row["removed_at"] is None}
        current.update({("check", s): row["path"] for s, row in checks.items() if row["removed_at"] is None})
        return cls(dict(defines), dependencies, list_targets, current)


def find_integrity_errors(root: Path, entities: Entities, changed_paths: set[str]) -> dict[str, list[CatalogIntegrityError]]:
    """Every cross-file problem, keyed by the file to blame. Duplicates blame the newcomer."""
    errors: dict[str, list[CatalogIntegrityError]] = {}

    def blame(path: str, loc: tuple, message: str, other: str | None = None) -> None:
        where = locate(root, path, loc)
        errors.setdefault(path, []).append(
            CatalogIntegrityError(where, message, Location(other) if other else None)
        )

    owners: dict[tuple[str, str], list[str]] = {}
    for path, key in sorted(entities.defines.items()):
        owners.setdefault(key, []).append(path)
    for (kind, slug), paths in owners.items():
        if len(paths) < 2:
            continue
        incumbent = entities.current_paths.get((kind, slug))
        unchanged = [p for p in paths if p not in changed_paths]
        winner = incumbent if incumbent in paths else (unchanged or paths)[0]
        for path in paths:
            if path != winner:
                blame(path, ("slug",), f"slug {slug!r} is already defined in {winner}", winner)

    services = {slug: path for path, (kind, slug) in entities.defines.items() if kind == "service"}
    for path, deps in entities.dependencies.items():
        for index, dep in enumerate(deps):
            if dep not in services:
                blame(path, ("dependencies", index), f"dependencies: unknown service {dep!r} (no file under services/ defines it)")
    for path, targets in entities.list_targets.items():
        for index, target in enumerate(targets):
            if target not in services:
                blame(path, ("services", index), f"services: unknown service {target!r} (no file under services/ defines it)")

    graph = {}
    for path, deps in entities.dependencies.items():
        slug = entities.defines[path][1]
        graph[slug] = [d for d in deps if d in services]
    for cycle in _cycles(graph):
        files = ", ".join(services[slug] for slug in cycle[:-1])
        text = " -> ".join(cycle)
        for slug, following in zip(cycle, cycle[1:]):
            path = services[slug]
            index = entities.dependencies[path].index(following)
            blame(path, ("dependencies", index), f"dependency cycle: {text} ({files})")
    return errors


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Each dependency cycle once, as [a, b, ..., a]; iterative DFS (catalogs can be deep)."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    found = []
    for start in sorted(graph):
        if colour[start] != white:
            continue
        stack = [(start, iter(graph[start]))]
        path = [start]
        colour[start] = grey
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = black
                stack.pop()
                path.pop()
            elif colour.get(child, black) == white:
                colour[child] = grey
                stack.append((child, iter(graph[child])))
                path.append(child)
            elif colour.get(child) == grey:
                found.append(path[path.index(child):] + [child])
    return found
