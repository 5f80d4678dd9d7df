"""What the store knows of the catalog before a sync: read whole, or only where a sync of a few files looks."""

from __future__ import annotations

import json
from typing import Iterable

from .store import Database


class CatalogIndex:
    """The store's rows of catalog files, services and checks, as the steps of a sync ask for them.

    Whole (a first sync, a plain directory, an unknown old revision): every row, read at once.
    Partial (after a git diff): the rows of the changed paths and of the files with errors, and the
    services asked for by slug, so that a one-file sync costs the same at 100 or 100,000 services.
    """

    def __init__(self, files: dict, services: dict, checks: dict, *, store: Database | None = None,
                 active: dict[str, int] | None = None, definitions: dict | None = None):
        self.files = files  # path -> {kind, slug, digest, error}; partial: changed paths, files with errors
        self.checks = checks  # slug -> check_index row: always every check (a catalog has few)
        # (kind, slug) -> definition_index row of scorecards, waivers, campaigns: always all (few)
        self.definitions = definitions or {}
        self._services = services  # slug -> service_index(decode=False) row
        self._store = store  # set when partial: more rows are read from it on demand
        self._all_services = store is None
        self._asked: set[str] = set(services)
        self._active = active

    @classmethod
    def whole(cls, store: Database) -> "CatalogIndex":
        return cls(store.catalog.files(), store.catalog.service_index(decode=False), store.catalog.check_index(),
                   definitions=store.catalog.definition_index())

    @classmethod
    def partial(cls, store: Database, paths: Iterable[str]) -> "CatalogIndex":
        found = store.catalog.index_rows(paths=paths)
        index = cls(found["files"], {}, store.catalog.check_index(), store=store, active=found["active"],
                    definitions=store.catalog.definition_index())
        index.load_services(row["slug"] for row in index.files.values() if row["kind"] == "service" and row["slug"])
        return index

    @classmethod
    def empty(cls) -> "CatalogIndex":
        """No store at all (`catalog validate`)."""
        return cls({}, {}, {})

    @property
    def is_whole(self) -> bool:
        return self._store is None

    def load_services(self, slugs: Iterable[str]) -> None:
        """Read the rows of these services in one query, ahead of asking for them one by one."""
        if self._all_services:
            return
        wanted = [slug for slug in set(slugs) if slug not in self._asked]
        if wanted:
            self._asked.update(wanted)
            self._services.update(self._store.catalog.index_rows(service_slugs=wanted)["services"])

    def load_files(self, paths: Iterable[str]) -> None:
        """Read the rows of these files (blamed files that were not read now)."""
        wanted = [path for path in paths if path not in self.files]
        if wanted and self._store is not None:
            self.files.update(self._store.catalog.index_rows(paths=wanted)["files"])

    def row(self, kind: str, slug: str) -> dict | None:
        """The service or check row of a slug, removed or not; None if it was never synced."""
        if kind == "check":
            return self.checks.get(slug)
        if kind != "service":
            return self.definitions.get((kind, slug))
        if not self._all_services and slug not in self._asked:
            self.load_services([slug])
        return self._services.get(slug)

    def stored_slugs(self, kind: str, slugs: Iterable[str]) -> set[str]:
        """Which of these service or check slugs have a row, removed or not (a set operation: a
        first sync asks about 100,000 slugs)."""
        if kind == "check":
            return self.checks.keys() & slugs
        self.load_services(slugs)
        return self._services.keys() & slugs

    def every_service(self) -> dict[str, dict]:
        """Every service row: for what only a scan finds (who depends on a slug that went away)."""
        if not self._all_services:
            self._services = self._store.catalog.service_index(decode=False)  # type: ignore[union-attr]
            self._all_services = True
        return self._services

    def active(self, kind: str) -> int:
        """How many entities of a kind were not removed before this sync."""
        if kind not in ("service", "check"):
            return sum(1 for (k, _), row in self.definitions.items() if k == kind and row["removed_at"] is None)
        if self._active is not None:
            return self._active[kind]
        rows = self._services if kind == "service" else self.checks
        return sum(1 for row in rows.values() if row["removed_at"] is None)


def dependencies_of(row: dict) -> list[str]:
    """A service row's dependencies (JSON text in the index: a one-file sync decodes few)."""
    text = row["dependencies"]
    if not isinstance(text, str):
        return text
    return [] if text == "[]" else json.loads(text)
