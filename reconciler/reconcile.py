"""Reconcile: turn the catalog files at a revision into a plan, and apply it in one transaction.

A sync is a forward pipeline, one function per step: fetch the revision; select the paths to read
(`_select_paths`, against the store's `CatalogIndex`); read catalog.yaml (`_read_config`); read,
parse, validate and record the files (`loader`, `entity_records`); the rules across files
(`integrity`); plan the changes, the error marks and the file rows; apply (`apply_plan`).

The rules (docs/catalog-yaml.md): identity is the slug; a bad file keeps its entities at their last
good state and removes nothing; removal is soft; a sync that would remove all or more than half of
the services, or of the checks, is refused unless allowed; the same revision twice is no work; a
new revision re-reads only the changed paths (plus files that had errors), everything when the
old revision is unknown.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

from . import scorecards
from .catalog_index import CatalogIndex
from .clock import Clock, format_time
from .document_paths import file_of
from .errors import CatalogError, CatalogFileError, Conflict, SyncRefused
from .gitsource import Source
from .integrity import Problem, Verdict, check_integrity, locate_problems, locate_warnings
from .last_good import Keepers
from .loader import (
    CATALOG_FILE, DEFINITION_KINDS, SKIPPED, LoadedFile, kind_of, list_catalog_files, locate, read_file, read_files,
)
from .progress import Progress
from .schema import CatalogConfig, route_problems
from .store import Database

PROGRESS_FROM = 2_000  # files: a sync reading fewer is over before a bar would be worth drawing
_SYNC_LOCKS: dict[str, threading.Lock] = {}
_SYNC_LOCKS_GUARD = threading.Lock()


@dataclass(slots=True)  # a first sync makes 100,000s of these
class Change:
    kind: str  # service | check | scorecard | waiver | campaign
    slug: str
    action: str  # create | update | remove
    path: str
    fields: Sequence[str] = ()  # for updates: what changed

    def __str__(self) -> str:
        sign = {"create": "+", "update": "~", "remove": "-"}[self.action]
        detail = f" ({', '.join(self.fields)})" if self.fields else ""
        return f"{sign} {self.kind} {self.slug}  [{self.path}]{detail}"


class FileRow(NamedTuple):
    """A catalog_files row to write (a tuple: a first sync writes 100,000 of them), in the order
    `db.catalog.apply` takes its fields."""

    path: str
    kind: str
    slug: str | None
    digest: str
    error: dict | None


@dataclass
class Plan:
    """What applying a revision would do; `apply` needs nothing else."""

    previous_revision: str | None
    revision: str
    changes: list[Change] = field(default_factory=list)
    unchanged: int = 0
    errors: list[CatalogFileError] = field(default_factory=list)
    warnings: list[CatalogFileError] = field(default_factory=list)  # applied anyway (a broken file's slug)
    notes: list[str] = field(default_factory=list)  # what was read and skipped (Backstage kinds other than Component)
    same_revision: bool = False
    # what apply writes
    service_records: list[dict] = field(default_factory=list)
    check_records: list[dict] = field(default_factory=list)
    definition_records: list[dict] = field(default_factory=list)  # scorecards, waivers, campaigns
    entity_errors: dict[tuple[str, str], str | None] = field(default_factory=dict)
    moved: dict[tuple[str, str], str] = field(default_factory=dict)  # kept at their last good state, at a new path
    files: list[FileRow] = field(default_factory=list)
    deleted_files: list[str] = field(default_factory=list)
    config: dict | None = None
    active_before: dict[str, int] = field(default_factory=dict)  # kind -> entities not removed before

    _tally: tuple[int, Counter] = field(default_factory=lambda: (0, Counter()), repr=False, compare=False)

    def count(self, action: str) -> int:
        return sum(number for (_, done), number in self._changes_by_kind().items() if done == action)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def removing(self, kind: str) -> int:
        return self._changes_by_kind()[(kind, "remove")]

    def _changes_by_kind(self) -> Counter:
        """(kind, action) -> how many: counted once, as changes are only ever added (a sync asks ten
        times, and a first sync has 100,000 changes)."""
        if self._tally[0] != len(self.changes):
            self._tally = (len(self.changes), Counter((change.kind, change.action) for change in self.changes))
        return self._tally[1]


@dataclass
class SyncReport:
    outcome: str  # applied | unchanged | refused | failed
    revision: str | None
    previous_revision: str | None
    plan: Plan | None
    duration_ms: float
    message: str | None = None
    run: dict | None = None
    level_changes: list = field(default_factory=list)  # scorecards.LevelChange of this sync

    @property
    def errors(self) -> list[CatalogFileError]:
        return self.plan.errors if self.plan else []


def make_plan(store: Database, source: Source, *, revision: str | None = None,
              progress: Callable[[str, int], Progress] | None = None) -> Plan:
    """Fetch the source and compare it with the store: every step of a sync before `apply_plan`.

    fetch -> select the paths -> read catalog.yaml -> read, parse, validate, record the files ->
    rules across files -> plan the changes, error marks and file rows. `progress(description, total)`,
    when given, is asked for a callback to tell how many files are read (the CLI draws a bar).
    The source is held (`exclusive`) from the fetch to the last file read.
    """
    with source.exclusive():
        return _plan(store, source, revision, progress)


def _plan(store: Database, source: Source, revision: str | None, progress) -> Plan:
    revision = revision or source.fetch()
    previous = store.state.get("applied_revision")
    plan = Plan(previous_revision=previous, revision=revision)
    if previous == revision:
        plan.same_revision = True
        return plan
    old_config = CatalogConfig.from_stored(store.state.get("catalog_config"))
    selection = _select_paths(store, source, previous, revision, old_config.writeback.path)
    config, config_file = _read_config(source.root, selection, old_config)
    read = _read_files(source.root, selection, config, config_file, defaults_changed=config.defaults != old_config.defaults,
                       progress=progress)
    plan.notes = selection.notes
    verdict = check_integrity(read, selection.deleted, selection.index, past_expiry="warning")
    file_errors = _file_errors(source.root, read, verdict)
    applied = {path: loaded.record for path, loaded in read.items() if loaded.record is not None and path not in file_errors}
    plan.config = config.model_dump(mode="json")
    plan.deleted_files = selection.deleted
    plan.warnings = locate_warnings(source.root, verdict) + _route_warnings(source.root, config)
    selection.index.load_files(path for path in file_errors if path not in read)  # blamed, not read now
    keepers = Keepers(read, selection.deleted, selection.index, applied.__contains__)
    _plan_changes(plan, selection, read, applied, keepers)
    owners = {path: _owner_after(keepers, path, verdict.problems) for path in _read_or_blamed(read, file_errors)
              if path not in applied}
    _plan_error_marks(plan, selection.index, read, applied, file_errors, owners)
    _plan_file_rows(plan, selection.index, read, applied, file_errors, owners)
    # the documents of a file that cannot be parsed share its one error: reported once
    unique = {str(e): e for errors in file_errors.values() for e in errors}
    plan.errors = sorted(unique.values(), key=lambda e: str(e.location))
    return plan


def _route_warnings(root: Path, config: CatalogConfig) -> list[CatalogFileError]:
    """A notification route whose environment variable is unset here: a warning, never an error."""
    return [CatalogFileError(locate(root, CATALOG_FILE, ("notifications", index, name)), message)
            for index, name, message in route_problems(config, os.environ)]


@dataclass
class _Selection:
    """Which files a sync reads, and which it found deleted, with the store's index of them."""

    index: CatalogIndex
    to_read: list[str]  # files (never the `file#N` path of one document)
    deleted: list[str]  # stored paths: files, and documents of files that hold several
    notes: list[str] = field(default_factory=list)


def _select_paths(store: Database, source: Source, previous: str | None, revision: str, ignored: str) -> _Selection:
    """After a git diff: the changed paths and the files with errors (a fix elsewhere, such as a new
    dependency, may cure them). Else, with no diff to go by: every file."""
    root = source.root
    changed = source.changed_paths(previous, revision) if previous else None
    if changed is None:
        index = CatalogIndex.whole(store)
        present = list_catalog_files(root, ignored)
        present_set = set(present)
        return _Selection(index, present, sorted(path for path in index.files if file_of(path) not in present_set))
    relevant = sorted(path for path in changed if kind_of(path, ignored))
    index = CatalogIndex.partial(store, relevant)
    to_read = [path for path in relevant if (root / path).exists() or (root / path).is_symlink()]
    gone = set(relevant).difference(to_read)
    deleted = sorted(path for path in index.files if file_of(path) in gone)
    listed = set(relevant)
    for path, row in index.files.items():
        if row["error"] and file_of(path) not in listed:
            listed.add(file_of(path))
            to_read.append(file_of(path))
    return _Selection(index, to_read, deleted)


def _read_config(root: Path, selection: _Selection, old: CatalogConfig) -> tuple[CatalogConfig, LoadedFile | None]:
    """catalog.yaml first: its defaults shape every check. A bad one keeps the old config."""
    if CATALOG_FILE in selection.deleted:
        return CatalogConfig(), None
    if CATALOG_FILE not in selection.to_read:
        return old, None
    loaded = read_file(root, CATALOG_FILE)
    return (loaded.config if loaded.ok else old), loaded  # type: ignore[return-value]


def _read_files(
    root: Path, selection: _Selection, config: CatalogConfig, config_file: LoadedFile | None, *, defaults_changed: bool,
    progress: Callable[[str, int], Progress] | None = None,
) -> dict[str, LoadedFile]:
    """Every selected file read to its record, but those with the same bytes as their last good read;
    new defaults re-read every check."""
    paths = [path for path in selection.to_read if path != CATALOG_FILE]
    files = selection.index.files
    if defaults_changed:
        listed = set(paths)
        paths += [row["path"] for row in selection.index.checks.values()
                  if row["removed_at"] is None and row["path"] not in listed and row["path"] not in selection.deleted]
    advance = progress("reading catalog files", len(paths)) if progress and len(paths) >= PROGRESS_FROM else None
    read = {}
    loaded_files = read_files(root, paths, config, progress=advance)
    for loaded in ([config_file] if config_file else []) + _with_documents(loaded_files, selection):
        row = files.get(loaded.path)
        if row and not row["error"] and loaded.digest == row["digest"] and not (defaults_changed and loaded.kind == "check"):
            continue  # same bytes as the last good read: nothing to do
        read[loaded.path] = loaded
    return read


def _with_documents(loaded_files: list[LoadedFile], selection: _Selection) -> list[LoadedFile]:
    """The files read, as far as documents of Backstage descriptor files go: their notes gathered, the
    files that define nothing dropped, and the stored documents a file no longer holds deleted. A
    file that cannot be parsed keeps every document it had, each marked with the file's error."""
    documents: dict[str, list[str]] = {}
    for path in selection.index.files:
        real = file_of(path)
        if real != path:
            documents.setdefault(real, []).append(path)
    if not documents and all(f.kind != SKIPPED and not f.notes and "#" not in f.path for f in loaded_files):
        return loaded_files  # the usual catalog: no file holds several documents, nor did
    kept, produced = [], {}
    for loaded in loaded_files:
        selection.notes.extend(loaded.notes)
        real = file_of(loaded.path)
        produced.setdefault(real, set())
        if loaded.kind == SKIPPED:
            continue
        if loaded.path == real and loaded.errors and loaded.record is None and real in documents and loaded.slug is None:
            # the whole file failed (unreadable, YAML syntax): each document keeps its last good state
            for path in documents[real]:
                kept.append(LoadedFile(path, loaded.kind, loaded.digest, errors=loaded.errors))
                produced[real].add(path)
            continue
        produced[real].add(loaded.path)
        kept.append(loaded)
    for real, paths in produced.items():
        stored = documents.get(real, []) + ([real] if real in selection.index.files else [])
        selection.deleted.extend(path for path in stored if path not in paths and path not in selection.deleted)
    return kept


def _file_errors(root: Path, read: dict[str, LoadedFile], verdict: Verdict) -> dict[str, list[CatalogFileError]]:
    """Each file's errors: its own (read, parse, validation), then the rules across files it breaks."""
    errors: dict[str, list[CatalogFileError]] = {path: list(f.errors) for path, f in read.items() if f.errors}
    for path, found in locate_problems(root, verdict).items():
        errors.setdefault(path, []).extend(found)
    return {path: list({str(error): error for error in found}.values()) for path, found in errors.items()}


def _plan_changes(plan: Plan, selection: _Selection, read: dict[str, LoadedFile], applied: dict[str, dict],
                  keepers: Keepers) -> None:
    """Creates and updates from the records applied now; removals of what no file defines or keeps any
    more; the new path of what a document keeps that moved within its file."""
    index = selection.index
    targets = {"service": plan.service_records, "check": plan.check_records,
               **{kind: plan.definition_records for kind in DEFINITION_KINDS}}
    defined: dict[str, set[str]] = {kind: set() for kind in targets}
    for path, record in applied.items():  # in path order, as read
        kind = read[path].kind
        defined[kind].add(record["slug"])
        current = index.row(kind, record["slug"])
        if current is None or current["removed_at"] is not None:
            plan.changes.append(Change(kind, record["slug"], "create", path))
        elif current["digest"] != record["digest"] or current["path"] != path:
            fields = (["definition"] if current["digest"] != record["digest"] else []) + (
                ["path"] if current["path"] != path else [])
            plan.changes.append(Change(kind, record["slug"], "update", path, fields))
        else:
            continue
        targets[kind].append(record)
    for kind, slug, current in _removal_candidates(selection, read):
        if slug in defined[kind] or current["removed_at"] is not None:
            continue
        keeper = keepers.keeper(kind, slug)
        if keeper is None:
            plan.changes.append(Change(kind, slug, "remove", current["path"]))
        elif keeper != current["path"]:  # a broken document that moved in its file keeps it there
            plan.changes.append(Change(kind, slug, "update", keeper, ["path"]))
            plan.moved[(kind, slug)] = keeper
    plan.active_before = {kind: index.active(kind) for kind in ("service", "check", *DEFINITION_KINDS)}
    plan.unchanged = sum(plan.active_before.values()) - plan.count("update") - plan.count("remove")


def _removal_candidates(selection: _Selection, read: dict[str, LoadedFile]) -> Iterator[tuple[str, str, dict]]:
    """The stored entities a sync may remove: every one after a full read; else those of the files
    it read or found deleted (the others' files did not change)."""
    index = selection.index
    if index.is_whole:
        for kind, rows in (("service", index.every_service()), ("check", index.checks)):
            for slug, row in sorted(rows.items()):
                yield kind, slug, row
        for (kind, slug), row in sorted(index.definitions.items()):
            yield kind, slug, row
        return
    seen = set()
    for path in sorted({*read, *selection.deleted}):
        row = index.files.get(path)
        if row and row["slug"] and row["kind"] != "catalog" and (row["kind"], row["slug"]) not in seen:
            seen.add((row["kind"], row["slug"]))
            current = index.row(row["kind"], row["slug"])
            if current is not None and current["path"] == path:
                yield row["kind"], row["slug"], current


def _read_or_blamed(read: dict[str, LoadedFile], file_errors: dict) -> list[str]:
    """The files read now, in path order, then those blamed although not read now."""
    return [*read, *sorted(path for path in file_errors if path not in read)]


def _owner_after(keepers: Keepers, path: str, problems: dict[str, list[Problem]]) -> tuple[str, str] | None:
    """The (kind, slug) a file or document that does not apply now defines after the sync: the last
    good state it keeps (`last_good`), if any."""
    return keepers.kept_by(path) or next(
        (problem.entity for problem in problems.get(path, ()) if problem.entity and keepers.keeper(*problem.entity) == path), None)


def _plan_error_marks(plan: Plan, index: CatalogIndex, read: dict[str, LoadedFile], applied: dict,
                      file_errors: dict[str, list[CatalogFileError]], owners: dict[str, tuple[str, str] | None]) -> None:
    """Each entity carries its own file's first error, or none: only the marks that change are written.
    `owners`: what each file read or blamed now that does not apply keeps (`_owner_after`)."""
    for path in _read_or_blamed(read, file_errors):
        record = applied.get(path)
        if record is not None:  # most files, a first sync's 100,000: applied now, so without an error
            current = index.row(read[path].kind, record["slug"])
            if current is not None and current["error"] is not None:
                plan.entity_errors[(read[path].kind, record["slug"])] = None
            continue
        key = owners[path]
        if key is None or key[0] == "catalog":
            continue  # a newcomer that duplicates a slug keeps nothing: it does not mark the incumbent
        current = index.row(*key)
        errors = file_errors.get(path)
        error = str(errors[0]) if errors else None
        if current["error"] != error:
            plan.entity_errors[key] = error


def _plan_file_rows(plan: Plan, index: CatalogIndex, read: dict[str, LoadedFile], applied: dict,
                    file_errors: dict[str, list[CatalogFileError]], owners: dict[str, tuple[str, str] | None]) -> None:
    """The catalog_files row of every file read now or blamed now: what it defines and its error."""
    for path in _read_or_blamed(read, file_errors):
        record = applied.get(path)
        if record is not None:  # most files, a first sync's 100,000: applied now, so without an error
            loaded = read[path]
            plan.files.append(FileRow(path, loaded.kind, record["slug"], loaded.digest, None))
            continue
        loaded, row = read.get(path), index.files.get(path)
        key = owners[path]
        errors = file_errors.get(path)
        plan.files.append(FileRow(
            path,
            loaded.kind if loaded else row["kind"] if row else key[0],  # type: ignore[index]
            key[1] if key else None,
            loaded.digest if loaded else row["digest"] if row else "",
            errors[0].as_dict() if errors else None,
        ))


def mass_removal_refusal(plan: Plan) -> str | None:
    """Why applying the plan would be refused without --allow-mass-removal, or None.

    Every kind counts: a wrong `writeback.path` or branch can empty checks/ or waivers/ as easily as
    services/. Removing one entity is never a mass removal: deleting the waiver that ended is routine.
    """
    for kind, before in plan.active_before.items():
        removing = plan.removing(kind)
        if removing > 1 and (removing == before or removing * 2 > before):
            return (
                f"refusing to remove {removing} of {before} {kind}s in one sync"
                " (all, or more than half); check the repository and branch, or pass --allow-mass-removal"
            )
    return None


def apply_plan(
    store: Database, plan: Plan, *, now, started: float, started_at=None, allow_mass_removal: bool = False
) -> dict:
    refusal = mass_removal_refusal(plan)
    if refusal and not allow_mass_removal:
        raise SyncRefused(refusal)
    outcome_errors = [e.as_dict() for e in plan.errors]
    return store.catalog.apply(
        now=now,
        services=plan.service_records,
        checks=plan.check_records,
        removed_services=[c.slug for c in plan.changes if c.kind == "service" and c.action == "remove"],
        removed_checks=[c.slug for c in plan.changes if c.kind == "check" and c.action == "remove"],
        definitions=plan.definition_records,
        removed_definitions=[(c.kind, c.slug) for c in plan.changes if c.kind in DEFINITION_KINDS and c.action == "remove"],
        entity_errors=plan.entity_errors,
        moved=plan.moved,
        files=plan.files,
        deleted_files=plan.deleted_files,
        state={"applied_revision": plan.revision, "catalog_config": plan.config},
        expected_revision=plan.previous_revision,
        sync_run=_run_row(plan, "applied", now, started, plan.revision, outcome_errors, None, started_at),
    )


def sync(store: Database, source: Source, *, clock: Clock | None = None, allow_mass_removal: bool = False,
         progress: Callable[[str, int], Progress] | None = None) -> SyncReport:
    """Fetch, plan and apply; one sync at a time per store. Raises on refusal and source errors."""
    clock = clock or Clock()
    lock = _lock_for(store)
    with lock:
        started, started_at = time.perf_counter(), clock.now()
        previous = store.state.get("applied_revision")
        try:
            plan = make_plan(store, source, progress=progress)
        except CatalogError as error:
            _record_failure(store, clock, started, started_at, previous, None, "failed", str(error))
            raise
        if plan.same_revision:
            store.state.set({"last_sync_check": {"at": format_time(clock.now()), "revision": plan.revision}})
            _record_recovery(store, plan, clock, started, started_at)
            return SyncReport("unchanged", plan.revision, previous, plan, _ms(started))
        try:
            # one transaction: the levels the sync changed, and their level-changed events, commit with it
            with store.transaction():
                run = apply_plan(
                    store, plan, now=clock.now(), started=started, started_at=started_at,
                    allow_mass_removal=allow_mass_removal,
                )
                store.state.set({"last_sync_check": {"at": format_time(clock.now()), "revision": plan.revision}})
                # definitions, checks or catalog.yaml changed: every level; else only the changed services'
                only_services = [c.slug for c in plan.changes] if all(c.kind == "service" for c in plan.changes) else None
                level_changes = scorecards.evaluate_all(store, clock.now(), services=only_services)
        except SyncRefused as error:
            _record_failure(store, clock, started, started_at, previous, plan.revision, "refused", str(error), plan)
            raise
        except Conflict:
            if store.state.get("applied_revision") == plan.revision:
                # another process (a cron `catalog sync` beside `serve`'s webhook) applied this very revision
                # while this one planned it: nothing left to do ("plan again" and exit 1 said otherwise)
                return SyncReport("unchanged", plan.revision, previous, plan, _ms(started))
            raise
        return SyncReport("applied", plan.revision, previous, plan, run["duration_ms"], run=run,
                          level_changes=level_changes)


def _record_recovery(store, plan, clock, started, started_at) -> None:
    """A sync that found its revision applied is not recorded (one row per poll), unless the last
    recorded run failed: the `unchanged` run then says the source is reachable again (status,
    /api/sync and catalog_sync_last_outcome showed `failed` until the next commit)."""
    runs = store.catalog.sync_runs(limit=1)
    if runs and runs[0]["outcome"] == "failed":
        store.catalog.record_sync_run(_run_row(plan, "unchanged", clock.now(), started, plan.revision, [], None, started_at))


def _record_failure(store, clock, started, started_at, previous, attempted, outcome, message, plan=None) -> None:
    errors = [e.as_dict() for e in plan.errors] if plan else []
    row = _run_row(plan, outcome, clock.now(), started, previous, errors, message, started_at)
    # nothing was applied: a refused sync's counts said "17 removed" of a catalog it left whole (its
    # message says what it would have removed)
    row.update(previous_revision=previous, attempted_revision=attempted, applied_revision=previous,
               created=0, updated=0, removed=0)
    store.catalog.record_sync_run(row)


def _run_row(plan, outcome: str, now, started: float, applied, errors: list, message, started_at=None) -> dict:
    duration = _ms(started)
    finished = format_time(now)
    return {
        "started_at": format_time(started_at) if started_at else finished,
        "finished_at": finished,
        "duration_ms": duration,
        "outcome": outcome,
        "previous_revision": plan.previous_revision if plan else None,
        "attempted_revision": plan.revision if plan else None,
        "applied_revision": applied,
        "created": plan.count("create") if plan else 0,
        "updated": plan.count("update") if plan else 0,
        "removed": plan.count("remove") if plan else 0,
        "unchanged": plan.unchanged if plan else 0,
        "errors": errors,
        "message": message,
    }


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector, for a one-shot process that only syncs (`catalog sync`).

    gc.disable is process-wide, so `sync` never pauses it itself: in `catalog up` it would stop
    collection for the API's threads too. bench/bench_sync.py's cold sync, run as the CLI runs it,
    shows what it buys: the collector's passes over the sync's 10,000s of acyclic objects.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _lock_for(store: Database) -> threading.Lock:
    with _SYNC_LOCKS_GUARD:
        return _SYNC_LOCKS.setdefault(store.key, threading.Lock())
