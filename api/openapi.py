"""The OpenAPI document: the JSON at /schema/openapi.json, and at /schema a plain page that links it.

Litestar's default /schema pages load their renderers (and a favicon) from a CDN: a browser opening
our docs would fetch scripts from a third party nobody chose. The JSON is the contract; anyone who
wants a viewer can point their own at it.
"""

from __future__ import annotations

from html import escape
from typing import Any

from litestar import Request, Response, Router
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from api.auth import SECURITY_SCHEME
from api.errors import error_response

SCHEMA_PATH = "/schema"
JSON_PATH = f"{SCHEMA_PATH}/openapi.json"  # named in docs/operating.md: a stable address


class SchemaIndexPlugin(OpenAPIRenderPlugin):
    """/schema: a small page of our own that names the API and links the JSON document; no scripts."""

    def __init__(self) -> None:
        super().__init__(path="/", favicon="", style="")

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        info = openapi_schema.get("info", {})
        title = escape(str(info.get("title", "API")))
        return (
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{title}</title></head><body>\n<h1>{title}</h1>\n"
            f"<p>{escape(str(info.get('description', '')))}</p>\n"
            f"<p>The OpenAPI document: <a href=\"{JSON_PATH}\">{JSON_PATH}</a> (JSON). Open it with the "
            "viewer or client generator of your choice.</p>\n</body></html>\n"
        ).encode()


def _json_not_found(response: Response) -> Response:
    """Litestar answers an unknown /schema/... path with an HTML page of its own: ours is the one JSON
    error shape, as on every other path."""
    return error_response(404, "Not Found") if response.status_code == 404 else response


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Service catalog API",
        version="1",
        description=(
            "Services, checks and their immutable results. Authenticate with "
            "`Authorization: Token <token>` (also `token <token>` or `Bearer <token>`)."
        ),
        path=SCHEMA_PATH,
        openapi_router=Router(SCHEMA_PATH, route_handlers=[], include_in_schema=False, after_request=_json_not_found),
        render_plugins=[SchemaIndexPlugin(), JsonRenderPlugin()],
        components=Components(security_schemes={
            SECURITY_SCHEME: SecurityScheme(
                type="apiKey", name="Authorization", security_scheme_in="header",
                description="`Token <token>`, `token <token>` or `Bearer <token>`; "
                            "tokens come from `catalog token create`.",
            ),
        }),
    )
