"""From a valid service or check model to the record the store writes (the `record` step of a sync)."""

from __future__ import annotations

import hashlib
import json
import sys

from pydantic import BaseModel

from .schema import CatalogConfig, Check, Service, Waiver, parse_duration

# the same text as json.dumps(value) and json.dumps(value, sort_keys=True), without building an
# encoder per call (json.dumps does whenever it is given an option); records hold no cycles
_to_json = json.JSONEncoder(check_circular=False).encode
_to_sorted_json = json.JSONEncoder(sort_keys=True, check_circular=False).encode
# json's own C function for a string's JSON text (ensure_ascii, as json.dumps escapes by default)
_quoted = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def record_of(model: Service | Check, path: str, config: CatalogConfig) -> dict:
    """The store record of a valid file (a check's takes the catalog's defaults)."""
    record = service_record(model) if isinstance(model, Service) else check_record(model, config)
    record["path"] = path
    record["error"] = None
    return record


def service_record(model: Service) -> dict:
    """A service's record, without its path and error."""
    record = {
        "slug": model.identity,
        "name": model.name,
        "priority": model.priority,
        "type": _shared(model.type),
        "description": model.description,
        "owner": _shared(model.owner),
        "repository": model.repository,
        "active": int(model.active),
        "tags": _shared(_text_list(model.tags)) if model.tags else "[]",
        "dependencies": _text_list(model.dependencies) if model.dependencies else "[]",
        "meta": _text_mapping(model.meta) if model.meta else "{}",
    }
    record["digest"] = _service_digest(record)
    return record


def check_record(model: Check, config: CatalogConfig) -> dict:
    """A check's record, without its path and error."""
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
    # batch 1 (the default) stays out of the digest: checks stored before `batch:` existed are unchanged
    record["digest"] = _digest(record)
    record["batch_size"] = model.batch or config.defaults.batch
    if record["batch_size"] != 1:
        record["digest"] = _digest(record)
    return record


def definition_record(model: BaseModel, path: str, waiver_slug: str) -> dict:
    """A scorecard's, waiver's or campaign's record: the whole definition as JSON (few, small files)."""
    body = model.model_dump(mode="json", exclude_none=True)
    record = {
        "kind": type(model).__name__.lower(),
        "slug": waiver_slug if isinstance(model, Waiver) else model.identity,  # type: ignore[attr-defined]
        "body": _to_sorted_json(body),
    }
    record["digest"] = _digest(record)
    record["path"] = path
    record["error"] = None
    return record


def _shared(text: str | None) -> str | None:
    """One object for a value many services repeat (a type, an owner, a set of tags): a first sync
    holds 100,000 records at once."""
    return None if text is None else sys.intern(text)


# A cold sync records 100,000 services: json's encoder, built for any value, cost ~6 of a service
# file's ~11 microseconds of recording (bench/bench_sync.py --services 100000). A service's fields
# are text, whole numbers or None, so their JSON text is written here, character for character what
# json.dumps writes (tests/test_loader.py compares both on awkward values): stored digests do not move.


def _text_list(items: list[str]) -> str:
    """json.dumps of a list of strings."""
    return "[" + ", ".join(map(_quoted, items)) + "]"


def _text_mapping(mapping: dict[str, str]) -> str:
    """json.dumps(mapping, sort_keys=True) of a mapping of strings to strings."""
    return "{" + ", ".join([_quoted(key) + ": " + _quoted(value) for key, value in sorted(mapping.items())]) + "}"


def _text_or_null(value: str | None) -> str:
    return "null" if value is None else _quoted(value)


def _service_digest(record: dict) -> str:
    """`_digest` of a service record: its keys in sorted order, as json.dumps(sort_keys=True) puts them."""
    text = (
        f'{{"active": {int.__repr__(record["active"])}, "dependencies": {_quoted(record["dependencies"])},'
        f' "description": {_text_or_null(record["description"])}, "meta": {_quoted(record["meta"])},'
        f' "name": {_quoted(record["name"])}, "owner": {_text_or_null(record["owner"])},'
        f' "priority": {int.__repr__(record["priority"])}, "repository": {_text_or_null(record["repository"])},'
        f' "slug": {_quoted(record["slug"])}, "tags": {_quoted(record["tags"])},'
        f' "type": {_text_or_null(record["type"])}}}'
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _digest(record: dict) -> str:
    """What tells an update from an unchanged definition: a hash of the fields, not of the bytes."""
    return hashlib.sha256(_to_sorted_json(record).encode()).hexdigest()[:32]
