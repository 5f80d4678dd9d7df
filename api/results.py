"""Results: the Action's PATCH that records an answer once and forever, and result reads."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Annotated
from urllib.parse import urlencode, urlsplit

from litestar import Controller, MediaType, Request, get, patch
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter

from api.auth import SECURITY, requires_read, requires_scope
from api.body import read_fields
from api.models import (
    MAX_MESSAGE_BYTES,
    MAX_URL_LENGTH,
    AnswerOperation,
    ResultOut,
    ResultPage,
    error_responses,
)
from reconciler.clock import format_time
from reconciler.errors import InvalidInput
from reconciler.store import RESULT_VALUES

STATUSES = ("pending", "sent", "completed", "timed-out", "error")
ANSWER_FIELDS = ("result", "message", "url")


def parse_answer(fields: dict) -> tuple[str, str | None, str | None]:
    """(result, message, url) from a PATCH body, or InvalidInput saying what is wrong."""
    result = fields.get("result")
    if result is None:
        raise InvalidInput(f"'result' is required: one of {', '.join(RESULT_VALUES)}")
    if not isinstance(result, str) or result.strip().lower() not in RESULT_VALUES:
        raise InvalidInput(f"'result' must be one of {', '.join(RESULT_VALUES)}, not {result!r}")
    message = fields.get("message")
    if message is not None:
        if not isinstance(message, str):
            raise InvalidInput("'message' must be text")
        size = len(message.encode("utf-8", "surrogatepass"))
        if size > MAX_MESSAGE_BYTES:
            raise InvalidInput(f"'message' is {size} bytes; at most {MAX_MESSAGE_BYTES} bytes (64 KiB) are kept")
    url = fields.get("url")
    if url is not None:
        if not isinstance(url, str) or len(url) > MAX_URL_LENGTH:
            raise InvalidInput(f"'url' must be text of at most {MAX_URL_LENGTH} characters")
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise InvalidInput(f"'url' must be an http(s) link to the run, not {url[:100]!r}")
    return result.strip().lower(), message or None, url or None


def parse_since(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise InvalidInput(f"'since' must be an ISO 8601 time such as 2026-01-05T12:00:00Z, not {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return format_time(moment)


class ResultController(Controller):
    path = "/api/results"
    tags = ["results"]
    security = SECURITY

    @patch(
        ["/{result_id:int}", "/{result_id:int}/"],
        guards=[requires_scope("results:write")],
        summary="Record the answer of a check run (once; a finished result never changes)",
        description=(
            "JSON or form body with `result` (pass, warning, fail, error, skipped), optional `message` "
            "(at most 64 KiB) and `url`. A pending or sent result becomes completed; any other answers 409."
        ),
        operation_class=AnswerOperation,
        responses=error_responses(401, 403, 404, 409, 413, 415, 422),
        media_type=MediaType.JSON,
    )
    async def complete_result(self, request: Request, state: State, result_id: FromPath[int]) -> ResultOut:
        result, message, url = parse_answer(await read_fields(request, ANSWER_FIELDS))
        store = state.store
        now = state.clock.now()

        def record() -> dict:
            row = store.complete_result(result_id, result, now=now, message=message, url=url)
            row.update(store.result_slugs(row["check_id"], row["service_id"]))
            return row

        # On the one writer thread: off the event loop (a sync may hold the database for a while), and
        # one writer at a time, so concurrent answers queue here instead of in SQLite's busy-wait sleeps.
        return await asyncio.get_running_loop().run_in_executor(state.writer, record)

    @get("/", guards=[requires_read], summary="Results, newest first, filtered; follow `next` for more",
         responses=error_responses(401, 403, 422), sync_to_thread=True)
    def list_results(
        self,
        request: Request,
        state: State,
        service: Annotated[str | None, QueryParameter(description="service slug")] = None,
        check: Annotated[str | None, QueryParameter(description="check slug")] = None,
        result: Annotated[str | None, QueryParameter(enum=["unknown", *RESULT_VALUES])] = None,
        status: Annotated[str | None, QueryParameter(enum=list(STATUSES))] = None,
        since: Annotated[str | None, QueryParameter(description="created at or after this ISO 8601 time")] = None,
        cursor: Annotated[int | None, QueryParameter(ge=1, description="from the `next` link: results before this id")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000, description="page size")] = 100,
    ) -> ResultPage:
        if result is not None and result not in ("unknown", *RESULT_VALUES):
            raise InvalidInput(f"'result' filter must be one of unknown, {', '.join(RESULT_VALUES)}, not {result!r}")
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"'status' filter must be one of {', '.join(STATUSES)}, not {status!r}")
        rows = state.store.list_results(service=service, check=check, result=result, status=status,
                                        since=parse_since(since), before_id=cursor, limit=limit)
        next_link = None
        if len(rows) == limit:
            query = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
            next_link = f"{request.url.path}?{urlencode(query + [('cursor', rows[-1]['id'])])}"
        return {"results": rows, "next": next_link}

    @get("/{result_id:int}", guards=[requires_read], summary="One result",
         responses=error_responses(401, 403, 404), sync_to_thread=False)
    def get_result(self, state: State, result_id: FromPath[int]) -> ResultOut:
        return state.store.read_result(result_id)
