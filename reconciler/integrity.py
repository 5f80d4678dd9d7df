"""Rules across catalog files: unique slugs, known dependencies without cycles, known check targets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import CatalogIntegrityError, Location
from .loader import locate


@dataclass
class Entities:
    """The catalog as it would be after a sync: for each file, what it defines and points at."""

    defines: dict[str, tuple[str, str]]  # path -> (kind, slug)
    dependencies: Mapping[str, list[str]]  # service path -> dependency slugs
    list_targets: Mapping[str, list[str]]  # check path -> targeted service slugs (list form)
    current_paths: dict[tuple[str, str], str]  # (kind, slug) -> path in the store before this sync

    @classmethod
    def build(cls, services: dict, checks: dict, defines: dict, records: dict[str, dict]) -> "Entities":
        """Dependencies and targets are worked out per file when asked for: a one-file sync asks for few."""
        current = {("service", s): row["path"] for s, row in services.items() if row["removed_at"] is None}
        current.update({("check", s): row["path"] for s, row in checks.items() if row["removed_at"] is None})
        return cls(
            dict(defines),
            _References(defines, records, "service", lambda record: record["dependencies"], services, "dependencies"),
            _References(defines, records, "check", _list_targets, checks, "list_targets"),
            current,
        )


def _decode_list(text: str) -> list[str]:
    return [] if text == "[]" else json.loads(text)


def _list_targets(record: dict) -> str:
    return record["targets"] if record["target_kind"] == "list" else "[]"


class _References(Mapping):
    """path -> the slugs a file of one kind points at: from its record when read now, else the store's."""

    def __init__(self, defines: dict, records: dict, kind: str, field_of, index: dict, stored_key: str):
        self._defines, self._records, self._kind = defines, records, kind
        self._field_of, self._index, self._stored_key = field_of, index, stored_key
        self._paths: list[str] | None = None
        self._decoded: dict[str, list[str]] = {}  # a full check asks for each path two or three times

    def __getitem__(self, path: str) -> list[str]:
        decoded = self._decoded.get(path)
        if decoded is not None:
            return list(decoded)
        kind_slug = self._defines.get(path)
        if kind_slug is None or kind_slug[0] != self._kind:
            raise KeyError(path)
        record = self._records.get(path)
        if record is not None:
            decoded = _decode_list(self._field_of(record))
        else:
            stored = self._index.get(kind_slug[1], {}).get(self._stored_key, [])
            # JSON text: store.service_index(decode=False)
            decoded = _decode_list(stored) if isinstance(stored, str) else stored
        self._decoded[path] = decoded
        return list(decoded)

    def __iter__(self):
        if self._paths is None:
            self._paths = [path for path, (kind, _) in self._defines.items() if kind == self._kind]
        return iter(self._paths)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def find_integrity_errors(
    root: Path, entities: Entities, changed_paths: set[str], *, focus: "Focus | None" = None
) -> dict[str, list[CatalogIntegrityError]]:
    """Every cross-file problem, keyed by the file to blame. Duplicates blame the newcomer.

    With `focus` (a sync of a few changed files over a catalog that passed these rules before) only
    the problems those files can cause are looked for: duplicates of their slugs, their own
    references, references to slugs that disappeared, cycles through them. The result is the same
    as the full check's whenever the rest of the catalog was clean (files with errors are always
    in the focus: the reconciler reads them again on every sync).
    """
    errors: dict[str, list[CatalogIntegrityError]] = {}
    parsed: dict = {}  # each blamed file is read once

    def blame(path: str, loc: tuple, message: str, other: str | None = None) -> None:
        where = locate(root, path, loc, parsed)
        errors.setdefault(path, []).append(
            CatalogIntegrityError(where, message, Location(other) if other else None)
        )

    owners: dict[tuple[str, str], list[str]] = {}  # in path order: the first path of each key decides
    defined = entities.defines.items()
    if focus is not None:
        keys = {entities.defines[path] for path in focus.paths if path in entities.defines}
        defined = [(path, key) for path, key in defined if key in keys]
    for path, key in sorted(defined):
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
    if focus is None:
        dependencies, list_targets = entities.dependencies, entities.list_targets
    else:
        dependencies = _focused(entities.dependencies, focus, services)
        list_targets = _focused(entities.list_targets, focus, services)
    for path, deps in dependencies.items():
        for index, dep in enumerate(deps):
            if dep not in services:
                blame(path, ("dependencies", index), f"dependencies: unknown service {dep!r} (no file under services/ defines it)")
    for path, targets in list_targets.items():
        for index, target in enumerate(targets):
            if target not in services:
                blame(path, ("services", index), f"services: unknown service {target!r} (no file under services/ defines it)")

    if focus is not None and not _on_a_cycle(entities, services, focus):
        return errors
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


@dataclass
class Focus:
    """What changed in a sync: the files read now, and what the changed and deleted files defined."""

    paths: set[str]
    former_slugs: set[str]  # service slugs the changed and deleted files defined before this sync


def _focused(references: Mapping, focus: Focus, services: dict) -> dict[str, list[str]]:
    """The references of the focus files, and of every file that points at a lost slug, in path order."""
    paths = {path for path in focus.paths if path in references}
    lost = {slug for slug in focus.former_slugs if slug not in services}
    if lost:
        paths.update(path for path in references if not lost.isdisjoint(references[path]))
    return {path: references[path] for path in sorted(paths)}


def _on_a_cycle(entities: Entities, services: dict, focus: Focus) -> bool:
    """Whether a service of the focus files can reach itself through dependencies."""
    dependencies = entities.dependencies
    starts = {entities.defines[path][1] for path in focus.paths if path in dependencies}
    for start in starts:
        seen, stack = set(), [start]
        while stack:
            slug = stack.pop()
            path = services.get(slug)
            if path is None:
                continue
            for dep in dependencies[path]:
                if dep == start:
                    return True
                if dep not in seen:
                    seen.add(dep)
                    stack.append(dep)
    return False


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
