"""Results: the Action's PATCH that records an answer once and forever, and result reads."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from typing import Annotated
from urllib.parse import urlencode, urlsplit

import msgspec

from litestar import Controller, MediaType, Request
from litestar.response import Stream
from litestar.datastructures import State
from litestar.params import PathParameter, QueryParameter
from litestar.types import ASGIApp

from api.auth import SECURITY, identity_of, requires_answer, requires_read
from api.body import Repeated, UnsupportedMediaType, decode_json, is_json, read_fields
from api.errors import error_body
from api.models import (
    MAX_ID,
    AnswerOperation,
    BulkAnswerOperation,
    BulkAnswerOut,
    CheckFilter,
    ResultFilter,
    ResultOut,
    ResultPage,
    ServiceFilter,
    SinceFilter,
    StatusFilter,
    error_responses,
    given,
)
from api.responses import JSONBytes, ok
from api.routing import get, patch, read
from reconciler.answer_limits import MAX_BULK_ANSWERS, MAX_BULK_BODY_BYTES, MAX_MESSAGE_BYTES, MAX_URL_LENGTH
from reconciler.errors import CatalogError, Conflict, InvalidInput, NotAllowed, NotFound
from reconciler.export import check_filters, csv_chunks, parse_since, result_batches
from reconciler.oidc import OidcIdentity
from reconciler.outcomes import parse_result
from reconciler.store import Database

ANSWER_FIELDS = ("result", "message", "url")
# About SQLite's own autocheckpoint interval (1,000 pages) at the ~6 pages an answer dirties.
CHECKPOINT_EVERY = 200
log = logging.getLogger("catalog.api")


def parse_answer(fields: dict) -> tuple[str, str | None, str | None]:
    """(result, message, url) from a PATCH body, or InvalidInput saying what is wrong."""
    result = parse_result(fields.get("result"))
    message = fields.get("message")
    if message is not None:
        if not isinstance(message, str):
            raise InvalidInput("'message' must be text")
        if "\x00" in message:  # PostgreSQL keeps no NUL in text: refused alike on both backends, before the batch
            raise InvalidInput("'message' must not contain a NUL character (\\u0000)")
        size = len(message.encode("utf-8", "surrogatepass"))
        if size > MAX_MESSAGE_BYTES:
            raise InvalidInput(f"'message' is {size} bytes; at most {MAX_MESSAGE_BYTES} bytes (64 KiB) are kept")
    url = fields.get("url")
    if url is not None:
        if not isinstance(url, str) or len(url) > MAX_URL_LENGTH or "\x00" in url:
            raise InvalidInput(f"'url' must be text of at most {MAX_URL_LENGTH} characters, without NUL")
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise InvalidInput(f"'url' must be an http(s) link to the run, not {url[:100]!r}")
    return result, message or None, url or None


# A result id as documented: the document names the range, the handlers answer 404 past it.
ResultId = Annotated[int, PathParameter(schema_extra={"minimum": 1, "maximum": MAX_ID, "format": "int64"})]


def existing_result_id(result_id: int) -> int:
    """`result_id`, or NotFound for a number no result can have (past MAX_ID, or not positive)."""
    if not 1 <= result_id <= MAX_ID:
        raise NotFound(f"result {result_id} does not exist")
    return result_id


class AnswerWriter:
    """Records answers in batches: those that arrive together share one transaction and one commit.

    A commit (its WAL frames; the triggers' pages) costs more than the UPDATE itself, so under load one
    commit per batch instead of one per answer. The batch runs straight on the event loop: one short
    transaction (no fsync in WAL + synchronous=NORMAL) costs less than a hop to a thread and back. It
    never waits for the write lock: when another connection holds it (a sync applying), the batch waits
    its turn on the one writer thread instead, so the loop never blocks. On PostgreSQL every batch goes
    to the writer thread (a round trip never runs on the loop) and is one UPDATE. Each answer still gets
    its own outcome (row, 404 or 409), and is answered only once its commit is done.
    """

    def __init__(self, store: Database, writer: Executor, checkpointer: Executor):
        self.store = store
        self.writer = writer
        self.checkpointer = checkpointer  # where the WAL is copied back, every CHECKPOINT_EVERY answers
        self._batch: list[tuple[tuple, asyncio.Future]] = []
        self._queued: list[tuple[tuple, asyncio.Future]] = []  # for the writer thread, after the batch it has
        self._writing = False
        self._uncheckpointed = 0
        self._checkpointing = False

    async def answer(self, answer: tuple) -> dict:
        """(result_id, result, message, url, now) -> the completed row with its slugs, or NotFound/Conflict."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._batch:
            loop.call_soon(self._write)  # after the requests already read in this turn of the loop
        self._batch.append((answer, future))
        outcome = await future
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def answer_all(self, answers: list[tuple]) -> list:
        """Many answers at once (a bulk PATCH), through the same batches: each its own outcome, the
        completed row or the NotFound / Conflict that says why it changed nothing. One future for them
        all (a future and a gather callback per answer cost a 1,000-answer bulk ~2 ms on the loop)."""
        future = asyncio.get_running_loop().create_future()
        # Up to 1,000 UPDATEs in one transaction: the writer thread's work, never the event loop's.
        self._queued.append((_Many(answers), future))
        if not self._writing:
            self._hand_to_writer()
        return await future

    def _write(self) -> None:
        batch, self._batch = self._batch, []
        answers = [answer for answer, _ in batch]
        try:
            outcomes = self.store.results.answer(answers, wait=False)
        except Exception as error:
            _settle(batch, error=error)
            return
        if outcomes is not None:
            _settle(batch, outcomes)
            self._after_commit(len(answers))
            return
        # The writer thread's turn. While it commits one batch, the answers arriving meanwhile
        # gather into the next: on PostgreSQL (every batch goes this way) a batch is one round trip
        # of one UPDATE, so the more answers wait together, the fewer round trips per answer.
        self._queued.extend(batch)
        if not self._writing:
            self._hand_to_writer()

    def _hand_to_writer(self) -> None:
        batch, self._queued = self._queued, []
        self._writing = True
        answers = []
        for answer, _ in batch:
            if type(answer) is _Many:
                answers.extend(answer)
            else:
                answers.append(answer)
        waited = asyncio.get_running_loop().run_in_executor(self.writer, self.store.results.answer, answers)
        waited.add_done_callback(lambda done: self._written(batch, done, len(answers)))

    def _written(self, batch: list[tuple[tuple, asyncio.Future]], done: asyncio.Future, answered: int) -> None:
        self._writing = False
        _settle_from(batch, done)
        if self._queued:
            self._hand_to_writer()
        self._after_commit(answered)

    def _after_commit(self, answered: int) -> None:
        """Every so many answers, copy the WAL back on the checkpoint thread: never on the event loop, nor in
        the way of the writer thread's next batch (a bulk answer's commit leaves ~1,100 pages to copy)."""
        self._uncheckpointed += answered
        if self._uncheckpointed >= CHECKPOINT_EVERY and not self._checkpointing:
            self._uncheckpointed, self._checkpointing = 0, True
            done = asyncio.get_running_loop().run_in_executor(self.checkpointer, self.store.results.checkpoint)
            done.add_done_callback(self._checkpointed)

    def _checkpointed(self, done: asyncio.Future) -> None:
        self._checkpointing = False
        if not done.cancelled() and done.exception() is not None:  # a busy database is no reason to fail; the next one will do
            log.warning("WAL checkpoint failed: %s", done.exception())


def _settle_from(batch: list[tuple[tuple, asyncio.Future]], done: asyncio.Future) -> None:
    if done.cancelled():
        _settle(batch, error=asyncio.CancelledError())
    elif done.exception() is not None:
        _settle(batch, error=done.exception())
    else:
        _settle(batch, done.result())


class _Many(list):
    """The answers of one bulk PATCH in a batch, settled together: their future gets the list of outcomes."""

    __slots__ = ()


def _settle(batch: list[tuple[tuple, asyncio.Future]], outcomes: list | None = None, *, error: BaseException | None = None) -> None:
    position = 0
    for answer, future in batch:
        if type(answer) is _Many:
            outcome = outcomes[position:position + len(answer)] if error is None else None
            position += len(answer)
        else:
            outcome = outcomes[position] if error is None else None
            position += 1
        if future.done():  # the client went away and its request was cancelled
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outcome)


def parse_bulk(body: bytes) -> list:
    """The items of a bulk PATCH body, or InvalidInput / 400 for a body that is not one."""
    document = decode_json(body) if body.strip() else None
    if not isinstance(document, dict) or set(document) != {"results"} or not isinstance(document["results"], list):
        raise InvalidInput('the body must be a JSON object {"results": [{"id", "result", "message"?, "url"?}, ...]}')
    if isinstance(document, Repeated):
        raise InvalidInput(f"field {document.repeated!r} is given more than once")
    items = document["results"]
    if len(items) > MAX_BULK_ANSWERS:
        raise InvalidInput(f"{len(items)} answers in one request; at most {MAX_BULK_ANSWERS}, send the rest in another")
    return items


def bulk_item(item: object) -> tuple[int, dict]:
    """(id, answer fields) of one bulk item, or InvalidInput saying what is wrong with it."""
    if not isinstance(item, dict):
        raise InvalidInput('each answer must be an object {"id", "result", "message"?, "url"?}')
    result_id = item.get("id")
    if isinstance(result_id, bool) or not isinstance(result_id, int):
        raise InvalidInput("'id' must be a result id (an integer)")
    unknown = sorted(set(item) - {"id", *ANSWER_FIELDS})
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}; the fields are 'id', 'result', 'message', 'url'")
    if isinstance(item, Repeated):
        raise InvalidInput(f"field {item.repeated!r} is given more than once")
    return result_id, {key: item[key] for key in ANSWER_FIELDS if key in item}


def bulk_error(item: object, error: Exception) -> dict:
    """One item's refusal: 403 (an OIDC token of another repository), 404, 409, or 422."""
    status = (403 if isinstance(error, NotAllowed) else 404 if isinstance(error, NotFound)
              else 409 if isinstance(error, Conflict) else 422)
    result_id = item.get("id") if isinstance(item, dict) else None
    if isinstance(result_id, bool) or not isinstance(result_id, int):
        result_id = None  # not an id: never echoed back as given
    code = error.code if isinstance(error, CatalogError) else None  # `timed_out` for a late answer
    return {"id": result_id, "status": status, "error": error_body(status, str(error), code=code)["error"]}


class ResultController(Controller):
    path = "/api/results"
    tags = ["results"]
    security = SECURITY

    @patch(
        ["/{result_id:int}", "/{result_id:int}/"],
        guards=[requires_answer],
        summary="Record the answer of a check run (once; a finished result never changes)",
        description=(
            "JSON or form body with `result` (pass, warning, fail, error, skipped), optional `message` "
            "(at most 64 KiB) and `url`. A pending or sent result becomes completed; any other answers 409,"
            " as does one whose check's `timeout` has passed (the next scheduler pass times it out)."
            " Authorized by an API token with `results:write`, or by a GitHub Actions OIDC token of the"
            " repository of the result's check (403 for any other), whose claims the result keeps as `attestation`."
        ),
        operation_class=AnswerOperation,
        responses={**ok(ResultOut), **error_responses(401, 403, 404, 409, 413, 415, 422)},
        media_type=MediaType.JSON,
    )
    async def complete_result(self, request: Request, state: State, result_id: ResultId) -> ASGIApp:
        result, message, url = parse_answer(await read_fields(request, ANSWER_FIELDS))
        answer = (existing_result_id(result_id), result, message, url, state.clock.now())
        identity = identity_of(request)
        if isinstance(identity, OidcIdentity):  # the store checks its repository rule and keeps what it attests
            answer += (identity,)
        row = await state.answers.answer(answer)
        return JSONBytes(msgspec.json.encode(row))  # the hot write: no Response object (api.responses)

    @patch(
        ["/", ""],
        guards=[requires_answer],
        summary="Record many answers at once (at most 1,000); each succeeds or fails on its own",
        description=(
            'JSON `{"results": [{"id", "result", "message"?, "url"?}, ...]}`. The answer is 200 with'
            ' `{"results": [{"id", "status": 200|403|404|409|422, "result" | "error"}, ...]}`, in order.'
            " Authorized by an API token with `results:write`, or by a GitHub Actions OIDC token: each item"
            " whose check runs in another repository is then refused with its own 403, and each answered"
            " result keeps the token's claims as `attestation`."
        ),
        operation_class=BulkAnswerOperation,
        responses={**ok(BulkAnswerOut), **error_responses(400, 401, 403, 413, 415, 422)},
        media_type=MediaType.JSON,
        request_max_body_size=MAX_BULK_BODY_BYTES,
    )
    async def complete_results(self, request: Request, state: State) -> ASGIApp:
        if not is_json(request):
            raise UnsupportedMediaType(f"unsupported content type {request.headers.get('content-type')!r}:"
                                       " send the answers as application/json")
        items = parse_bulk(await request.body())
        identity = identity_of(request)
        # the store checks an OIDC token's repository rule per result and keeps what it attests (as for one answer)
        attested = (identity,) if isinstance(identity, OidcIdentity) else ()
        outcomes: list = [None] * len(items)
        valid = []
        now = state.clock.now()  # one time for the request's answers
        for index, item in enumerate(items):
            try:
                result_id, fields = bulk_item(item)
                answer = (existing_result_id(result_id), *parse_answer(fields), now, *attested)
            except (InvalidInput, NotFound) as error:
                outcomes[index] = bulk_error(item, error)
                continue
            valid.append((index, answer))
        answered = await state.answers.answer_all([answer for _, answer in valid]) if valid else []
        for (index, answer), outcome in zip(valid, answered):
            if isinstance(outcome, (NotFound, Conflict, NotAllowed)):  # a batch that failed raised at the await
                outcomes[index] = bulk_error(items[index], outcome)
            else:
                outcomes[index] = {"id": answer[0], "status": 200, "result": outcome}
        return JSONBytes(msgspec.json.encode({"results": outcomes}))

    @get("/", guards=[requires_read], summary="Results, newest first, filtered; follow `next` for more",
         responses=error_responses(401, 403, 422), sync_to_thread=True)
    def list_results(
        self,
        request: Request,
        state: State,
        service: ServiceFilter = None,
        check: CheckFilter = None,
        result: ResultFilter = None,
        status: StatusFilter = None,
        since: SinceFilter = None,
        cursor: Annotated[int | None, QueryParameter(ge=1, le=MAX_ID, description="from the `next` link: results before this id")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000, description="page size")] = 100,
    ) -> ResultPage:
        service, check, result, status, since = given(service, check, result, status, since)
        check_filters(result, status)
        rows = state.store.results.list(service=service, check=check, result=result, status=status,
                                        since=parse_since(since), before_id=cursor, limit=limit)
        next_link = None
        if len(rows) == limit:
            query = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
            next_link = f"{request.url.path}?{urlencode(query + [('cursor', rows[-1]['id'])])}"
        return {"results": rows, "next": next_link}

    @get("/{result_id:int}", guards=[requires_read], summary="One result",
         responses=error_responses(401, 403, 404))
    async def get_result(self, state: State, result_id: ResultId) -> ResultOut:
        return await read(state.store, state.store.results.get, existing_result_id(result_id))


@get("/api/results.csv", guards=[requires_read], tags=["results"], security=SECURITY,
     summary="Results as CSV, oldest first, with the filters of /api/results; streamed, of any size",
     responses=error_responses(401, 403, 422), media_type="text/csv")
async def export_results_csv(
    state: State,
    service: ServiceFilter = None,
    check: CheckFilter = None,
    result: ResultFilter = None,
    status: StatusFilter = None,
    since: SinceFilter = None,
) -> Stream:
    service, check, result, status, since = given(service, check, result, status, since)
    check_filters(result, status)  # before the first byte: a bad filter is a JSON error, not a broken download
    batches = result_batches(state.store, defuse=True, service=service, check=check, result=result, status=status,
                             since=parse_since(since))
    # a sync iterator: Litestar takes each chunk from it on a worker thread, off the event loop
    return Stream(csv_chunks(batches), media_type="text/csv; charset=utf-8",
                  headers={"Content-Disposition": 'attachment; filename="results.csv"'})
