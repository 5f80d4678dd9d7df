"""GitHub Actions OIDC tokens: verified against the issuer's published keys, and whom they may answer for.

A token is accepted when it is signed (RS256 or ES256) by a key the issuer publishes in its JWKS
(found through `/.well-known/openid-configuration`, cached, fetched again when a token names a key
id not seen yet), its `iss` is the trusted issuer, its `aud` the expected audience, and its time
claims hold within a small leeway. It then may answer a result only when its `repository` claim is
the repository of that result's check (`answer_refusal`), and when catalog.yaml pins
`oidc: {workflow: PATH}`, only from that workflow. What it attests is kept with the result.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import jwt
import requests

from .errors import CatalogError, DispatchError
from .payload import owner_and_repo
from .schema import CatalogConfig
from .tokens import Identity

ALGORITHMS = ("RS256", "ES256")
LEEWAY_SECONDS = 60  # clocks of GitHub's runners and of this server may differ a little
# The claims a result keeps: which repository, workflow and run answered, at which commit, for whom.
ATTESTED_CLAIMS = ("repository", "workflow_ref", "run_id", "run_attempt", "sha", "actor")
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "repository")
_VERIFIED_KEPT = 4096  # verified tokens remembered until they expire (a matrix job answers many results with one)
FETCH_TIMEOUT_SECONDS = 10


class OidcRefused(CatalogError):
    """A token that is no valid OIDC token of the trusted issuer: `status` 401, or 503 when the issuer's
    keys cannot be fetched (the token may well be fine: try again)."""

    def __init__(self, message: str, status: int = 401):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class OidcIdentity(Identity):
    """A caller proven by an OIDC token: it holds no scope; it may answer its own repository's results."""

    claims: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def attestation(self) -> dict:
        """What the result keeps: the attested claims present in the token."""
        return {name: self.claims[name] for name in ATTESTED_CLAIMS if self.claims.get(name) is not None}

    def refusal(self, rule: dict, result_id: int) -> str | None:
        """Why this token may not answer the result (the store asks, in the answer's transaction), or None."""
        return answer_refusal(self, rule, f"result {result_id}")

    def batch_refusal(self, rule: dict, batch_id: int) -> str | None:
        """Why this token may not read the batch whose check's rule is `rule` (the same rule as answering it)."""
        return answer_refusal(self, rule, f"batch {batch_id}", doing="read")


def looks_like_jwt(token: str) -> bool:
    """A compact JWS (three base64url parts, a JSON header): never one of our `cat_` tokens."""
    return token.startswith("eyJ") and token.count(".") == 2


def _fetch_json(url: str) -> dict:
    response = requests.get(url, timeout=FETCH_TIMEOUT_SECONDS, headers={"Accept": "application/json"})
    response.raise_for_status()
    return response.json()


class OidcVerifier:
    """Checks OIDC tokens of one issuer for one audience. Thread-safe; keys and verified tokens are cached.

    `fetch(url) -> dict` is the seam to the issuer (tests give a local one); `refetch_after` bounds how
    often an unknown key id makes it fetch the JWKS again (a flood of made-up key ids costs one fetch
    per interval, not one each)."""

    def __init__(
        self, issuer: str, audience: str, *, fetch: Callable[[str], dict] = _fetch_json,
        leeway: int = LEEWAY_SECONDS, refetch_after: float = 30.0,
    ):
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.fetch = fetch
        self.leeway = leeway
        self.refetch_after = refetch_after
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()
        self._verified: OrderedDict[str, tuple[OidcIdentity, float]] = OrderedDict()

    def cached(self, token: str) -> OidcIdentity | None:
        """The identity of a token verified before and not expired since, else None."""
        found = self._verified.get(token)
        if found is None or found[1] + self.leeway < time.time():
            return None
        return found[0]

    def knows_key(self, token: str) -> bool:
        """True when verifying `token` needs no fetch (its key id is cached): cheap enough for an event loop."""
        try:
            return _unverified(token)[0].get("kid") in self._keys
        except OidcRefused:
            return True  # refused without a fetch

    def verify(self, token: str) -> OidcIdentity:
        """The token's identity, or OidcRefused saying exactly what is wrong with it."""
        header, unverified = _unverified(token)
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise OidcRefused(f"OIDC token: signed with {algorithm!r}; only {' and '.join(ALGORITHMS)} are accepted")
        issuer = unverified.get("iss")
        if issuer != self.issuer:
            # Said before looking for its key: a token of another issuer is refused for being that.
            raise OidcRefused(f"OIDC token: issuer {_short(issuer)} is not the trusted issuer {self.issuer!r}"
                              " (CATALOG_OIDC_ISSUER)")
        key = self._key(header.get("kid"))
        try:
            claims = jwt.decode(
                token, key.key, algorithms=[algorithm], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway, options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.InvalidSignatureError:
            raise OidcRefused("OIDC token: the signature does not verify with the issuer's key"
                              f" {header.get('kid')!r}") from None
        except jwt.ExpiredSignatureError:
            raise OidcRefused(f"OIDC token: expired at {_when(unverified.get('exp'))} (leeway {self.leeway} s);"
                              " request a fresh one") from None
        except jwt.ImmatureSignatureError:
            raise OidcRefused("OIDC token: not valid yet (its nbf or iat is in the future beyond the"
                              f" {self.leeway} s leeway)") from None
        except jwt.InvalidAudienceError:
            raise OidcRefused(f"OIDC token: audience {_short(unverified.get('aud'))} is not this server's"
                              f" {self.audience!r} (CATALOG_OIDC_AUDIENCE; request the token with"
                              " that audience)") from None
        except jwt.MissingRequiredClaimError as error:
            raise OidcRefused(f"OIDC token: the {error.claim!r} claim is missing") from None
        except jwt.PyJWTError as error:
            raise OidcRefused(f"OIDC token: refused ({error})") from None
        if not isinstance(claims.get("repository"), str) or "/" not in claims["repository"]:
            raise OidcRefused("OIDC token: the 'repository' claim is not \"owner/repo\"")
        identity = OidcIdentity(f"oidc:{claims['repository']}", claims=claims)
        self._remember(token, identity, float(claims["exp"]))
        return identity

    def _remember(self, token: str, identity: OidcIdentity, expires: float) -> None:
        with self._lock:
            self._verified[token] = (identity, expires)
            while len(self._verified) > _VERIFIED_KEPT:
                self._verified.popitem(last=False)

    def _key(self, kid: str | None) -> jwt.PyJWK:
        if not kid:
            raise OidcRefused("OIDC token: its header names no key id ('kid')")
        key = self._keys.get(kid)
        if key is not None:
            return key
        with self._lock:
            now = time.monotonic()
            if kid not in self._keys and (self._fetched_at is None or now - self._fetched_at >= self.refetch_after):
                self._keys = self._fetch_keys()
                self._fetched_at = now
        key = self._keys.get(kid)
        if key is None:
            raise OidcRefused(f"OIDC token: signed with key id {_short(kid)}, which issuer {self.issuer!r} does not publish")
        return key

    def _fetch_keys(self) -> dict[str, jwt.PyJWK]:
        """The issuer's signing keys by id: discovery document, then its jwks_uri."""
        where = f"{self.issuer}/.well-known/openid-configuration"
        try:
            discovery = self.fetch(where)
            jwks_uri = discovery.get("jwks_uri") if isinstance(discovery, dict) else None
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
                raise ValueError(f"{where} names no jwks_uri")
            where = jwks_uri
            document = self.fetch(jwks_uri)
        except (requests.RequestException, ValueError) as error:
            raise OidcRefused(f"cannot check the OIDC token now: fetching {where} failed ({_short(str(error), 200)});"
                              " try again", status=503) from None
        keys = {}
        for entry in (document.get("keys") or []) if isinstance(document, dict) else []:
            try:
                key = jwt.PyJWK(entry)
            except (jwt.PyJWTError, KeyError, ValueError, TypeError):
                continue  # a key of a type we do not use (or a broken one) does not spoil the others
            if key.key_id:
                keys[key.key_id] = key
        return keys


def _unverified(token: str) -> tuple[dict, dict]:
    """The header and claims of a compact JWS, read without checking anything: for the precise refusals
    before the one PyJWT decode that checks them (each PyJWT decode re-validates every base64 character
    in Python, ~0.2 ms: bench/bench_trust.py oidc measures the PATCH this sits on)."""
    try:
        header_part, claims_part, _ = token.split(".")
        header = json.loads(base64.urlsafe_b64decode(header_part + "=" * (-len(header_part) % 4)))
        claims = json.loads(base64.urlsafe_b64decode(claims_part + "=" * (-len(claims_part) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise OidcRefused(f"OIDC token: not a well-formed JWT ({type(error).__name__})") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise OidcRefused("OIDC token: not a well-formed JWT (its header or claims are not JSON objects)")
    if not isinstance(header.get("kid", ""), str):  # a key id is looked up in a dict: a list or object cannot be
        raise OidcRefused("OIDC token: not a well-formed JWT (its header's 'kid' is not text)")
    return header, claims


@functools.lru_cache(maxsize=8)
def _catalog_rules(stored_config: str | None) -> tuple[str | None, str | None]:
    """(defaults.repository, oidc.workflow) of the stored catalog.yaml; parsed once per version of it."""
    config = CatalogConfig.from_stored(json.loads(stored_config) if stored_config else None)
    return config.defaults.repository, config.oidc.workflow


def answer_refusal(identity: OidcIdentity, rule: dict, subject: str, doing: str = "answer") -> str | None:
    """Why this OIDC identity may not `doing` `subject` ("answer" "result 7", "read" "batch 3") of the check
    whose rule is `rule` (its slug and `repository`, the stored catalog.yaml), or None when it may."""
    default_repository, pinned = _catalog_rules(rule.get("catalog_config"))
    repository = rule.get("repository") or default_repository
    claimed = identity.claims["repository"]
    if not repository:
        return (f"{subject} is of check {rule['check']!r}, which names no repository, so no OIDC token"
                f" may {doing} it; set `repository` in the check or catalog.yaml, or {doing} with an API token")
    try:
        expected = "/".join(owner_and_repo(repository))
    except DispatchError:
        return f"check {rule['check']!r} has repository {repository!r}, which is not \"owner/repo\""
    if claimed.lower() != expected.lower():  # GitHub's names are case-insensitive
        return (f"an OIDC token of repository {claimed!r} may not {doing} {subject}: its check"
                f" {rule['check']!r} runs in {expected!r}")
    if pinned is not None:
        workflow = _workflow_of(identity.claims.get("workflow_ref"), claimed)
        if workflow is None or not (workflow == pinned or ("@" not in pinned and workflow.split("@")[0] == pinned)):
            return (f"an OIDC token from workflow {workflow or 'unknown'!r} may not {doing} {subject}:"
                    f" catalog.yaml pins oidc.workflow to {pinned!r}")
    return None


def _workflow_of(workflow_ref: object, repository: str) -> str | None:
    """`acme/checks/.github/workflows/h.yml@refs/heads/main` -> `.github/workflows/h.yml@refs/heads/main`."""
    if not isinstance(workflow_ref, str) or not workflow_ref.lower().startswith(repository.lower() + "/"):
        return None
    return workflow_ref[len(repository) + 1:]


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _when(epoch: object) -> str:
    if not isinstance(epoch, (int, float)):
        return "an unknown time"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
