"""The last good state: which stored entity each file or document that does not apply now keeps.

A file or document read now that fails (to read, parse or validate, or a rule across files) keeps an
entity it had, marked with its error, rather than removing it. Which one it keeps is decided here,
once, for the rules across files (`integrity`) and the plan (`reconcile`) alike (docs/catalog-yaml.md).
Within a file that changed:

1. An entity belongs to the entry (file, or document `file#N`) of its file that names it now, the
   one at its stored path first: it applies with it, or is kept by it when it does not apply. A
   place in a file is no identity: a Component that moves within its file is still itself.
2. An entity of the file that no entry names now is kept by an entry that does not apply and names
   none of the file's entities (its name cannot be read, or is new): the entry at its stored path
   first, then the others in order. A file of one document is the simple case: it keeps the entity
   its path had, whatever its error. An entity that none keeps is removed.

3. An entity that nothing in its file keeps, whose slug a new file read now names (the file moved in
   the commit that broke it), is kept by that file, at its path.

An entity whose file did not change is kept where it is.
"""

from __future__ import annotations

from typing import Callable, Iterable

from .catalog_index import CatalogIndex
from .document_paths import document_number, file_of
from .loader import DEFINITION_KINDS, LoadedFile

Key = tuple[str, str]  # (kind, slug)
ENTITY_KINDS = ("service", "check", *DEFINITION_KINDS)  # what a file can keep


class Keepers:
    """Who keeps each stored entity after a sync, asked slug by slug (`keeper`) or path by path
    (`kept_by`). `applies(path)` says whether what was read at a path applies now; whoever shrinks
    that set (the rules across files, as they blame files) calls `forget`."""

    def __init__(self, read: dict[str, LoadedFile], deleted: Iterable[str], index: CatalogIndex,
                 applies: Callable[[str], bool]):
        self.read, self.deleted, self.index, self.applies = read, set(deleted), index, applies
        self._by_file: dict[str, dict[Key, str]] = {}  # file -> entity -> the path that has it
        # a file of several documents -> its document paths read now, in order (a first sync reads
        # 100,000 files: a list for each of them cost 12 MB of bench/bench_sync.py's peak)
        self._documents: dict[str, list[str]] | None = None
        self._declaring: dict[Key, str] | None = None  # (kind, slug) -> the first new path read now naming it

    def forget(self) -> None:
        """What applies changed: decide again."""
        self._by_file.clear()

    def keeper(self, kind: str, slug: str) -> str | None:
        """The path that keeps the stored entity of a slug after the sync, if any: None when it was
        removed already, applies now, or nothing keeps it."""
        path = self.holder(kind, slug)
        return None if path is None or self.applies(path) else path

    def holder(self, kind: str, slug: str) -> str | None:
        """The path that has the stored entity of a slug after the sync, applying it or keeping it."""
        row = self.index.row(kind, slug)
        if row is None or row["removed_at"] is not None:
            return None
        path = row["path"]
        if path in self.read or path in self.deleted:  # its file changed
            loaded = self.read.get(path)
            if loaded is not None and loaded.kind == kind and loaded.slug == slug:  # where it was: most syncs
                return path
            return self._holders_in(file_of(path)).get((kind, slug)) or self._moved_to(kind, slug)
        if self.index.is_whole:
            file_row = self.index.files.get(path)
            if file_row is None or (file_row["kind"], file_row["slug"]) != (kind, slug):
                return None  # the store's file no longer defines it
        return path

    def kept_by(self, path: str) -> Key | None:
        """The stored entity a path that does not apply now keeps, if any."""
        loaded = self.read.get(path)
        if loaded is not None:
            if loaded.kind not in ENTITY_KINDS:  # catalog.yaml, a file that defines nothing
                return None
            if loaded.slug and self.keeper(loaded.kind, loaded.slug) == path:
                return loaded.kind, loaded.slug
            holders = self._holders_in(file_of(path))
            return next((key for key, holder in holders.items() if holder == path and not self.applies(path)), None)
        row = self.index.files.get(path)  # blamed, not read now: what the store says it defines
        if row and row["slug"] and self.keeper(row["kind"], row["slug"]) == path:
            return row["kind"], row["slug"]
        return None

    def _moved_to(self, kind: str, slug: str) -> str | None:
        """A new file read now that names the slug (moved in the same commit that broke it): it keeps the
        entity. Only a path the store has no entity at, so that no path keeps two."""
        if self._declaring is None:
            self._declaring = {}
            for path, loaded in sorted(self.read.items()):
                if loaded.slug and path not in self.index.files:
                    self._declaring.setdefault((loaded.kind, loaded.slug), path)
        return self._declaring.get((kind, slug))

    def _holders_in(self, file: str) -> dict[Key, str]:
        if file not in self._by_file:
            self._by_file[file] = self._decide(file)
        return self._by_file[file]

    def _decide(self, file: str) -> dict[Key, str]:
        """The module docstring's two rules, for the stored entities of one file that changed."""
        entries = self._entries(file)
        stored = self._stored(file)
        naming: dict[Key, list[str]] = {}
        for entry in entries:
            naming.setdefault((self.read[entry].kind, self.read[entry].slug), []).append(entry)  # type: ignore[arg-type]
        holders: dict[Key, str] = {}
        lost: dict[str, Key] = {}  # stored path -> the entity no entry names now, in document order
        for key, path in stored:
            if key in naming:
                holders[key] = min(naming[key], key=lambda entry: (entry != path, document_number(entry)))
            else:
                lost[path] = key
        stored_keys = {key for key, _ in stored}
        unnamed = [entry for entry in entries if not self.applies(entry)
                   and (self.read[entry].kind, self.read[entry].slug) not in stored_keys]
        elsewhere = []
        for entry in unnamed:  # its own place first
            if entry in lost:
                holders[lost.pop(entry)] = entry
            else:
                elsewhere.append(entry)
        holders.update(zip(lost.values(), elsewhere))
        return holders

    def _entries(self, file: str) -> list[str]:
        """The paths of a file read now (the file's, or its documents'), in document order."""
        if self._documents is None:
            self._documents = {}
            for path in self.read:
                if "#" in path and (real := file_of(path)) != path:
                    self._documents.setdefault(real, []).append(path)
            for paths in self._documents.values():
                paths.sort(key=document_number)
        return self._documents.get(file) or ([file] if file in self.read else [])

    def _stored(self, file: str) -> list[tuple[Key, str]]:
        """The entities the store keeps in a file, at paths read or deleted now, in document order."""
        found = []
        for path in [*self._entries(file), *sorted((p for p in self.deleted if file_of(p) == file), key=document_number)]:
            row = self.index.files.get(path)
            if not row or not row["slug"]:
                continue
            current = self.index.row(row["kind"], row["slug"])
            if current is not None and current["removed_at"] is None and current["path"] == path:
                found.append(((row["kind"], row["slug"]), path))
        return sorted(found, key=lambda item: document_number(item[1]))
