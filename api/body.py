"""Request bodies that may be JSON or an HTML form (the origin's Actions send forms): one flat dict."""

from __future__ import annotations

from urllib.parse import parse_qsl

import msgspec
from litestar import Request
from litestar.exceptions import ClientException, HTTPException

from reconciler.errors import InvalidInput


class UnsupportedMediaType(HTTPException):
    status_code = 415


async def read_fields(request: Request, allowed: tuple[str, ...], *, required: bool = True) -> dict:
    """The body's fields; unknown fields, repeated fields and non-object JSON are errors."""
    body = await request.body()
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if not body.strip():
        if required:
            raise InvalidInput(f"the request body is empty; send {_fields_text(allowed)} as JSON or a form")
        return {}
    if content_type == "application/json" or content_type.endswith("+json") or (
        not content_type and body.lstrip()[:1] == b"{"
    ):
        try:
            fields = msgspec.json.decode(body)
        except msgspec.DecodeError as error:
            raise ClientException(f"the body is not valid JSON: {error}") from None
        if not isinstance(fields, dict):
            raise InvalidInput(f"the JSON body must be an object with {_fields_text(allowed)}")
    elif content_type in ("application/x-www-form-urlencoded", ""):
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            raise ClientException("the form body is not valid application/x-www-form-urlencoded UTF-8") from None
        fields = {}
        for key, value in pairs:
            if key in fields:
                raise InvalidInput(f"field {key!r} is given more than once")
            fields[key] = value
    else:
        raise UnsupportedMediaType(
            f"unsupported content type {content_type!r}: send application/json or application/x-www-form-urlencoded"
        )
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}; the fields are {_fields_text(allowed)}")
    return fields


def _fields_text(allowed: tuple[str, ...]) -> str:
    return ", ".join(repr(name) for name in allowed)
