"""API tokens: stored as hashes, revoked, last used."""

from __future__ import annotations

from ..errors import Conflict, NotFound


class TokenQueries:
    """The Store's methods for API tokens."""

    # -- tokens -------------------------------------------------------------------------------
    # API tokens (reconciler/tokens.py): only sha256 hashes of the secrets are ever stored.

    def insert_token(self, name: str, token_hash: str, scopes: str, created_at: str) -> None:
        """A new token; a revoked token's name may be taken again (its row is reused)."""
        with self.transaction() as conn:
            existing = conn.execute("SELECT revoked_at FROM api_tokens WHERE name = ?", (name,)).fetchone()
            if existing is not None and existing["revoked_at"] is None:
                raise Conflict(f"a token named {name!r} already exists; revoke it first or pick another name")
            conn.execute(
                "INSERT INTO api_tokens (name, token_hash, scopes, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash, scopes = excluded.scopes,"
                " created_at = excluded.created_at, last_used_at = NULL, revoked_at = NULL",
                (name, token_hash, scopes, created_at),
            )

    def list_token_rows(self) -> list[dict]:
        return self.connection.execute(
            "SELECT id, name, scopes, created_at, last_used_at, revoked_at FROM api_tokens ORDER BY name"
        ).fetchall()

    def revoke_token(self, name: str, revoked_at: str) -> None:
        with self.transaction() as conn:
            row = conn.execute(
                "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, ?) WHERE name = ? RETURNING id",
                (revoked_at, name),
            ).fetchone()
        if row is None:
            raise NotFound(f"no token named {name!r}")

    def token_by_hash(self, token_hash: str) -> dict | None:
        return self.connection.execute(
            "SELECT id, name, token_hash, scopes, last_used_at, revoked_at FROM api_tokens WHERE token_hash = ?",
            (token_hash,),
        ).fetchone()

    def touch_token(self, token_id: int, used_at: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?", (used_at, token_id))
