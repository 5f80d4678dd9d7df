"""The shapes the API answers with, for the OpenAPI document (handlers return plain dicts of these)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

from reconciler.answer_limits import MAX_MESSAGE_BYTES, MAX_URL_LENGTH
from reconciler.outcomes import RESULT_VALUES, RESULTS, STATUSES

# Ids are SQLite INTEGERs: a larger number names no row, and the driver cannot even bind it.
MAX_ID = 2**63 - 1

# The filters the result reads share (/api/results, /api/results.csv, /api/events): one declaration each.
ServiceFilter = Annotated[str | None, QueryParameter(description="service slug")]
CheckFilter = Annotated[str | None, QueryParameter(description="check slug")]
ResultFilter = Annotated[str | None, QueryParameter(enum=list(RESULTS))]
StatusFilter = Annotated[str | None, QueryParameter(enum=list(STATUSES))]
SinceFilter = Annotated[str | None, QueryParameter(
    description="created at or after this ISO 8601 time", schema_extra={"format": "date-time"})]


def given(*filters: str | None) -> tuple[str | None, ...]:
    """The filters with an empty one (`?service=`, a form's blank field) as not given, in the JSON reads
    as in the CSV export and the pages (`?service=` listed nothing: no service has the slug '')."""
    return tuple(value or None for value in filters)


class ErrorDetail(TypedDict, total=False):
    status: int
    code: str
    message: str
    details: list[dict[str, Any]]


class ErrorOut(TypedDict):
    """Every error, whatever the route: `{"message", "error": {"status", "code", "message"}}`; the
    top-level `message` is the error's, for clients that print `parsed.message` (the origin's Action)."""

    message: str
    error: ErrorDetail


class Attestation(TypedDict, total=False):
    """The GitHub Actions OIDC claims of the run that answered (docs/operating.md, "Attested results")."""

    repository: str
    workflow_ref: str
    run_id: str
    run_attempt: str
    sha: str
    actor: str


class ResultOut(TypedDict):
    id: int
    check_id: int
    service_id: int | None
    check: str
    service: str | None
    status: str
    result: str
    message: str | None
    url: str | None
    revision: str | None
    trigger: str
    created_at: str
    sent_at: str | None
    finished_at: str | None
    attestation: Attestation | None


class BulkAnswerItemOut(TypedDict, total=False):
    id: int | None
    status: int  # 200, 403, 404, 409 or 422
    result: ResultOut  # with 200
    error: ErrorDetail  # otherwise


class BulkAnswerOut(TypedDict):
    results: list[BulkAnswerItemOut]


class BatchItemOut(TypedDict):
    result: dict[str, Any]
    service: dict[str, Any] | None
    endpoint: str


class BatchOut(TypedDict):
    id: int
    check: str
    size: int
    results: list[BatchItemOut]


class ResultPage(TypedDict):
    results: list[ResultOut]
    next: str | None


class ServiceOut(TypedDict):
    id: int
    slug: str
    name: str
    priority: int
    type: str | None
    description: str | None
    owner: str | None
    repository: str | None
    active: bool
    tags: list[str]
    dependencies: list[str]
    meta: dict[str, str]
    path: str
    error: str | None
    removed_at: str | None
    created_at: str
    updated_at: str


class LatestResult(TypedDict):
    """A result in a summary: no message (GET /api/results/{id} has it)."""

    id: int
    status: str
    result: str
    url: str | None
    created_at: str
    sent_at: str | None
    finished_at: str | None


class ServiceLatest(LatestResult):
    check: str


class CheckLatest(LatestResult):
    service: str | None


class ServiceDetail(ServiceOut):
    latest_results: list[ServiceLatest]
    counts: dict[str, int]


class ServiceList(TypedDict):
    services: list[ServiceOut]


class CheckOut(TypedDict):
    id: int
    slug: str
    name: str
    description: str | None
    frequency: str | None
    schedule: str | None
    timeout_seconds: int
    active: bool
    repository: str | None
    targets: Any
    target_kind: str
    batch_size: int  # `batch:` pairs per dispatch (1: one run per pair)
    path: str
    error: str | None
    removed_at: str | None
    created_at: str
    updated_at: str


class CheckDetail(CheckOut):
    latest_results: list[CheckLatest]
    counts: dict[str, int]


class CheckList(TypedDict):
    checks: list[CheckOut]


class SyncRunOut(TypedDict):
    id: int
    started_at: str
    finished_at: str
    duration_ms: float
    outcome: str
    previous_revision: str | None
    attempted_revision: str | None
    applied_revision: str | None
    created: int
    updated: int
    removed: int
    unchanged: int
    errors: list[dict[str, Any]]
    message: str | None


class SyncStatus(TypedDict):
    last_run: SyncRunOut | None


class EventOut(TypedDict):
    id: int
    type: str
    created_at: str
    team: str | None
    service: str | None
    check: str | None
    result_id: int | None
    outcome: str | None
    summary: str
    data: dict[str, Any]


class EventPage(TypedDict):
    events: list[EventOut]
    next: str | None


class DeliveryOut(TypedDict):
    route: str
    status: str
    attempts: int
    not_before: str
    last_error: str | None
    finished_at: str | None


class EventDetail(EventOut):
    waiting: bool
    deliveries: list[DeliveryOut]


class Accepted(TypedDict, total=False):
    status: str
    note: str


class RunOut(TypedDict):
    results: list[ResultOut]


class Health(TypedDict):
    status: str
    schema_version: int


_ERROR_TEXT = {
    400: "Bad request (a malformed body or parameter)",
    401: "No token, or an unknown or revoked token",
    403: "The token lacks the scope this route needs",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Request body too large (1 MiB at most)",
    415: "Unsupported content type",
    422: "Invalid values",
    502: "An upstream service (git, GitHub) failed",
    503: "The server is not configured for this",
}


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI responses in the one error shape; 400 is always listed (bad parameters)."""
    return {
        # no generated examples: Litestar's are random text (`"status": 4966`), new at each start
        status: ResponseSpec(data_container=ErrorOut, description=_ERROR_TEXT.get(status, "Error"), generate_examples=False)
        for status in sorted({400, *statuses})
    }


_ANSWER_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["result"],
    additional_properties=False,  # api.body refuses unknown fields: a typo must not pass silently
    properties={
        "result": Schema(type=OpenAPIType.STRING, enum=list(RESULT_VALUES)),
        "message": Schema(type=OpenAPIType.STRING, max_length=MAX_MESSAGE_BYTES,
                          description=f"free text, at most {MAX_MESSAGE_BYTES} bytes of UTF-8"),
        "url": Schema(type=OpenAPIType.STRING, format="uri", max_length=MAX_URL_LENGTH,
                      description="http(s) link to the run that produced the result"),
    },
)


@dataclass
class AnswerOperation(Operation):
    """PATCH /api/results/{id} reads its body by hand (JSON or form), so its schema is given here."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="The answer of a check run, as JSON or as a form (the origin project's Actions send forms).",
            content={
                "application/json": OpenAPIMediaType(schema=_ANSWER_SCHEMA),
                "application/x-www-form-urlencoded": OpenAPIMediaType(schema=_ANSWER_SCHEMA),
            },
        )


_BULK_ITEM_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["id", "result"],
    additional_properties=False,
    properties={"id": Schema(type=OpenAPIType.INTEGER, format="int64", minimum=1), **_ANSWER_SCHEMA.properties},
)


@dataclass
class BulkAnswerOperation(Operation):
    """PATCH /api/results reads its body by hand (each item gets its own outcome), so its schema is given here."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="At most 1,000 answers, each recorded (or refused) on its own.",
            content={"application/json": OpenAPIMediaType(schema=Schema(
                type=OpenAPIType.OBJECT, required=["results"], additional_properties=False,
                properties={"results": Schema(type=OpenAPIType.ARRAY, items=_BULK_ITEM_SCHEMA, max_items=1000)},
            ))},
        )


_RUN_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    additional_properties=False,
    properties={"service": Schema(type=OpenAPIType.STRING, description="run on this service only")},
)


@dataclass
class RunOperation(Operation):
    """POST /api/checks/{slug}/run takes an optional body (JSON or form) naming one service."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=False,
            content={
                "application/json": OpenAPIMediaType(schema=_RUN_SCHEMA),
                "application/x-www-form-urlencoded": OpenAPIMediaType(schema=_RUN_SCHEMA),
            },
        )


@dataclass
class WebhookOperation(Operation):
    """POST /webhooks/github: GitHub's event payload, signed with X-Hub-Signature-256."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="A GitHub webhook delivery (push and ping are acted on; other events are ignored).",
            content={"application/json": OpenAPIMediaType(schema=Schema(type=OpenAPIType.OBJECT))},
        )
