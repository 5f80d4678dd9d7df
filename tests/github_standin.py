"""A small real HTTP server on loopback standing in for GitHub's `repository_dispatch` API.

    with GitHubStandIn(token="t") as github:          # or github.start() ... github.stop()
        github.script(Answer.error(500), Answer.rate_limited(retry_after=30))  # then 204s
        ... Settings(github_api_url=github.url, github_token="t") ...
        github.dispatches                             # accepted (204) dispatches, in order

Every request is recorded (`github.requests`) with the problems found in it (headers, path, body
shape, GitHub's payload limits); a request with problems is answered 401 or 422 as GitHub would.
An optional `on_dispatch(request)` hook runs per well-formed dispatch (e.g. to play the Action);
if it returns an `Answer`, that answer is used.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

_PATH = re.compile(r"^/repos/([^/]+)/([^/]+)/dispatches$")


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
    def __init__(self, *, token: str = "test-token", on_dispatch: Callable[[RecordedRequest], Answer | None] | None = None):
        self.token = token
        self.on_dispatch = on_dispatch
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
        body, problems = self._inspect(method, handler.path, headers, raw)
        request = RecordedRequest(method, handler.path, headers, body, problems)
        with self._lock:
            self.requests.append(request)
        if headers.get("authorization") != f"Bearer {self.token}":
            answer = Answer.error(401)
        elif problems:
            answer = Answer.error(404 if "path" in problems[0] else 422, "; ".join(problems))
        else:
            with self._lock:
                answer = self._answers.popleft() if self._answers else None
            if answer is None and self.on_dispatch is not None:
                answer = self.on_dispatch(request)
            answer = answer or Answer.ok()
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
        return body, problems
