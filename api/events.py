"""Events: what the catalog told teams (notifications), newest first, and each one's deliveries."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from litestar import Controller, Request
from litestar.datastructures import State
from litestar.params import PathParameter, QueryParameter

from api.auth import SECURITY, requires_read
from api.models import MAX_ID, CheckFilter, EventDetail, EventPage, ServiceFilter, error_responses, given
from api.routing import get
from reconciler.errors import InvalidInput, NotFound
from reconciler.events import EVENT_TYPES

EventId = Annotated[int, PathParameter(schema_extra={"minimum": 1, "maximum": MAX_ID, "format": "int64"})]


class EventController(Controller):
    path = "/api/events"
    tags = ["events"]
    security = SECURITY
    guards = [requires_read]

    @get("/", summary="Events, newest first, filtered; follow `next` for more",
         responses=error_responses(401, 403, 422), sync_to_thread=True)
    def list_events(
        self,
        request: Request,
        state: State,
        type: Annotated[str | None, QueryParameter(enum=list(EVENT_TYPES))] = None,
        service: ServiceFilter = None,
        check: CheckFilter = None,
        cursor: Annotated[int | None, QueryParameter(ge=1, le=MAX_ID, description="from the `next` link: events before this id")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000, description="page size")] = 100,
    ) -> EventPage:
        type, service, check = given(type, service, check)
        if type is not None and type not in EVENT_TYPES:
            raise InvalidInput(f"'type' filter must be one of {', '.join(EVENT_TYPES)}, not {type!r}")
        rows = state.store.events.list(type=type, service=service, check=check, before_id=cursor, limit=limit)
        next_link = None
        if len(rows) == limit:
            query = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
            next_link = f"{request.url.path}?{urlencode(query + [('cursor', rows[-1]['id'])])}"
        return {"events": rows, "next": next_link}

    @get("/{event_id:int}", summary="One event with its deliveries to each route",
         responses=error_responses(401, 403, 404), sync_to_thread=True)
    def get_event(self, state: State, event_id: EventId) -> EventDetail:
        if not 1 <= event_id <= MAX_ID:
            raise NotFound(f"event {event_id} does not exist")
        return state.store.events.get(event_id)
