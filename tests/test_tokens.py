"""API tokens: shown once, stored hashed, scoped, revocable; and the `catalog token` commands."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest

from reconciler.clock import FakeClock
from reconciler.errors import Conflict, InvalidInput, NotFound
from reconciler.store import Database, open_database
from reconciler.tokens import (
    Identity,
    TokenVerifier,
    create_token,
    hash_token,
    list_tokens,
    revoke_token,
    verify_token,
)


@pytest.fixture
def clock():
    return FakeClock()


def test_token_is_stored_only_as_its_hash(store, clock):
    secret = create_token(store, "ci", ["results:write"], now=clock.now())
    assert secret.startswith("cat_") and len(secret) > 40
    rows = store.tokens.list()
    assert [row["name"] for row in rows] == ["ci"]
    assert store.tokens.by_hash(hash_token(secret))["name"] == "ci"
    assert secret not in repr(rows)
    assert "token_hash" not in list_tokens(store)[0]


def test_verify_gives_name_and_scopes_and_admin_has_every_scope(store, clock):
    writer = create_token(store, "ci", ["results:write", "read"], now=clock.now())
    admin = create_token(store, "root", ["admin"], now=clock.now())
    identity = verify_token(store, writer, now=clock.now())
    assert identity == Identity("ci", frozenset({"read", "results:write"}))
    assert identity.has("read") and not identity.has("sync")
    assert all(verify_token(store, admin, now=clock.now()).has(scope) for scope in ("read", "sync", "checks:run"))


def test_unknown_empty_and_revoked_tokens_do_not_verify(store, clock):
    secret = create_token(store, "ci", ["read"], now=clock.now())
    assert verify_token(store, "cat_nope", now=clock.now()) is None
    assert verify_token(store, "", now=clock.now()) is None
    revoke_token(store, "ci", now=clock.now())
    assert verify_token(store, secret, now=clock.now()) is None
    assert list_tokens(store)[0]["revoked_at"] is not None


def test_last_used_is_recorded_at_most_once_a_minute(store, clock):
    secret = create_token(store, "ci", ["read"], now=clock.now())
    assert list_tokens(store)[0]["last_used_at"] is None
    first = clock.now()
    verify_token(store, secret, now=first)
    clock.advance(30)
    verify_token(store, secret, now=clock.now())
    assert list_tokens(store)[0]["last_used_at"].startswith(first.strftime("%Y-%m-%dT%H:%M:%S"))
    clock.advance(31)
    verify_token(store, secret, now=clock.now())
    assert list_tokens(store)[0]["last_used_at"].startswith(clock.now().strftime("%Y-%m-%dT%H:%M:%S"))


@pytest.mark.parametrize(
    ("name", "scopes", "fragment"),
    [
        ("ci", ["write"], "unknown scope 'write'"),
        ("ci", [], "at least one scope"),
        ("", ["read"], "token name"),
        ("two words", ["read"], "token name"),
        ("x" * 101, ["read"], "token name"),
    ],
)
def test_bad_names_and_scopes_are_refused(store, clock, name, scopes, fragment):
    with pytest.raises(InvalidInput, match=fragment):
        create_token(store, name, scopes, now=clock.now())
    assert list_tokens(store) == []


def test_a_live_name_cannot_be_reused_but_a_revoked_one_can(store, clock):
    old = create_token(store, "ci", ["read"], now=clock.now())
    with pytest.raises(Conflict, match="already exists"):
        create_token(store, "ci", ["read"], now=clock.now())
    assert verify_token(store, old, now=clock.now()) is not None
    assert revoke_token(store, "ci", now=clock.now()) is None
    revoked_at = list_tokens(store)[0]["revoked_at"]
    assert revoke_token(store, "ci", now=clock.now()) == revoked_at  # again: said, and nothing changes
    new = create_token(store, "ci", ["sync"], now=clock.now())
    assert verify_token(store, old, now=clock.now()) is None
    assert verify_token(store, new, now=clock.now()).scopes == {"sync"}
    # the revoked token stays listed for an auditor, under a name no token can be given
    listed = {row["name"]: row for row in list_tokens(store)}
    assert listed[f"ci (revoked {revoked_at})"]["scopes"] == ["read"]
    assert listed["ci"]["revoked_at"] is None and listed["ci"]["scopes"] == ["sync"]


def test_revoking_an_unknown_token_is_not_found(store, clock):
    with pytest.raises(NotFound, match="no token named 'ghost'"):
        revoke_token(store, "ghost", now=clock.now())


def test_verifier_caches_good_tokens_briefly_and_never_bad_ones(store, clock):
    verifier = TokenVerifier(store, clock, cache_seconds=60)
    assert verifier.verify("cat_unknown") is None
    assert verifier.cached("cat_unknown") is None
    secret = create_token(store, "ci", ["read"], now=clock.now())
    assert verifier.cached(secret) is None
    assert verifier.verify(secret).name == "ci"
    assert verifier.cached(secret).name == "ci"
    expired = TokenVerifier(store, clock, cache_seconds=0)
    expired.verify(secret)
    assert expired.cached(secret) is None


# -- the real CLI ----------------------------------------------------------------------------------


def _catalog(home, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CATALOG_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "reconciler.cli", *args], capture_output=True, text=True, env=env, timeout=60)


def test_cli_creates_lists_and_revokes_tokens(tmp_path):
    home = tmp_path / "home"
    created = _catalog(home, "token", "create", "deploy-bot", "--scope", "results:write", "--scope", "read")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert created.stdout == secret + "\n"  # the token alone, ready for $(...)
    assert verify_token(open_database(home / "catalog.db"), secret, now=FakeClock().now() + timedelta(days=1)).name == "deploy-bot"

    listed = _catalog(home, "token", "list")
    assert listed.returncode == 0
    assert "deploy-bot" in listed.stdout and "read,results:write" in listed.stdout
    assert secret not in listed.stdout and hash_token(secret) not in listed.stdout

    assert _catalog(home, "token", "revoke", "deploy-bot").returncode == 0
    line = _catalog(home, "token", "list").stdout.splitlines()[1]
    assert line.startswith("deploy-bot") and line.split()[-1].endswith("Z")  # the revoked time


def test_cli_reports_bad_scope_and_unknown_name_in_one_line(tmp_path):
    home = tmp_path / "home"
    bad = _catalog(home, "token", "create", "x", "--scope", "everything")
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.strip().startswith("catalog: unknown scope 'everything'")
    assert len(bad.stderr.strip().splitlines()) == 1
    missing = _catalog(home, "token", "revoke", "ghost")
    assert missing.returncode == 1 and "no token named 'ghost'" in missing.stderr
