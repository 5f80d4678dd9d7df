"""A small real HTTP server on loopback standing in for GitHub's `repository_dispatch` API.

    with GitHubStandIn(token="t") as github:          # or github.start() ... github.stop()
        github.script(Answer.error(500), Answer.rate_limited(retry_after=30))  # then 204s
        ... Settings(github_api_url=github.url, github_token="t") ...
        github.dispatches                             # accepted (204) dispatches, in order

Every request is recorded (`github.requests`) with the problems found in it (headers, path, body
shape, GitHub's payload limits); a request with problems is answered 401 or 422 as GitHub would.
An optional `on_dispatch(request)` hook runs per well-formed dispatch (e.g. to play the Action);
if it returns an `Answer`, that answer is used. Dispatch bodies are validated against GitHub's own
request schema (tests/fixtures/github-contract, from github/rest-api-description).

With `clock=` (a FakeClock) the stand-in enforces GitHub's secondary rate limits on that movable
clock: more than 80 dispatches in a minute or 500 in an hour are answered 403 with GitHub's
secondary-limit message (`github.limited` counts them). With `app_id=` and `app_public_key=` it is
also a GitHub App's side: `GET /repos/O/R/installation` and `POST /app/installations/N/access_tokens`
take an RS256 app JWT and issue installation tokens (`github.issued`), valid `token_lifetime` seconds.
`ActionPlayer(token)` as `on_dispatch` plays the Action: it answers every result it receives through
the catalog's API (a PATCH per single dispatch, one bulk PATCH per batch).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import base64

import jsonschema
import jwt
import requests

_PATH = re.compile(r"^/repos/([^/]+)/([^/]+)/dispatches$")
_INSTALLATION = re.compile(r"^/repos/([^/]+)/([^/]+)/installation$")
_ACCESS_TOKENS = re.compile(r"^/app/installations/(\d+)/access_tokens$")
_CONTRACT = json.loads((Path(__file__).parent / "fixtures" / "github-contract" / "github-rest-2022-11-28.extract.json").read_text())
DISPATCH_SCHEMA = _CONTRACT["operations"]["POST /repos/{owner}/{repo}/dispatches"]["requestBody"]["content"]["application/json"]["schema"]
# GitHub's documented secondary limits for content-creating requests.
LIMITS = ((80, 60.0), (500, 3600.0))
SECONDARY_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach"
    " out to GitHub Support for help, please include the request ID"
)


@dataclass
class Answer:
    """A scripted answer: status, JSON body, headers; `hang` seconds of silence first."""

    status: int = 204
    body: dict | None = None
    headers: dict = field(default_factory=dict)
    hang: float = 0.0

    @classmethod
    def ok(cls) -> "Answer":
        return cls(204)

    @classmethod
    def error(cls, status: int, message: str | None = None, **headers) -> "Answer":
        """An error answer with GitHub's JSON body: `Answer.error(404)`, `Answer.error(500)`."""
        text = message or {
            401: "Bad credentials",
            404: "Not Found",
            422: "Invalid request.",
            500: "Server Error",
        }.get(status, "Error")
        return cls(status, {"message": text, "documentation_url": "https://docs.github.com/rest"}, dict(headers))

    @classmethod
    def rate_limited(cls, *, retry_after: float | None = None, reset_at: float | None = None, code: int = 403) -> "Answer":
        """403 (or 429) for a rate limit: with `retry-after`, or with x-ratelimit-remaining 0 and a reset time."""
        headers: dict = {}
        if retry_after is not None:
            headers["retry-after"] = str(int(retry_after))
        if reset_at is not None:
            headers.update({"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(reset_at))})
        message = "API rate limit exceeded for user ID 1." if reset_at is not None else "You have exceeded a secondary rate limit."
        return cls(code, {"message": message}, headers)

    @classmethod
    def hanging(cls, seconds: float = 30.0) -> "Answer":
        return cls(204, hang=seconds)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict
    body: dict | None
    problems: list[str]
    answer: int = 0

    @property
    def owner_repo(self) -> str | None:
        match = _PATH.match(self.path)
        return f"{match.group(1)}/{match.group(2)}" if match else None


class GitHubStandIn:
    def __init__(self, *, token: str = "test-token", on_dispatch: Callable[[RecordedRequest], Answer | None] | None = None,
                 clock=None, app_id: str | None = None, app_public_key: str | None = None, token_lifetime: float = 3600):
        self.token = token
        self.on_dispatch = on_dispatch
        self.clock = clock
        self.limited = 0  # dispatches answered 403 for passing a secondary limit
        self._sent_at: list[float] = []  # accepted content-creating requests, for the limits
        self.app_id, self.app_public_key, self.token_lifetime = app_id, app_public_key, token_lifetime
        self.issued: dict[str, str] = {}  # installation token -> owner
        self.expired: set[str] = set()  # tokens a test revoked early
        self.requests: list[RecordedRequest] = []
        self._answers: deque[Answer] = deque()
        self._lock = threading.Lock()
        self._release = threading.Event()  # set on stop: hanging answers end at once
        self._server: ThreadingHTTPServer | None = None

    # -- control ---------------------------------------------------------------------------------

    def start(self) -> "GitHubStandIn":
        self._release.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="github-standin", daemon=True).start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "GitHubStandIn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def script(self, *answers: Answer) -> None:
        """Queue answers for the next dispatches, in order; once used up, dispatches get 204."""
        with self._lock:
            self._answers.extend(answers)

    @property
    def dispatches(self) -> list[RecordedRequest]:
        """The dispatches answered 204: what GitHub would have turned into Action runs."""
        return [r for r in self.requests if r.answer == 204]

    # -- the server --------------------------------------------------------------------------------

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                standin._serve(self, "POST")

            def do_GET(self) -> None:
                standin._serve(self, "GET")

        return Handler

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        if self.app_id and (_INSTALLATION.match(handler.path) or _ACCESS_TOKENS.match(handler.path)):
            request = RecordedRequest(method, handler.path, headers, None, [])
            with self._lock:
                self.requests.append(request)
            return self._reply(handler, request, self._app_answer(method, handler.path, headers))
        body, problems = self._inspect(method, handler.path, headers, raw)
        request = RecordedRequest(method, handler.path, headers, body, problems)
        with self._lock:
            self.requests.append(request)
        if not self._authorized(headers.get("authorization") or ""):
            answer = Answer.error(401)
        elif problems:
            answer = Answer.error(404 if "path" in problems[0] else 422, "; ".join(problems))
        else:
            with self._lock:
                answer = self._answers.popleft() if self._answers else None
            if answer is None and self._over_limit():
                answer = Answer(403, {"message": SECONDARY_LIMIT_MESSAGE,
                                      "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"})
            if answer is None and self.on_dispatch is not None:
                answer = self.on_dispatch(request)
            answer = answer or Answer.ok()
        self._reply(handler, request, answer)

    def _reply(self, handler: BaseHTTPRequestHandler, request: RecordedRequest, answer: Answer) -> None:
        if answer.hang:
            self._release.wait(answer.hang)
        request.answer = answer.status
        payload = json.dumps(answer.body).encode() if answer.body is not None else b""
        try:
            handler.send_response(answer.status)
            for key, value in answer.headers.items():
                handler.send_header(key, value)
            if payload:
                handler.send_header("content-type", "application/json; charset=utf-8")
            handler.send_header("content-length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:
            pass  # the client gave up (a timeout test)

    def _authorized(self, authorization: str) -> bool:
        if authorization == f"Bearer {self.token}":
            return True
        token = authorization.removeprefix("Bearer ")
        return token in self.issued and token not in self.expired

    def _over_limit(self) -> bool:
        """Count this request against GitHub's limits on the movable clock; True (and not counted) past them."""
        if self.clock is None:
            return False
        now = self.clock.now().timestamp()
        with self._lock:
            if any(sum(1 for t in self._sent_at if t > now - seconds) >= limit for limit, seconds in LIMITS):
                self.limited += 1
                return True
            self._sent_at.append(now)
        return False

    def _app_answer(self, method: str, path: str, headers: dict) -> Answer:
        """The GitHub App endpoints: an RS256 JWT issued by the app, not expired, at most 10 minutes long."""
        token = (headers.get("authorization") or "").removeprefix("Bearer ")
        now = self.clock.now().timestamp() if self.clock else None
        try:
            claims = jwt.decode(token, self.app_public_key, algorithms=["RS256"],
                                options={"verify_exp": now is None, "verify_iat": False})
        except jwt.PyJWTError as error:
            return Answer.error(401, f"A JSON web token could not be decoded ({error})")
        if str(claims.get("iss")) != self.app_id or claims["exp"] - claims["iat"] > 660 or (now is not None and claims["exp"] <= now):
            return Answer.error(401, "'Expiration time' claim ('exp') is too far in the future, expired, or not this app's")
        match = _INSTALLATION.match(path)
        if match and method == "GET":
            return Answer(200, {"id": 1000 + sum(map(ord, match.group(1).lower())), "account": {"login": match.group(1)}})
        match = _ACCESS_TOKENS.match(path)
        if match and method == "POST":
            issued = "ghs_" + secrets.token_hex(16)
            owner = match.group(1)
            with self._lock:
                self.issued[issued] = owner
            expires = (self.clock.now() if self.clock else datetime.now(timezone.utc)) + timedelta(seconds=self.token_lifetime)
            return Answer(201, {"token": issued, "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ")})
        return Answer.error(404)

    @staticmethod
    def _inspect(method: str, path: str, headers: dict, raw: bytes) -> tuple[dict | None, list[str]]:
        problems = []
        if method != "POST" or not _PATH.match(path):
            problems.append(f"path: {method} {path} is not POST /repos/OWNER/REPO/dispatches")
        if headers.get("accept") != "application/vnd.github+json":
            problems.append(f"Accept header is {headers.get('accept')!r}")
        if headers.get("x-github-api-version") != "2022-11-28":
            problems.append(f"X-GitHub-Api-Version header is {headers.get('x-github-api-version')!r}")
        if not headers.get("user-agent"):
            problems.append("no User-Agent header")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return None, problems + ["body is not JSON"]
        if not isinstance(body, dict):
            return None, problems + ["body is not a JSON object"]
        event_type = body.get("event_type")
        if not isinstance(event_type, str) or not 1 <= len(event_type) <= 100:
            problems.append("event_type must be a string of 1..100 characters")
        client_payload = body.get("client_payload")
        if not isinstance(client_payload, dict):
            problems.append("client_payload must be an object")
        else:
            if len(client_payload) > 10:
                problems.append("client_payload may have at most 10 top-level keys")
            if len(json.dumps(client_payload, separators=(",", ":")).encode()) > 64 * 1024:
                problems.append("client_payload is over 64 KB")
        if set(body) - {"event_type", "client_payload"}:
            problems.append(f"unexpected keys {sorted(set(body) - {'event_type', 'client_payload'})}")
        for error in jsonschema.Draft4Validator(DISPATCH_SCHEMA).iter_errors(body):
            problems.append(f"GitHub's schema: {error.message}")
        return body, problems


class ActionPlayer:
    """Plays the GitHub Action of every dispatch: answers each result it carries through the API, as
    `catalog answer` would (a batch: its list from the payload or GET /api/batches/{id}, one bulk PATCH)."""

    def __init__(self, token: str, result: str = "pass"):
        self.headers = {"Authorization": f"Token {token}"}
        self.result = result
        self.answered: list[int] = []  # result ids answered 200, in order
        self.refused: list[dict] = []  # outcomes other than 200
        self.fetched = 0  # batch lists read from the API (left out of a payload over 64 KB)
        self._lock = threading.Lock()

    def __call__(self, request: RecordedRequest) -> None:
        data = json.loads(base64.b64decode(request.body["client_payload"]["data"]))
        server = data["server"]["url"]
        batch = data.get("batch")
        if batch is None:
            response = requests.patch(server + data["server"]["endpoint"], json={"result": self.result},
                                      headers=self.headers, timeout=30)
            outcomes = [{"id": data["result"]["id"], "status": response.status_code}]
        else:
            items = batch.get("results")
            if items is None:
                with self._lock:
                    self.fetched += 1
                listing = requests.get(f"{server}/api/batches/{batch['id']}", headers=self.headers, timeout=30)
                listing.raise_for_status()
                items = listing.json()["results"]
            answers = [{"id": item["result"]["id"], "result": self.result} for item in items]
            response = requests.patch(server + data["server"]["endpoint"], json={"results": answers},
                                      headers=self.headers, timeout=30)
            response.raise_for_status()
            outcomes = response.json()["results"]
        with self._lock:
            self.answered.extend(o["id"] for o in outcomes if o["status"] == 200)
            self.refused.extend(o for o in outcomes if o["status"] != 200)
        return None
