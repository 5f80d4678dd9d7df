"""Helpers for the API tests: a real uvicorn server on loopback, tokens, and results to answer."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import uvicorn

from reconciler.clock import Clock
from reconciler.store import Database
from reconciler.tokens import create_token
from store_support import new_result  # noqa: F401 (the API tests' results are made as the product makes them)


@contextmanager
def live_server(app, *, http: str = "httptools") -> Iterator[str]:
    """Serve `app` with uvicorn in a thread on a free loopback port; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, loop="asyncio", http=http, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def make_token(store: Database, *scopes: str, name: str | None = None) -> str:
    return create_token(store, name or "-".join(s.replace(":", "-") for s in scopes) or "t", list(scopes), now=Clock().now())


def auth(token: str, scheme: str = "Token") -> dict:
    return {"Authorization": f"{scheme} {token}"}
