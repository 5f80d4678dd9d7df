"""Reconcile: turn the catalog files at a revision into a plan, and apply it in one transaction.

The rules (DESIGN.md section 3): identity is the slug; a bad file keeps its entities at their last
good state and removes nothing; removal is soft; a sync that would remove all or more than half of
the services is refused unless allowed; the same revision twice is no work; a new revision re-reads
only the changed paths (plus files that had errors), everything when the old revision is unknown.
"""

from __future__ import annotations

import gc
import hashlib
import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .clock import Clock, format_time
from .errors import CatalogError, CatalogFileError, Conflict, SyncRefused
from .gitsource import Source
from .integrity import Entities, Focus, find_integrity_errors
from .loader import CATALOG_FILE, LoadedFile, kind_of, list_catalog_files, read_file, read_files
from .schema import CatalogConfig, Check, Service, parse_duration
from .store import Store

_SYNC_LOCKS: dict[str, threading.Lock] = {}
_SYNC_LOCKS_GUARD = threading.Lock()


@dataclass
class Change:
    kind: str  # service | check
    slug: str
    action: str  # create | update | remove
    path: str
    fields: list[str] = field(default_factory=list)  # for updates: what changed

    def __str__(self) -> str:
        sign = {"create": "+", "update": "~", "remove": "-"}[self.action]
        detail = f" ({', '.join(self.fields)})" if self.fields else ""
        return f"{sign} {self.kind} {self.slug}  [{self.path}]{detail}"


@dataclass
class Plan:
    """What applying a revision would do; `apply` needs nothing else."""

    previous_revision: str | None
    revision: str
    changes: list[Change] = field(default_factory=list)
    unchanged: int = 0
    errors: list[CatalogFileError] = field(default_factory=list)
    same_revision: bool = False
    # what apply writes
    service_records: list[dict] = field(default_factory=list)
    check_records: list[dict] = field(default_factory=list)
    entity_errors: dict[tuple[str, str], str | None] = field(default_factory=dict)
    files: list[dict] = field(default_factory=list)
    deleted_files: list[str] = field(default_factory=list)
    config: dict | None = None
    active_before: dict[str, int] = field(default_factory=dict)  # kind -> entities not removed before

    def count(self, action: str) -> int:
        return sum(1 for change in self.changes if change.action == action)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def removing(self, kind: str) -> int:
        return sum(1 for c in self.changes if c.kind == kind and c.action == "remove")


@dataclass
class SyncReport:
    outcome: str  # applied | unchanged | refused | failed
    revision: str | None
    previous_revision: str | None
    plan: Plan | None
    duration_ms: float
    message: str | None = None
    run: dict | None = None

    @property
    def errors(self) -> list[CatalogFileError]:
        return self.plan.errors if self.plan else []


def make_plan(store: Store, source: Source, *, revision: str | None = None) -> Plan:
    """Fetch the source and compare it with the store."""
    revision = revision or source.fetch()
    previous = store.get_state("applied_revision")
    plan = Plan(previous_revision=previous, revision=revision)
    if previous == revision:
        plan.same_revision = True
        return plan
    root = source.root
    old_config = CatalogConfig.model_validate(store.get_state("catalog_config") or {})
    ignored = old_config.writeback.path
    known = store.catalog_files()
    services, checks = store.service_index(decode=False), store.check_index()  # dependencies: JSON text

    changed = source.changed_paths(previous, revision) if previous else None
    if changed is None:
        present = list_catalog_files(root, ignored)
        present_set = set(present)
        candidates = present
        deleted = sorted(path for path in known if path not in present_set)
    else:
        relevant = sorted(path for path in changed if kind_of(path, ignored))
        candidates = [path for path in relevant if (root / path).exists() or (root / path).is_symlink()]
        deleted = [path for path in relevant if path not in candidates and path in known]
        # files with an error are read again: a fix elsewhere (a new dependency) may cure them
        candidates += [path for path, row in known.items() if row["error"] and path not in relevant]

    loaded: dict[str, LoadedFile] = {}
    for loaded_file in read_files(root, candidates, summarize=_service_record):
        path = loaded_file.path
        previous_file = known.get(path)
        if previous_file and not previous_file["error"] and loaded_file.digest == previous_file["digest"]:
            continue  # same bytes as the last good read: nothing to do
        loaded[path] = loaded_file

    # catalog.yaml first: its defaults shape every check
    config = old_config
    config_file = loaded.get(CATALOG_FILE)
    if config_file is not None and config_file.ok:
        config = config_file.model  # type: ignore[assignment]
    elif CATALOG_FILE in deleted:
        config = CatalogConfig()
    defaults_changed = config.defaults != old_config.defaults
    if defaults_changed:
        for path, row in known.items():
            if row["kind"] == "check" and path not in loaded and path not in deleted:
                loaded[path] = read_file(root, path)
    plan.config = config.model_dump(mode="json")

    # which file defines which slug after this revision; a bad file keeps its last good slug
    defines: dict[str, tuple[str, str]] = {
        path: (row["kind"], row["slug"]) for path, row in known.items() if row["slug"] and path not in deleted
    }
    records: dict[str, dict] = {}  # path -> store record, for good files read now
    file_errors: dict[str, list[CatalogFileError]] = {}
    for path, loaded_file in loaded.items():
        if loaded_file.kind == "catalog":
            if loaded_file.errors:
                file_errors[path] = loaded_file.errors
            continue
        if not loaded_file.ok:
            file_errors[path] = loaded_file.errors
            continue
        records[path] = record = _record(loaded_file, config)
        defines[path] = (loaded_file.kind, record["slug"])

    # cross-file rules until nothing more changes: a changed file that breaks them is a bad file
    # (back to its last good state), which can in turn break another changed file. After a git
    # diff only what the changed files can affect is checked; a full read checks everything.
    focus = None
    if changed is not None:
        former = {known[path]["slug"] for path in (*loaded, *deleted) if path in known and known[path]["kind"] == "service"}
        focus = Focus(set(loaded), {slug for slug in former if slug})
    while True:
        entities = Entities.build(services, checks, defines, records)
        found = find_integrity_errors(root, entities, changed_paths=set(loaded), focus=focus)
        newly_bad = [path for path in found if path in records]
        if not newly_bad:
            break
        for path in newly_bad:
            file_errors.setdefault(path, []).extend(found[path])
            records.pop(path)
            if known.get(path, {}).get("slug"):
                defines[path] = (known[path]["kind"], known[path]["slug"])
            else:
                defines.pop(path, None)
    for path, errors in found.items():
        file_errors.setdefault(path, []).extend(errors)
    for path, errors in file_errors.items():
        file_errors[path] = list({str(error): error for error in errors}.values())

    _plan_changes(plan, services, checks, defines, records)
    plan.active_before = {
        "service": sum(1 for row in services.values() if row["removed_at"] is None),
        "check": sum(1 for row in checks.values() if row["removed_at"] is None),
    }

    # entity error marks (only those that change: a one-file sync must not touch 10,000 rows)
    owners: dict[tuple[str, str], tuple[int, str]] = {}
    marked = None  # after a git diff: only entities a changed file defines or defined, or marked now
    if focus is not None:
        marked = {key for path in (*loaded, *file_errors) if (key := defines.get(path))}
        marked.update((known[path]["kind"], known[path]["slug"]) for path in (*loaded, *deleted) if path in known)
        marked.update(("service", slug) for slug, row in services.items() if row["error"] is not None)
        marked.update(("check", slug) for slug, row in checks.items() if row["error"] is not None)
    for path, key in defines.items():
        if marked is not None and key not in marked:
            continue
        current = (services if key[0] == "service" else checks).get(key[1])
        # the entity's error is its own file's: a newcomer duplicating its slug does not mark it
        rank = 0 if path in records else 1 if current and current["path"] == path else 2
        if key not in owners or rank < owners[key][0]:
            owners[key] = (rank, path)
    for (kind, slug), (rank, path) in owners.items():
        errors = file_errors.get(path)
        error = str(errors[0]) if errors else None
        current = (services if kind == "service" else checks).get(slug)
        if current is not None and (current["error"] != error or (rank == 0 and error)):
            plan.entity_errors[(kind, slug)] = error
    for path in set(loaded) | set(file_errors):
        loaded_file = loaded.get(path)
        kind_slug = defines.get(path)
        digest = loaded_file.digest if loaded_file else known[path]["digest"]
        errors = file_errors.get(path)
        plan.files.append({
            "path": path,
            "kind": loaded_file.kind if loaded_file else known[path]["kind"],
            "slug": kind_slug[1] if kind_slug else None,
            "digest": digest,
            "error": errors[0].as_dict() if errors else None,
        })
    plan.deleted_files = deleted
    plan.errors = sorted((e for errs in file_errors.values() for e in errs), key=lambda e: str(e.location))
    return plan


def _plan_changes(plan: Plan, services: dict, checks: dict, defines: dict, records: dict) -> None:
    wanted: dict[str, dict[str, str]] = {"service": {}, "check": {}}
    for path, (kind, slug) in sorted(defines.items()):
        if path in records or slug not in wanted[kind]:
            wanted[kind][slug] = path
    for kind, index, target in (("service", services, plan.service_records), ("check", checks, plan.check_records)):
        for slug, path in sorted(wanted[kind].items()):
            record = records.get(path)
            current = index.get(slug)
            if record is None:
                if current is None or current["removed_at"] is not None:
                    continue  # defined only by a bad file that never had a good state
                plan.unchanged += 1
                continue
            if current is None or current["removed_at"] is not None:
                plan.changes.append(Change(kind, slug, "create", record["path"]))
                target.append(record)
            elif current["digest"] != record["digest"] or current["path"] != record["path"]:
                fields = ["path"] if current["path"] != record["path"] else []
                if current["digest"] != record["digest"]:
                    fields.insert(0, "definition")
                plan.changes.append(Change(kind, slug, "update", record["path"], fields))
                target.append(record)
            else:
                plan.unchanged += 1
        for slug, current in sorted(index.items()):
            if current["removed_at"] is None and slug not in wanted[kind]:
                plan.changes.append(Change(kind, slug, "remove", current["path"]))


def mass_removal_refusal(plan: Plan) -> str | None:
    """Why applying the plan would be refused without --allow-mass-removal, or None.

    Every kind counts: a wrong `writeback.path` or branch can empty checks/ as easily as services/.
    """
    for kind, before in plan.active_before.items():
        removing = plan.removing(kind)
        if removing and (removing == before or removing * 2 > before):
            return (
                f"refusing to remove {removing} of {before} {kind}s in one sync"
                " (all, or more than half); check the repository and branch, or pass --allow-mass-removal"
            )
    return None


def apply_plan(
    store: Store, plan: Plan, *, now, started: float, started_at=None, allow_mass_removal: bool = False
) -> dict:
    refusal = mass_removal_refusal(plan)
    if refusal and not allow_mass_removal:
        raise SyncRefused(refusal)
    outcome_errors = [e.as_dict() for e in plan.errors]
    return store.apply_catalog(
        now=now,
        services=plan.service_records,
        checks=plan.check_records,
        removed_services=[c.slug for c in plan.changes if c.kind == "service" and c.action == "remove"],
        removed_checks=[c.slug for c in plan.changes if c.kind == "check" and c.action == "remove"],
        entity_errors=plan.entity_errors,
        files=plan.files,
        deleted_files=plan.deleted_files,
        state={"applied_revision": plan.revision, "catalog_config": plan.config},
        expected_revision=plan.previous_revision,
        sync_run=_run_row(plan, "applied", now, started, plan.revision, outcome_errors, None, started_at),
    )


def sync(store: Store, source: Source, *, clock: Clock | None = None, allow_mass_removal: bool = False) -> SyncReport:
    """Fetch, plan and apply; one sync at a time per store. Raises on refusal and source errors."""
    clock = clock or Clock()
    lock = _lock_for(store)
    with lock:
        started, started_at = time.perf_counter(), clock.now()
        previous = store.get_state("applied_revision")
        try:
            plan = make_plan(store, source)
        except CatalogError as error:
            _record_failure(store, clock, started, started_at, previous, None, "failed", str(error))
            raise
        if plan.same_revision:
            store.set_state("last_sync_check", {"at": format_time(clock.now()), "revision": plan.revision})
            return SyncReport("unchanged", plan.revision, previous, plan, _ms(started))
        try:
            run = apply_plan(
                store, plan, now=clock.now(), started=started, started_at=started_at,
                allow_mass_removal=allow_mass_removal,
            )
        except SyncRefused as error:
            _record_failure(store, clock, started, started_at, previous, plan.revision, "refused", str(error), plan)
            raise
        except Conflict:
            raise
        store.set_state("last_sync_check", {"at": format_time(clock.now()), "revision": plan.revision})
        return SyncReport("applied", plan.revision, previous, plan, run["duration_ms"], run=run)


def _record_failure(store, clock, started, started_at, previous, attempted, outcome, message, plan=None) -> None:
    errors = [e.as_dict() for e in plan.errors] if plan else []
    row = _run_row(plan, outcome, clock.now(), started, previous, errors, message, started_at)
    row.update(previous_revision=previous, attempted_revision=attempted, applied_revision=previous)
    store.record_sync_run(row)


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


def _lock_for(store: Store) -> threading.Lock:
    with _SYNC_LOCKS_GUARD:
        return _SYNC_LOCKS.setdefault(str(Path(store.path).resolve()) if store.path != ":memory:" else id(store), threading.Lock())


# -- from models to store records ---------------------------------------------------------------


# the same text as json.dumps(value) and json.dumps(value, sort_keys=True), without building an
# encoder per call (json.dumps does whenever it is given an option); records hold no cycles
_to_json = json.JSONEncoder(check_circular=False).encode
_to_sorted_json = json.JSONEncoder(sort_keys=True, check_circular=False).encode


def _record(loaded: LoadedFile, config: CatalogConfig) -> dict:
    """The store record of a valid file read now (a service's may be made already: its summary)."""
    if loaded.summary is not None:
        record = loaded.summary
    elif isinstance(loaded.model, Service):
        record = _service_record(loaded.model)
    else:
        assert isinstance(loaded.model, Check)
        record = _check_record(loaded.model, config)
    record["path"] = loaded.path
    record["error"] = None
    return record


def _service_record(model: Service) -> dict:
    """A service's record without its path; module-level, so that a forked reader can make it."""
    record = {
        "slug": model.identity,
        "name": model.name,
        "priority": model.priority,
        "type": model.type,
        "description": model.description,
        "owner": model.owner,
        "repository": model.repository,
        "active": int(model.active),
        "tags": _to_json(model.tags) if model.tags else "[]",
        "dependencies": _to_json(model.dependencies) if model.dependencies else "[]",
        "meta": _to_sorted_json(model.meta),
    }
    record["digest"] = _digest(record)
    return record


def _check_record(model: Check, config: CatalogConfig) -> dict:
    targets = model.services
    selector = targets if not isinstance(targets, (str, list)) else None
    record = {
        "slug": model.identity,
        "name": model.name,
        "description": model.description,
        "frequency": None if model.schedule else (model.frequency or config.defaults.frequency),
        "schedule": model.schedule,
        "timeout_seconds": int(parse_duration(model.timeout or config.defaults.timeout).total_seconds()),
        "active": int(model.active),
        "repository": model.repository,
        "targets": json.dumps(targets.model_dump(exclude_none=True) if selector else targets),
        "target_kind": "selector" if selector else "list" if isinstance(targets, list) else targets,
        "target_type": selector.type if selector else None,
        "target_owner": selector.owner if selector else None,
        "target_tags": json.dumps(selector.tags) if selector and selector.tags else None,
        "target_max_priority": selector.max_priority if selector else None,
    }
    record["digest"] = _digest(record)
    return record


def _digest(record: dict) -> str:
    """What tells an update from an unchanged definition: a hash of the fields, not of the bytes."""
    return hashlib.sha256(_to_sorted_json(record).encode()).hexdigest()[:32]
