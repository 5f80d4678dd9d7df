"""A loopback proxy in front of a real server that fails PATCH requests on cue, as a network does: a
connection dropped before the request arrives, a response lost after the server acted on it, or a status
of its own (a 503, a 429 with Retry-After). Everything else passes through unchanged."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

DROP = "drop"  # close the connection; the server never sees the request
LOSE = "lose"  # the server acts on the request; its response never comes back


class FlakyProxy:
    """`faults` are used up by the PATCH requests in turn: DROP, LOSE, or (status, headers)."""

    def __init__(self, target: str):
        self.target = target
        self.faults: list = []
        self.patches: list[tuple[float, str, str]] = []  # (monotonic time, path, what the proxy did)

    def __enter__(self) -> "FlakyProxy":
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(proxy: FlakyProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self._relay("GET")

        def do_PATCH(self):
            fault = proxy.faults.pop(0) if proxy.faults else None
            proxy.patches.append((time.monotonic(), self.path, str(fault[0] if isinstance(fault, tuple) else fault or "relay")))
            if fault == DROP:
                self.close_connection = True
            elif fault == LOSE:
                self._forward("PATCH")
                self.close_connection = True
            elif fault is not None:
                status, headers = fault
                self._reply(status, {"Content-Type": "application/json", **headers},
                            json.dumps({"message": f"the proxy answers {status}"}).encode())
            else:
                self._relay("PATCH")

        def _forward(self, method: str) -> requests.Response:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {name: value for name, value in self.headers.items() if name.lower() in ("authorization", "content-type")}
            return requests.request(method, proxy.target + self.path, data=body or None, headers=headers, timeout=60)

        def _relay(self, method: str) -> None:
            response = self._forward(method)
            self._reply(response.status_code, {"Content-Type": response.headers.get("content-type", "application/json")},
                        response.content)

        def _reply(self, status: int, headers: dict, body: bytes) -> None:
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler
