"""A notification receiver on loopback: takes Apprise's json:// POSTs and signed webhooks alike.

    with Receiver(secret="s") as receiver:             # or receiver.start() ... receiver.stop()
        receiver.script(500, 500, ("hang", 2.0))        # the next answers; then 200s
        ... NOTIFY_X=f"json://127.0.0.1:{receiver.port}/" or AUDIT_HOOK_URL=receiver.url ...
        receiver.messages                              # every request taken (answered 2xx), in order

Every request is recorded (`receiver.requests`) with its JSON body, headers and, when a secret is
set, whether its X-Catalog-Signature-256 is right. `on_message(request)` runs for each one first
(the kill -9 test stops the sender there, after the receiver got it and before it is marked).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes
    status: int
    signed: bool | None  # None: no secret to check against

    @property
    def json(self):
        return json.loads(self.body)

    def event_ids(self) -> list[int]:
        """The event ids it carries: the webhook's header or digest body, or the `event N` / `#N` of an Apprise text."""
        if "X-Catalog-Event-Id" in self.headers:
            return [int(self.headers["X-Catalog-Event-Id"])]
        document = self.json
        if "digest" in document:
            return [event["id"] for event in document["events"]]
        import re

        text = document.get("message", "")
        return [int(n) for n in re.findall(r"^(?:event |#)(\d+)", text, re.M)]


class Receiver:
    def __init__(self, *, secret: str | None = None):
        self.secret = secret
        self.requests: list[Received] = []
        self._script: deque = deque()
        self.on_message: Callable[[Received], None] | None = None
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def messages(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]

    def script(self, *answers) -> None:
        """Next answers, in order: a status code, or ("hang", seconds) to say nothing that long first."""
        self._script.extend(answers)

    def start(self) -> "Receiver":
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "Receiver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()  # headers and body go out as two writes: without this, each answer on a
                # kept-alive connection waits for the sender's delayed ACK (40 ms)
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    answer = receiver._script.popleft() if receiver._script else 200
                hung = isinstance(answer, tuple)  # the sender gives up first: recorded as status 0
                signed = None
                if receiver.secret is not None:
                    expected = "sha256=" + hmac.new(receiver.secret.encode(), body, hashlib.sha256).hexdigest()
                    signed = hmac.compare_digest(expected, self.headers.get("X-Catalog-Signature-256", ""))
                received = Received(self.path, dict(self.headers), body, 0 if hung else answer, signed)
                with receiver._lock:
                    receiver.requests.append(received)
                if receiver.on_message is not None:
                    receiver.on_message(received)
                if hung:
                    time.sleep(answer[1])
                try:
                    self.send_response(200 if hung else answer)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:  # the sender went away (it timed out, or was killed)
                    pass

            def do_GET(self):  # what it took so far, for a receiver in another process (bench/bench_notify.py)
                with receiver._lock:
                    messages = receiver.messages
                    stats = {"requests": len(receiver.requests), "messages": len(messages),
                             "event_ids": sum(len(m.event_ids()) for m in messages),
                             "signed": sum(1 for m in messages if m.signed),
                             "last_bytes": len(messages[-1].body) if messages else 0}
                body = json.dumps(stats).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        return Handler
