"""API tokens: created once and shown once, stored as sha256 hashes, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from .clock import Clock, format_time, parse_time
from .errors import InvalidInput
from .store import Database

SCOPES = ("read", "results:write", "checks:run", "sync", "admin")
TOKEN_PREFIX = "cat_"
MAX_NAME_LENGTH = 100
# last_used_at is written at most this often per token, so a busy Action does not write on every call.
TOUCH_INTERVAL = timedelta(minutes=1)


@dataclass(frozen=True)
class Identity:
    """Who is calling: a token's name and scopes, or anonymous (name None, no scopes)."""

    name: str | None
    scopes: frozenset[str] = frozenset()

    @property
    def authenticated(self) -> bool:
        return self.name is not None

    def has(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


ANONYMOUS = Identity(None)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def check_scopes(scopes: list[str] | tuple[str, ...]) -> list[str]:
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown:
        raise InvalidInput(f"unknown scope {unknown[0]!r}: use one of {', '.join(SCOPES)}")
    if not scopes:
        raise InvalidInput(f"a token needs at least one scope: {', '.join(SCOPES)}")
    return sorted(set(scopes), key=SCOPES.index)


def create_token(store: Database, name: str, scopes: list[str], *, now: datetime) -> str:
    """Database a new token and return its secret, which is never stored and cannot be shown again."""
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME_LENGTH or any(ch.isspace() or not ch.isprintable() for ch in name):
        raise InvalidInput(f"token name must be 1..{MAX_NAME_LENGTH} printable characters without spaces, not {name!r}")
    scopes = check_scopes(scopes)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    store.tokens.insert(name, hash_token(secret), json.dumps(scopes), format_time(now))
    return secret


def list_tokens(store: Database) -> list[dict]:
    """Every token with its scopes and times; never the secret nor its hash."""
    return [
        {
            "name": row["name"],
            "scopes": json.loads(row["scopes"]),
            "created_at": row["created_at"],
            "last_used_at": row["last_used_at"],
            "revoked_at": row["revoked_at"],
        }
        for row in store.tokens.list()
    ]


def revoke_token(store: Database, name: str, *, now: datetime) -> str | None:
    """Revoke the token called `name`; the time it was revoked already, if it was (NotFound: no such token)."""
    return store.tokens.revoke(name, format_time(now))


def verify_token(store: Database, secret: str, *, now: datetime) -> Identity | None:
    """The identity of a live token, or None; records its last use (at most once a minute)."""
    if not secret:
        return None
    digest = hash_token(secret)
    row = store.tokens.by_hash(digest)
    # The lookup is by hash; comparing the hashes again in constant time costs nothing and keeps
    # the check independent of how the database compares strings.
    if row is None or not hmac.compare_digest(row["token_hash"], digest) or row["revoked_at"] is not None:
        return None
    if row["last_used_at"] is None or now - parse_time(row["last_used_at"]) >= TOUCH_INTERVAL:
        store.tokens.touch(row["id"], format_time(now))
    return Identity(row["name"], frozenset(json.loads(row["scopes"])))


class TokenVerifier:
    """`verify_token` with a short in-memory cache of good tokens, for a cheap check per request.

    A revoked token keeps working for at most `cache_seconds` in a server that saw it recently.
    Bad tokens are never cached, so a token created a moment ago works at once.
    """

    def __init__(self, store: Database, clock: Clock | None = None, cache_seconds: float = 5.0):
        self.store = store
        self.clock = clock or Clock()
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Identity]] = {}
        self._lock = threading.Lock()

    def cached(self, secret: str) -> Identity | None:
        """The identity when this token was verified in the last few seconds, else None."""
        entry = self._cache.get(hash_token(secret))
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        return None

    def verify(self, secret: str) -> Identity | None:
        identity = verify_token(self.store, secret, now=self.clock.now())
        if identity is not None:
            with self._lock:
                if len(self._cache) > 10_000:  # many distinct tokens: start over rather than grow
                    self._cache.clear()
                self._cache[hash_token(secret)] = (time.monotonic() + self.cache_seconds, identity)
        return identity
