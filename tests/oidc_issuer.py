"""A stand-in for GitHub's OIDC issuer on loopback: its own keys, a discovery document, a JWKS, and
tokens with the claim names GitHub Actions puts in them (an edge of the outside world, so a fake).

It also plays the runner's token request endpoint (`ACTIONS_ID_TOKEN_REQUEST_URL` = `token_request_url`):
`GET ...?audience=A` with `Authorization: bearer <ACTIONS_ID_TOKEN_REQUEST_TOKEN>` answers
`{"value": <a token for audience A of repository `actions_repository`>}`, as GitHub does for a job with
`permissions: id-token: write`."""

from __future__ import annotations

import json
import threading
from urllib.parse import parse_qs, urlsplit
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def new_key(kind: str = "RS256"):
    if kind == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class OidcIssuer:
    """Serves `/.well-known/openid-configuration` and `/jwks` at `url`; `mint(...)` signs tokens."""

    def __init__(self):
        self.keys: dict[str, tuple[str, object]] = {}  # kid -> (alg, private key), all published
        self.add_key("key-rs", "RS256")
        self.add_key("key-es", "ES256")
        self.fetches = 0  # JWKS fetches seen, to show caching
        self.request_token = "runner-request-secret"  # ACTIONS_ID_TOKEN_REQUEST_TOKEN
        self.actions_repository = "acme-rockets/health-checks"  # whose run asks for tokens
        self.audiences: list[str] = []  # the audiences tokens were requested for
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks"}
                elif self.path == "/jwks":
                    issuer.fetches += 1
                    body = issuer.jwks()
                elif self.path.startswith("/actions-token"):
                    if self.headers.get("Authorization") != f"bearer {issuer.request_token}":
                        self.send_error(401)
                        return
                    audience = parse_qs(urlsplit(self.path).query).get("audience", [None])[0]
                    issuer.audiences.append(audience)
                    token = issuer.mint(repository=issuer.actions_repository, **({"aud": audience} if audience else {}))
                    body = {"count": 1, "value": token}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def token_request_url(self) -> str:
        """ACTIONS_ID_TOKEN_REQUEST_URL (GitHub's has a query string of its own)."""
        return f"{self.url}/actions-token?api-version=2.0"

    def __enter__(self) -> "OidcIssuer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_key(self, kid: str, alg: str = "RS256") -> None:
        self.keys[kid] = (alg, new_key(alg))

    def jwks(self) -> dict:
        keys = []
        for kid, (alg, private) in self.keys.items():
            algorithm = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
            key = json.loads(algorithm.to_jwk(private.public_key()))
            keys.append({**key, "kid": kid, "alg": alg, "use": "sig"})
        return {"keys": keys}

    def claims(self, repository: str = "acme-rockets/health-checks", **overrides) -> dict:
        """GitHub's claims for a run of `.github/workflows/health.yml` on main, valid for five minutes."""
        now = int(time.time())
        named = repository
        repository = repository or "acme-rockets/health-checks"  # None: the claim is left out (below)
        claims = {
            "jti": f"jti-{now}-{id(overrides)}",
            "sub": f"repo:{repository}:ref:refs/heads/main",
            "aud": "http://catalog.test",
            "ref": "refs/heads/main",
            "sha": "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c",
            "repository": repository,
            "repository_owner": repository.split("/")[0],
            "repository_id": "123456",
            "repository_visibility": "private",
            "run_id": "9876543210",
            "run_number": "42",
            "run_attempt": "1",
            "actor": "octocat",
            "actor_id": "1",
            "workflow": "Health checks",
            "workflow_ref": f"{repository}/.github/workflows/health.yml@refs/heads/main",
            "job_workflow_ref": f"{repository}/.github/workflows/health.yml@refs/heads/main",
            "event_name": "repository_dispatch",
            "ref_type": "branch",
            "runner_environment": "github-hosted",
            "iss": self.url,
            "nbf": now - 5,
            "iat": now - 5,
            "exp": now + 300,
        }
        claims.update(overrides, repository=named)
        return {key: value for key, value in claims.items() if value is not None}

    def mint(self, kid: str = "key-rs", key=None, alg: str | None = None, **claims) -> str:
        """A signed token (`key` overrides the published key of `kid`: a forged signature)."""
        published_alg, private = self.keys.get(kid, ("RS256", None))
        return jwt.encode(self.claims(**claims), key or private, algorithm=alg or published_alg, headers={"kid": kid})
