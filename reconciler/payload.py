"""The dispatch payload: the origin project's `repository_dispatch` contract, and the batch payload
of DESIGN.md section 9 (docs/writing-checks.md)."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from urllib.parse import urlparse

from .errors import DispatchError
from .logs import redact_credentials

MAX_EVENT_TYPE = 100
MAX_PAYLOAD_KEYS = 10
MAX_PAYLOAD_BYTES = 64 * 1024
_OWNER_REPO = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*)/([A-Za-z0-9._-]+?)(?:\.git)?$")


@dataclass(frozen=True)
class Payload:
    """One dispatch: what to send, and where (`repository` = the Action's "owner/repo", or None)."""

    result_id: int | None  # None for a batch
    event_type: str
    repository: str | None
    client_payload: dict
    data: dict
    batch_id: int | None = None

    @property
    def label(self) -> str:
        if self.batch_id is not None:
            return f"{self.event_type} batch {self.batch_id} ({self.data['batch']['size']} results)"
        return f"{self.event_type} on {self.client_payload.get('service') or '(no service)'} (result {self.result_id})"

    @property
    def body(self) -> dict:
        return {"event_type": self.event_type, "client_payload": self.client_payload}


def build_payload(
    result: dict,
    check: dict,
    service: dict | None,
    *,
    server_url: str,
    catalog_repository: str | None,
    catalog_config: dict | None,
) -> Payload:
    """The payload of one result row, from its check and service rows (as the store returns them)."""
    repository = action_repository(check, catalog_config)
    data = {
        "server": {"url": server_url, "endpoint": f"/api/results/{result['id']}/"},
        "check": check_object(check, repository),
        "result": result_object(result, check, service),
        "service": service_object(service) if service else None,
        "source": {
            "path": service["path"] if service else None,
            **_source(check, catalog_repository, result),
        },
    }
    encoded = base64.b64encode(json.dumps(data, separators=(",", ":")).encode("utf-8")).decode("ascii")
    client_payload = {
        "data": encoded,
        "check": check["slug"],
        "service": service["slug"] if service else None,
        "repository": service.get("repository") if service else None,
        "server": server_url,
    }
    return Payload(result["id"], check["slug"], repository, client_payload, data)


def build_batch_payload(
    batch_id: int,
    results: list[dict],
    check: dict,
    services: dict[int, dict],
    *,
    server_url: str,
    catalog_repository: str | None,
    catalog_config: dict | None,
) -> Payload:
    """One dispatch for many results of one check (`batch: N`): the list of results goes inline in
    `data` while the payload stays under GitHub's 64 KB, else the Action reads it from
    GET /api/batches/{id} (`catalog answer` does)."""
    repository = action_repository(check, catalog_config)
    client_payload = {
        "data": "",
        "check": check["slug"],
        "service": None,
        "repository": None,
        "server": server_url,
        "batch": {"id": batch_id, "size": len(results)},
    }
    data = {
        "server": {"url": server_url, "endpoint": "/api/results"},
        "check": check_object(check, repository),
        "batch": {"id": batch_id, "size": len(results)},
        "source": _source(check, catalog_repository, results[0] if results else {}),
    }
    # What is left of 64 KB for the list, in bytes of JSON before base64 (which adds a third).
    room = (MAX_PAYLOAD_BYTES - len(json.dumps(client_payload, separators=(",", ":"))) - 8) * 3 // 4
    room -= len(json.dumps(data, separators=(",", ":"))) + len(',"results":[]')
    # A list that cannot fit whatever its values is not built (half a million pairs in batches of
    # 1,000 spent ~1 s encoding items to find out: bench/bench_dispatch.py --part batch).
    inline = [] if len(results) * _SHORTEST_ITEM_BYTES <= room else None
    for item in batch_items(results, check, services) if inline is not None else ():
        room -= len(json.dumps(item, separators=(",", ":"))) + 1
        if room < 0:
            inline = None  # too long: GET /api/batches/{id} has it
            break
        inline.append(item)
    if inline is not None:
        data["batch"]["results"] = inline
    head = json.dumps(data, separators=(",", ":"))
    client_payload["data"] = base64.b64encode(head.encode("utf-8")).decode("ascii")
    return Payload(None, check["slug"], repository, client_payload, data, batch_id=batch_id)


def batch_items(results: list[dict], check: dict, services: dict[int, dict]):
    """Each result of a batch as the Action sees it: {result, service, endpoint} (the PATCH path)."""
    for row in results:
        service = services.get(row["service_id"]) if row["service_id"] is not None else None
        yield {
            "result": result_object(row, check, service),
            "service": service_object(service) if service else None,
            "endpoint": f"/api/results/{row['id']}/",
        }


def batch_listing(store, batch_id: int) -> dict:
    """GET /api/batches/{id}: the list a batch payload carries (or leaves out past 64 KB)."""
    batch, rows = store.dispatch.batch(batch_id)
    check = next(c for c in store.reads.checks(include_removed=True) if c["id"] == batch["check_id"])
    services = store.reads.services_by_id([row["service_id"] for row in rows if row["service_id"] is not None])
    return {"id": batch["id"], "check": check["slug"], "size": len(rows),
            "results": list(batch_items(rows, check, services))}


def action_repository(check: dict, catalog_config: dict | None) -> str | None:
    """Where the check's Action lives: its `repository`, else catalog.yaml's default."""
    defaults = (catalog_config or {}).get("defaults") or {}
    return check.get("repository") or defaults.get("repository")


def _source(check: dict, catalog_repository: str | None, result: dict) -> dict:
    return {
        "check_path": check["path"],
        "repository": redact_credentials(catalog_repository) if catalog_repository else None,  # never a token
        "revision": result.get("revision"),
    }


def check_limits(payload: Payload) -> None:
    """GitHub's limits on `repository_dispatch`, checked before sending: a permanent error if broken."""
    if not 1 <= len(payload.event_type) <= MAX_EVENT_TYPE:
        raise DispatchError(f"event_type {payload.event_type!r} must be 1..{MAX_EVENT_TYPE} characters", transient=False)
    if len(payload.client_payload) > MAX_PAYLOAD_KEYS:
        raise DispatchError(f"client_payload has {len(payload.client_payload)} keys; GitHub allows {MAX_PAYLOAD_KEYS}", transient=False)
    size = len(json.dumps(payload.client_payload, separators=(",", ":")).encode("utf-8"))
    if size > MAX_PAYLOAD_BYTES:
        raise DispatchError(
            f"client_payload is {size} bytes, over GitHub's 64 KB limit;"
            " shorten the description of the check or the service",
            transient=False,
        )


def owner_and_repo(repository: str) -> tuple[str, str]:
    """`acme/checks` or `https://github.com/acme/checks(.git)` -> ("acme", "checks")."""
    text = repository.strip()
    if "://" in text:
        text = urlparse(text).path.strip("/")
    match = _OWNER_REPO.match(text)
    if not match:
        raise DispatchError(f"repository {repository!r} is not \"owner/repo\" or a repository URL", transient=False)
    return match.group(1), match.group(2)


def hosted_name(url: str | None) -> str | None:
    """`owner/repo` (lower case) of a hosted repository URL (`https://github.com/acme/catalog.git`,
    `git@github.com:acme/catalog.git`, `ssh://git@host/acme/catalog`), read as `owner_and_repo` reads
    one and as a push webhook's `repository.full_name` names it; None for a local path or any other shape."""
    text = (url or "").strip()
    if "://" in text:
        parsed = urlparse(text)
        path = "" if parsed.scheme == "file" else parsed.path
    elif "@" in text.partition(":")[0] and ":" in text:  # scp-like: git@github.com:acme/catalog.git
        path = text.partition(":")[2]
    else:
        return None
    match = _OWNER_REPO.match(path.strip("/"))
    return f"{match.group(1)}/{match.group(2)}".lower() if match else None


def check_object(check: dict, repository: str | None) -> dict:
    return {
        "id": check["id"],
        "slug": check["slug"],
        "name": check["name"],
        "description": check.get("description"),
        "frequency": check.get("frequency"),
        "schedule": check.get("schedule"),
        "timeout": check["timeout_seconds"],
        "active": bool(check.get("active", True)),
        "services": check.get("targets"),
        "repository": repository,
    }


def service_object(service: dict) -> dict:
    return {
        "id": service["id"],
        "slug": service["slug"],
        "name": service["name"],
        "priority": service["priority"],
        "type": service.get("type"),
        "description": service.get("description"),
        "owner": service.get("owner"),
        "repository": service.get("repository"),
        "active": bool(service.get("active", True)),
        "tags": service.get("tags", []),
        "dependencies": service.get("dependencies", []),
        "meta": service.get("meta", {}),
    }


def result_object(result: dict, check: dict, service: dict | None) -> dict:
    return {
        "id": result["id"],
        "check": check["slug"],
        "service": service["slug"] if service else None,
        "status": result["status"],
        "result": result["result"],
        "message": result.get("message"),
        "url": result.get("url"),
        "revision": result.get("revision"),
        "trigger": result.get("trigger"),
        "created_at": result["created_at"],
        "sent_at": result.get("sent_at"),
        "finished_at": result.get("finished_at"),
    }


def _shortest(value):
    """`value` with every value that is not an object made one character long."""
    return {key: _shortest(inner) for key, inner in value.items()} if isinstance(value, dict) else 0


# The fewest bytes an item of a batch's list takes in JSON (with its comma): its keys and punctuation,
# each value at least one character (an item without a service has the fewest keys).
_SHORTEST_ITEM_BYTES = len(json.dumps(_shortest(next(batch_items(
    [{"id": 0, "service_id": None, "status": "", "result": "", "created_at": ""}], {"slug": ""}, {}))),
    separators=(",", ":"))) + 1
