"""Route decorators (`get`, `post`, `patch`): Litestar's, but guards are given the route handler
itself rather than a copy of it.

Litestar passes each guard `copy(handler)`, so that a guard cannot change the handler for later
requests. Copying an object of some sixty attributes costs about 20 µs, a tenth of a service read.
Our guards (`api.auth`) look at the connection only and never touch the handler, so the copy buys
nothing here. Every route in `api/` is declared with these.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import anyio
from litestar import HttpMethod
from litestar.connection import ASGIConnection
from litestar.handlers import HTTPRouteHandler


class RouteHandler(HTTPRouteHandler):
    async def authorize_connection(self, connection: ASGIConnection) -> None:
        for guard in self.resolve_guards():
            await guard(connection, self)


def get(path: str | list[str] | None = None, **options: Any) -> RouteHandler:
    return RouteHandler(path, http_method=HttpMethod.GET, **options)


def post(path: str | list[str] | None = None, **options: Any) -> RouteHandler:
    return RouteHandler(path, http_method=HttpMethod.POST, **options)


def patch(path: str | list[str] | None = None, **options: Any) -> RouteHandler:
    return RouteHandler(path, http_method=HttpMethod.PATCH, **options)


T = TypeVar("T")


async def read(store, call: Callable[..., T], *args: Any) -> T:
    """A short store read from an async handler: on the loop where the store says that is cheaper
    (SQLite), else on a worker thread (PostgreSQL: a network round trip must not stall the loop)."""
    if store.reads_on_loop:
        return call(*args)
    return await anyio.to_thread.run_sync(call, *args)
