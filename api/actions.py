"""Actions: run a check now, sync (start one, see the last), and GitHub's push webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Annotated
from urllib.parse import parse_qsl

import anyio.to_thread
from litestar import Controller, MediaType, Request, Response
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter

from api.auth import SECURITY, NotAuthenticated, requires_read, requires_scope
from api.body import read_fields
from api.models import Accepted, RunOperation, RunOut, SyncStatus, WebhookOperation, error_responses
from api.routing import get, post
from reconciler.clock import format_time
from reconciler.errors import ConfigError, InvalidInput
from reconciler.payload import hosted_name

log = logging.getLogger("catalog.api")


class ActionController(Controller):
    tags = ["actions"]
    security = SECURITY

    @post("/api/checks/{slug:str}/run", guards=[requires_scope("checks:run")], status_code=201,
          summary="Dispatch a check now (ad-hoc), on all its services or on one",
          operation_class=RunOperation, responses=error_responses(401, 403, 404, 409, 415, 422, 502))
    async def run_check(
        self, request: Request, state: State, slug: FromPath[str],
        service: Annotated[str | None, QueryParameter(description="run on this service only (or name it in the body)")] = None,
    ) -> RunOut:
        fields = await read_fields(request, ("service",), required=False)
        body_service = fields.get("service")
        if body_service is not None and not isinstance(body_service, str):
            raise InvalidInput("'service' must be a service slug")
        if service and body_service and service != body_service:
            raise InvalidInput(f"two different services given: {service!r} (query) and {body_service!r} (body)")
        rows = await anyio.to_thread.run_sync(state.check_runner, slug, service or body_service or None)
        return {"results": list(rows)}



class SyncController(Controller):
    """GET and POST share a path, so they share a controller (Litestar registers one route per path)."""

    path = "/api/sync"
    tags = ["sync"]
    security = SECURITY

    @get("/", guards=[requires_read], sync_to_thread=True, responses=error_responses(401, 403),
         summary="The last sync: revisions, time, counts and per-file errors (null before the first sync)")
    def get_sync(self, state: State) -> SyncStatus:
        return {"last_run": state.store.catalog.last_sync_run()}

    @post("/", guards=[requires_scope("sync")], status_code=202, sync_to_thread=False,
          summary="Start a sync of the catalog repository in the background; GET /api/sync shows its outcome",
          responses=error_responses(401, 403))
    def start_sync(self, state: State) -> Accepted:
        state.sync_trigger()
        return {"status": "started", "note": "the sync runs in the background; GET /api/sync shows the last run"}


@post("/webhooks/github", tags=["actions"], status_code=202, media_type=MediaType.JSON,
      summary="GitHub webhook: a push to the catalog branch starts a sync (HMAC-verified, answered at once)",
      description="Authenticated by `X-Hub-Signature-256` (HMAC-SHA256 of the body with CATALOG_WEBHOOK_SECRET), "
                  "not by a token. `ping` answers 200; `push` 202 and syncs in the background; other events, and "
                  "pushes to other branches or to another repository than CATALOG_REPO, are ignored (202); a "
                  "delivery seen before (by `X-GitHub-Delivery` or by its body) is ignored; "
                  "a signed push payload that is not usable (not JSON, no `ref`) is a 422.",
      operation_class=WebhookOperation, responses=error_responses(401, 422, 503))
async def webhook_github(request: Request, state: State) -> Response[Accepted]:
    secret = state.settings.webhook_secret
    if not secret:
        raise ConfigError("webhooks are disabled: the server has no CATALOG_WEBHOOK_SECRET configured")
    body = await request.body()
    signature = request.headers.get("x-hub-signature-256", "")
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not signature or not hmac.compare_digest(signature.encode(), expected.encode()):
        raise NotAuthenticated("bad or missing X-Hub-Signature-256: it must be sha256=HMAC-SHA256(body, webhook secret)")
    event = request.headers.get("x-github-event", "")
    delivery = request.headers.get("x-github-delivery", "")
    if event == "ping":
        return _answer(200, "pong", "webhook configured")
    if event != "push":
        return _answer(202, "ignored", f"event {event or '(none)'!r} is not acted on; only push is")
    ref, default_branch, pushed_to = _push_fields(_payload(body, request.headers.get("content-type", "")))
    ours = hosted_name(state.settings.repo)
    if ours and pushed_to and pushed_to.lower() != ours:
        # An organisation's webhook sends every repository's pushes: only the catalog's start a sync.
        return _answer(202, "ignored", f"push to repository {pushed_to}; this catalog syncs {ours}")
    branch = state.settings.branch or default_branch
    if branch and ref != f"refs/heads/{branch}":
        # Pushes to other branches (the write-back branch among them) never trigger a sync.
        return _answer(202, "ignored", f"push to {ref!r}; only refs/heads/{branch} is synced")
    if not await _first_delivery(state, delivery, body):
        return _answer(202, "ignored", f"delivery {delivery or '(no id)'} was already received")
    state.sync_trigger()
    log.info("push to %s (delivery %s): sync started", ref, delivery or "-")
    return _answer(202, "started", f"push to {ref}: sync started in the background")


def _payload(body: bytes, content_type: str) -> dict:
    """GitHub sends JSON, or a form with the JSON in `payload` when so configured."""
    try:
        if content_type.startswith("application/x-www-form-urlencoded"):
            body = dict(parse_qsl(body.decode())).get("payload", "").encode()
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the push payload is not valid JSON") from None
    if not isinstance(payload, dict):
        raise InvalidInput("the push payload must be a JSON object")
    return payload


def _push_fields(payload: dict) -> tuple[str, str | None, str | None]:
    """(ref, the repository's default branch, its full_name) of a push payload, or InvalidInput naming
    what is wrong."""
    ref = payload.get("ref")
    if not isinstance(ref, str):
        raise InvalidInput("the push payload has no 'ref' string (such as refs/heads/main)")
    repository = payload.get("repository")
    if repository is None:
        return ref, None, None
    if not isinstance(repository, dict):
        raise InvalidInput("the push payload's 'repository' must be an object")
    default_branch, full_name = repository.get("default_branch"), repository.get("full_name")
    for name, value in (("default_branch", default_branch), ("full_name", full_name)):
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"the push payload's 'repository.{name}' must be a string")
    return ref, default_branch, full_name


async def _first_delivery(state: State, delivery: str, body: bytes) -> bool:
    """False for a delivery seen before, by its X-GitHub-Delivery id or by its body.

    The signature covers the body only: a captured delivery replayed under a new id is still the
    same body, so the body's digest is recorded as a second key.
    """
    received_at = format_time(state.clock.now())
    keys = [delivery] if delivery else []
    keys.append("sha256:" + hashlib.sha256(body).hexdigest())
    fresh = [await anyio.to_thread.run_sync(state.store.catalog.record_webhook_delivery, key, received_at) for key in keys]
    return all(fresh)


def _answer(status: int, outcome: str, note: str) -> Response[Accepted]:
    return Response({"status": outcome, "note": note}, status_code=status, media_type=MediaType.JSON)
