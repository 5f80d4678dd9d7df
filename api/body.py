"""Request bodies that may be JSON or an HTML form (the origin's Actions send forms): one flat dict."""

from __future__ import annotations

import json
import re
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
        fields = decode_json(body)
        if not isinstance(fields, dict):
            raise InvalidInput(f"the JSON body must be an object with {_fields_text(allowed)}")
        if isinstance(fields, Repeated):
            raise InvalidInput(f"field {fields.repeated!r} is given more than once")
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


def is_json(request: Request) -> bool:
    """Whether the request says its body is JSON (or says nothing)."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    return content_type in ("", "application/json") or content_type.endswith("+json")


class Repeated(dict):
    """A JSON object that gives a key twice; JSON decoders keep the last value silently, we refuse it."""

    repeated: str = ""


# A key of a JSON object without escapes: a raw `"` only ever delimits a string, so this matches keys alone.
_KEY = re.compile(rb'"[^"\\]*"\s*:')


def decode_json(body: bytes):
    """The JSON document of a body, each object that repeats a key a `Repeated`; ClientException (400) for
    a body that is not JSON. The usual body is decoded once by msgspec and its keys counted (~1 us); only
    a body with a repeated key or an escape is decoded again to find which object repeats which key."""
    try:
        document = msgspec.json.decode(body)
        if b"\\" not in body and len(_KEY.findall(body)) == _keys_in(document):
            return document
        return json.loads(body, object_pairs_hook=_object)
    except msgspec.DecodeError as error:
        raise ClientException(f"the body is not valid JSON: {error}") from None
    except RecursionError:  # `[[[[...]]]]`: no body we take nests deeper than a few levels
        raise ClientException("the body is not valid JSON: it nests too deeply") from None


def _keys_in(value) -> int:
    if isinstance(value, dict):
        return len(value) + sum(_keys_in(item) for item in value.values() if isinstance(item, (dict, list)))
    if isinstance(value, list):
        return sum(_keys_in(item) for item in value if isinstance(item, (dict, list)))
    return 0


def _object(pairs: list[tuple[str, object]]) -> dict:
    found = dict(pairs)
    if len(found) == len(pairs):
        return found
    repeated = Repeated(found)
    seen: set[str] = set()
    repeated.repeated = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
    return repeated


def _fields_text(allowed: tuple[str, ...]) -> str:
    return ", ".join(repr(name) for name in allowed)
