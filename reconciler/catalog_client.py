"""The catalog's HTTP API as a check's Action calls it (`catalog answer`): the authorization, and
requests tried again while the network or the server fails for now.

A request is tried again after a connection error, a timeout, a 5xx or a 429: at most MAX_ATTEMPTS
attempts, waiting $CATALOG_ANSWER_BACKOFF seconds (default 1) and twice as long each time, or as long
as a Retry-After asks, never more than RETRY_BUDGET seconds in all. Any other status is final: a 4xx
does not change by asking again.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, Mapping
from urllib.parse import quote

import requests

from .dispatch import retry_after_seconds
from .errors import ConfigError, InvalidInput

MAX_ATTEMPTS = 5
RETRY_BUDGET = 30.0  # seconds of waiting between attempts, in all: 1 + 2 + 4 + 8 by default
BACKOFF_VARIABLE = "CATALOG_ANSWER_BACKOFF"
TIMEOUT = 30.0  # seconds for one attempt
TRANSIENT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


@dataclass(frozen=True)
class Retry:
    """When to try a request again: up to `attempts`, waiting `first_wait` seconds and twice as long
    each time, or what a Retry-After asks; giving up rather than wait more than `budget` seconds in all."""

    first_wait: float = 1.0
    attempts: int = MAX_ATTEMPTS
    budget: float = RETRY_BUDGET
    sleep: Callable[[float], None] = time.sleep

    def wait(self, attempt: int, asked: float | None, waited: float) -> float | None:
        """Seconds to wait after failed attempt number `attempt` (from 1), or None to give up."""
        if attempt >= self.attempts:
            return None
        wait = asked if asked is not None else self.first_wait * 2 ** (attempt - 1)
        return wait if waited + wait <= self.budget else None


def retry_from(environ: Mapping[str, str]) -> Retry:
    """The retry policy, its first wait from $CATALOG_ANSWER_BACKOFF (seconds) when set."""
    text = environ.get(BACKOFF_VARIABLE)
    if not text:
        return Retry()
    try:
        first_wait = float(text)
    except ValueError:
        first_wait = -1.0
    if not 0 <= first_wait <= RETRY_BUDGET:  # NaN fails this too
        raise ConfigError(f"{BACKOFF_VARIABLE} must be seconds from 0 to {RETRY_BUDGET:g}, not {text!r}")
    return Retry(first_wait)


def send(session: requests.Session, method: str, url: str, *, headers: dict, body: bytes | None = None,
         retry: Retry, label: str) -> tuple[requests.Response, bool]:
    """The final response to a request, tried again while it fails for now; and whether an earlier
    attempt may have got through (its response lost to a connection error or a timeout, or a 5xx).
    ConfigError, naming the request as `label`, once the attempts are spent."""
    waited, maybe_delivered = 0.0, False
    for attempt in range(1, retry.attempts + 1):
        try:
            response = session.request(method, url, data=body, headers=headers, timeout=TIMEOUT)
        except TRANSIENT_ERRORS as error:
            failure, asked, maybe_delivered = f"failed ({type(error).__name__})", None, True
        except requests.RequestException as error:  # not a request it can make: asking again will not help
            raise ConfigError(f"{label} failed ({type(error).__name__})") from None
        else:
            if response.status_code != 429 and response.status_code < 500:
                return response, maybe_delivered
            failure, asked = f"answered {response.status_code}: {server_message(response)}", retry_after_seconds(response)
            maybe_delivered = maybe_delivered or response.status_code != 429
        wait = retry.wait(attempt, asked, waited)
        if wait is None:
            break
        print(f"catalog: {label} {failure}; trying again in {wait:g} s", file=sys.stderr)
        retry.sleep(wait)
        waited += wait
    raise ConfigError(f"{label} {failure}; gave up after {attempt} attempts")


def server_message(response: requests.Response) -> str:
    """What the server said: the `message` of its JSON error, else the start of its text."""
    try:
        document = response.json()
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        return document["message"]
    return (response.text or response.reason or "").strip()[:200]


def error_code(body: object) -> str | None:
    """The stable `code` of an error in the catalog's one shape (`{"error": {"code": ...}}`), a whole
    reply's or one bulk item's (`conflict`, `timed_out`, ...); None for anything else."""
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None


@dataclass(frozen=True)
class Reply:
    """The catalog's final answer to one request."""

    request: str  # "PATCH https://catalog.example/api/results", for messages
    status: int
    document: dict | None  # its JSON object, if it sent one
    message: str  # what it said, for messages
    maybe_delivered: bool  # an earlier attempt may have got through (see `send`)

    def json(self) -> dict:
        """The JSON object of a 200; InvalidInput with the status and the server's message otherwise."""
        if self.status != 200 or self.document is None:
            raise InvalidInput(f"{self.request} answered {self.status}: {self.message}")
        return self.document


class CatalogClient:
    """Requests to one catalog server, with one authorization, each tried again by `retry`."""

    def __init__(self, server_url: str, authorization: str, session: requests.Session, retry: Retry):
        self.server_url = server_url
        self._headers = {"Authorization": authorization}
        self.session = session
        self.retry = retry

    def request(self, method: str, path: str, body: bytes | None = None) -> Reply:
        """`method` on the server's `path`, with `body` as JSON: its final reply."""
        url, headers = self.server_url + path, dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        response, maybe_delivered = send(self.session, method, url, headers=headers, body=body,
                                         retry=self.retry, label=f"{method} {url}")
        try:
            document = response.json()
        except ValueError:
            document = None
        return Reply(f"{method} {url}", response.status_code, document if isinstance(document, dict) else None,
                     server_message(response), maybe_delivered)


def authorization(server_url: str, environ: Mapping[str, str], session: requests.Session, retry: Retry) -> str:
    """`Bearer <token>`: $SERVICE_CATALOG_TOKEN, else an Actions OIDC token for `server_url`."""
    token = environ.get("SERVICE_CATALOG_TOKEN")
    if token:
        return f"Bearer {token}"
    request_url, request_token = environ.get("ACTIONS_ID_TOKEN_REQUEST_URL"), environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if not (request_url and request_token):
        raise ConfigError(
            "no SERVICE_CATALOG_TOKEN and no OIDC token: set the secret in the step's env, or give the job"
            " `permissions: id-token: write` so GitHub provides ACTIONS_ID_TOKEN_REQUEST_URL"
        )
    separator = "&" if "?" in request_url else "?"
    response, _ = send(session, "GET", f"{request_url}{separator}audience={quote(server_url, safe='')}",
                       headers={"Authorization": f"bearer {request_token}", "Accept": "application/json"},
                       retry=retry, label="the OIDC token request")
    try:
        value = response.json().get("value") if response.status_code == 200 else None
    except (ValueError, AttributeError):
        value = None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"the OIDC token request answered {response.status_code} without a token")
    return f"Bearer {value}"
