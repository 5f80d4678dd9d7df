"""API tokens: only sha256 hashes of the secrets are stored (reconciler/tokens.py makes and checks them)."""

from __future__ import annotations

from ..errors import Conflict, NotFound


class TokenRepository:
    def __init__(self, db):
        self.db = db

    def insert(self, name: str, token_hash: str, scopes: str, created_at: str) -> None:
        """A new token; a revoked token's name may be taken again. The revoked token stays listed, as
        `NAME (revoked AT)` (a name no token can be given: it has spaces), with its scopes and times."""
        with self.db.transaction(serialize="tokens") as session:
            revoked = session.one("SELECT revoked_at FROM api_tokens WHERE name = ?", (name,))
            if revoked is not None and revoked["revoked_at"] is None:
                raise Conflict(f"a token named {name!r} already exists; revoke it first or pick another name")
            if revoked is not None:
                session.run("UPDATE api_tokens SET name = name || ' (revoked ' || revoked_at || ')' WHERE name = ?", (name,))
            session.run(
                "INSERT INTO api_tokens (name, token_hash, scopes, created_at) VALUES (?, ?, ?, ?)",
                (name, token_hash, scopes, created_at),
            )

    def list(self) -> list[dict]:
        with self.db.session() as session:
            return session.all(
                "SELECT id, name, scopes, created_at, last_used_at, revoked_at FROM api_tokens ORDER BY name"
            )

    def revoke(self, name: str, revoked_at: str) -> str | None:
        """Revoke a token; the time it was revoked before, if it was (revoking again changes nothing)."""
        with self.db.transaction() as session:
            row = session.one("SELECT revoked_at FROM api_tokens WHERE name = ?", (name,))
            if row is None:
                raise NotFound(f"no token named {name!r}")
            if row["revoked_at"] is None:
                session.run("UPDATE api_tokens SET revoked_at = ? WHERE name = ?", (revoked_at, name))
        return row["revoked_at"]

    def by_hash(self, token_hash: str) -> dict | None:
        with self.db.session() as session:
            return session.one(
                "SELECT id, name, token_hash, scopes, last_used_at, revoked_at FROM api_tokens WHERE token_hash = ?",
                (token_hash,),
            )

    def touch(self, token_id: int, used_at: str) -> None:
        with self.db.transaction() as session:
            session.run("UPDATE api_tokens SET last_used_at = ? WHERE id = ?", (used_at, token_id))
