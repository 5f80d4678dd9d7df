"""Authentication (a middleware that finds the caller's token) and authorization (guards).

The middleware accepts `Authorization: Token T`, `token T` or `Bearer T`, or a cookie
`catalog_token` (set by the dashboard's login form), and puts the caller's `Identity` in
`scope["user"]` (so `request.user` is the identity; anonymous callers get `ANONYMOUS`).

Guards raise `NotAuthenticated` (401: no or bad token) or `Forbidden` (403: wrong scope).
Pages that prefer a redirect to a login form over a JSON 401 register their own handler for
`NotAuthenticated` on their routes or router, e.g.

    Router("/", route_handlers=PAGES, guards=[requires_read],
           exception_handlers={NotAuthenticated: redirect_to_login})

A bad token (unknown or revoked) is treated as no token: `request.user.authenticated` is False and
`scope["state"]["auth_error"]` says why, so a page can say "your token was revoked".

A bearer JWT (a GitHub Actions OIDC token) is checked by `reconciler.oidc.OidcVerifier` instead; its
`OidcIdentity` holds no scope and passes one guard, `requires_answer`; the store then applies the
repository rule (`reconciler.oidc.answer_refusal`) in the answer's transaction.
"""

from __future__ import annotations

import time

import anyio.to_thread
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from reconciler.oidc import OidcIdentity, OidcRefused, OidcVerifier, looks_like_jwt
from reconciler.tokens import ANONYMOUS, Identity, TokenVerifier

COOKIE_NAME = "catalog_token"
_SCHEMES = {"token", "bearer"}
# The OpenAPI security scheme name, used by every guarded route.
SECURITY_SCHEME = "catalogToken"
SECURITY = [{SECURITY_SCHEME: []}]


class NotAuthenticated(NotAuthorizedException):
    """401: no token, or a token that is unknown or revoked."""

    headers = {"WWW-Authenticate": 'Token realm="catalog"'}


class Forbidden(PermissionDeniedException):
    """403: a valid token without the scope this route needs."""


class AuthUnavailable(HTTPException):
    """503: the token cannot be checked right now (the OIDC issuer's keys could not be fetched)."""

    status_code = 503


# The methods the sign-in cookie authorizes. A browser sends a cookie with a form another site posts
# (same-site pages on another port, too), so a write needs the Authorization header.
COOKIE_METHODS = frozenset({"GET", "HEAD"})


def token_from_headers(headers: list[tuple[bytes, bytes]], *, cookie_allowed: bool = True) -> tuple[str | None, bool]:
    """The token from the Authorization header, else (for reads) from the catalog_token cookie; and
    whether a cookie was there but not allowed."""
    cookie = None
    for key, value in headers:
        if key == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() in _SCHEMES and token.strip():
                return token.strip(), False
            return None, False  # a malformed header is not silently replaced by a cookie
        if key == b"cookie":
            cookie = _cookie_value(value.decode("latin-1"), COOKIE_NAME) or cookie
    return (cookie, False) if cookie_allowed else (None, cookie is not None)


def _cookie_value(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value.strip('"')
    return None


class AuthMiddleware:
    """A plain ASGI middleware (cheap on the hot PATCH path): resolves the caller's identity."""

    def __init__(self, app: ASGIApp, verifier: TokenVerifier, oidc: OidcVerifier | None = None):
        self.app = app
        self.verifier = verifier
        self.oidc = oidc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["started_at"] = time.perf_counter()  # for the access log's time taken
            identity: Identity = ANONYMOUS
            token, cookie_refused = token_from_headers(scope["headers"], cookie_allowed=scope["method"] in COOKIE_METHODS)
            if cookie_refused:
                scope.setdefault("state", {})["auth_error"] = (
                    "the sign-in cookie authorizes reads only; a write needs the Authorization header")
            if token is not None and self.oidc is not None and looks_like_jwt(token):
                identity = await self._oidc_identity(token, scope)
            elif token is not None:
                found = self.verifier.cached(token)
                if found is None:
                    # A miss reads (and at most once a minute writes) the database: off the event loop.
                    found = await anyio.to_thread.run_sync(self.verifier.verify, token)
                if found is None:
                    scope.setdefault("state", {})["auth_error"] = "the token is unknown or revoked"
                else:
                    identity = found
            scope["user"] = identity
            scope["auth"] = identity.name
        await self.app(scope, receive, send)

    async def _oidc_identity(self, token: str, scope: Scope) -> Identity:
        found = self.oidc.cached(token)
        if found is not None:
            return found
        try:
            if self.oidc.knows_key(token):
                return self.oidc.verify(token)  # one signature check with a cached key: bounded CPU, no I/O
            return await anyio.to_thread.run_sync(self.oidc.verify, token)  # fetches the issuer's keys
        except OidcRefused as error:
            scope.setdefault("state", {}).update(auth_error=str(error), auth_status=error.status)
            return ANONYMOUS


def identity_of(connection: ASGIConnection) -> Identity:
    return connection.scope.get("user") or ANONYMOUS


def _refuse(connection: ASGIConnection, scope_name: str) -> None:
    identity = identity_of(connection)
    if not identity.authenticated:
        state = connection.scope.get("state", {})
        reason = state.get("auth_error", "no API token given")
        if state.get("auth_status") == 503:
            raise AuthUnavailable(reason)
        raise NotAuthenticated(f"authentication required: {reason}; send 'Authorization: Token <token>'")
    if isinstance(identity, OidcIdentity):
        raise Forbidden(f"an OIDC token (of {identity.claims['repository']!r}) may only answer results;"
                        f" this needs an API token with the {scope_name!r} scope")
    raise Forbidden(f"token {identity.name!r} lacks the {scope_name!r} scope")


# Guards are coroutines: Litestar runs a plain-function guard in a worker thread, a costly hop per request.


async def requires_read(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Reads: anyone when the server runs with public read, else a token with `read` (or admin)."""
    if connection.app.state.settings.public_read:
        return
    if not identity_of(connection).has("read"):
        _refuse(connection, "read")


async def requires_answer(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Answering results (one or many) and reading a batch's list: a token with `results:write`, or a
    verified OIDC token, whose repository rule is applied once the result or batch is read
    (`reconciler.oidc.answer_refusal`: by the store in the answer's transaction, by the batch route)."""
    identity = identity_of(connection)
    if not (identity.has("results:write") or isinstance(identity, OidcIdentity)):
        _refuse(connection, "results:write")


def requires_scope(scope_name: str):
    """A guard that lets through tokens holding `scope_name` (or admin)."""

    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        if not identity_of(connection).has(scope_name):
            _refuse(connection, scope_name)

    guard.__name__ = f"requires_{scope_name.replace(':', '_')}"
    return guard
