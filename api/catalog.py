"""Catalog reads: services and checks, each with its latest results."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, QueryParameter
from litestar.types import ASGIApp, Receive, Scope, Send

from api.auth import SECURITY, requires_read
from api.models import CheckDetail, CheckList, ServiceDetail, ServiceList, error_responses
from api.routing import get

OK = "Request fulfilled, document follows"


class JSONText:
    """A 200 with a finished JSON body, as a bare ASGI response: Litestar's Response would build its
    headers and body through several objects per request, a sixth of the time of the whole read."""

    __slots__ = ("body",)

    def __init__(self, body: bytes):
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(self.body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


IncludeRemoved = Annotated[bool, QueryParameter(description="also list soft-deleted (removed) entries")]


class ServiceController(Controller):
    path = "/api/services"
    tags = ["catalog"]
    security = SECURITY
    guards = [requires_read]

    @get("/", summary="Services in the catalog, by slug", responses=error_responses(401, 403), sync_to_thread=True)
    def list_services(
        self,
        state: State,
        type: Annotated[str | None, QueryParameter(description="exact type, e.g. web")] = None,
        owner: Annotated[str | None, QueryParameter(description="exact owner")] = None,
        tag: Annotated[str | None, QueryParameter(description="services carrying this tag")] = None,
        include_removed: IncludeRemoved = False,
    ) -> ServiceList:
        return {"services": state.store.list_services(type=type, owner=owner, tag=tag, include_removed=include_removed)}

    @get("/{slug:str}", summary="One service with its latest result per check and their counts",
         responses={200: ResponseSpec(ServiceDetail, description=OK), **error_responses(401, 403, 404)},
         sync_to_thread=False)
    def get_service(self, state: State, slug: FromPath[str]) -> ASGIApp:
        # The hot read: the store hands over the JSON text it built, sent as it is (see JSONText).
        return JSONText(state.store.get_service_json(slug).encode())


class CheckController(Controller):
    path = "/api/checks"
    tags = ["catalog"]
    security = SECURITY
    guards = [requires_read]

    @get("/", summary="Checks in the catalog, by slug", responses=error_responses(401, 403), sync_to_thread=False)
    def list_checks(self, state: State, include_removed: IncludeRemoved = False) -> CheckList:
        return {"checks": state.store.list_checks(include_removed=include_removed)}

    @get("/{slug:str}", summary="One check with its latest result per service and their counts",
         responses=error_responses(401, 403, 404), sync_to_thread=True)
    def get_check(self, state: State, slug: FromPath[str]) -> CheckDetail:
        return state.store.get_check(slug)

