"""`catalog answer`: an Action's answer to the catalog, without hand-written HTTP (DESIGN.md section 9).

    catalog answer pass --message "owner set"              # the one result of $PAYLOAD
    catalog answer --list > batch.jsonl                    # a batch's results, one JSON line each
    catalog answer --results results.jsonl                 # a batch: {"service", "result", "message"?} lines

It reads `$PAYLOAD` (the dispatch's base64 `data`), and authenticates with `$SERVICE_CATALOG_TOKEN`
or, without it, with a GitHub Actions OIDC token requested for the server URL as audience
(`ACTIONS_ID_TOKEN_REQUEST_URL` / `ACTIONS_ID_TOKEN_REQUEST_TOKEN`, given to jobs with
`permissions: id-token: write`). The catalog's server checks that token (section 12).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
from typing import IO, Mapping
from urllib.parse import quote

import requests

from .errors import ConfigError, InvalidInput
from .outcomes import RESULT_VALUES

MAX_BULK = 1000  # PATCH /api/results takes at most this many answers
TIMEOUT = 30.0


def read_payload(environ: Mapping[str, str]) -> dict:
    """The decoded `data` of the dispatch, from $PAYLOAD."""
    text = environ.get("PAYLOAD")
    if not text:
        raise ConfigError("PAYLOAD is not set: give the step `env: PAYLOAD: ${{ github.event.client_payload.data }}`")
    try:
        data = json.loads(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        raise ConfigError("PAYLOAD is not the base64 JSON the catalog sends (client_payload.data)") from None
    if not isinstance(data, dict) or not isinstance(data.get("server"), dict):
        raise ConfigError("PAYLOAD has no `server`: is it client_payload.data of a catalog dispatch?")
    return data


def authorization(server_url: str, environ: Mapping[str, str], session: requests.Session) -> str:
    """`Bearer <token>`: $SERVICE_CATALOG_TOKEN, else an Actions OIDC token for `server_url`."""
    token = environ.get("SERVICE_CATALOG_TOKEN")
    if token:
        return f"Bearer {token}"
    request_url, request_token = environ.get("ACTIONS_ID_TOKEN_REQUEST_URL"), environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if not (request_url and request_token):
        raise ConfigError(
            "no SERVICE_CATALOG_TOKEN and no OIDC token: set the secret in the step's env, or give the job"
            " `permissions: id-token: write` so GitHub provides ACTIONS_ID_TOKEN_REQUEST_URL"
        )
    separator = "&" if "?" in request_url else "?"
    try:
        response = session.get(f"{request_url}{separator}audience={quote(server_url, safe='')}",
                               headers={"Authorization": f"bearer {request_token}", "Accept": "application/json"},
                               timeout=TIMEOUT)
    except requests.RequestException as error:
        raise ConfigError(f"the OIDC token request failed ({type(error).__name__})") from None
    try:
        value = response.json().get("value") if response.status_code == 200 else None
    except (ValueError, AttributeError):
        value = None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"the OIDC token request answered {response.status_code} without a token")
    return f"Bearer {value}"


def run_url(environ: Mapping[str, str]) -> str | None:
    """The link to this Action run, when running in one."""
    server, repository, run = (environ.get(name) for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    return f"{server}/{repository}/actions/runs/{run}" if server and repository and run else None


def answer_one(data: dict, result: str, message: str | None, url: str | None, *, header: str,
               session: requests.Session) -> dict:
    """PATCH the one result of a single-pair payload; the recorded result."""
    if "batch" in data:
        raise InvalidInput(f"this payload is a batch of {data['batch'].get('size')} results: answer them with --results FILE")
    _check_result(result)
    body = {"result": result, **({"message": message} if message else {}), **({"url": url} if url else {})}
    response = _call(session, "PATCH", data["server"]["url"] + data["server"]["endpoint"], header, body)
    return response


def answer_batch(data: dict, lines: list[dict], default_url: str | None, *, header: str,
                 session: requests.Session) -> tuple[list[dict], list[str]]:
    """Bulk-PATCH a batch's answers, given per service; (the outcomes, services left unanswered)."""
    batch = data.get("batch")
    server = data["server"]["url"]
    items = batch_results(data, header=header, session=session)
    by_service = {(item["service"] or {}).get("slug"): item["result"]["id"] for item in items}
    answers = []
    for number, line in enumerate(lines, 1):
        service = line.get("service")
        if service not in by_service:
            raise InvalidInput(f"line {number}: service {service!r} is not in batch {batch['id']}")
        _check_result(line.get("result"), f"line {number}: ")
        answer = {"id": by_service.pop(service), "result": line["result"]}
        for key in ("message", "url"):
            if line.get(key):
                answer[key] = line[key]
        if "url" not in answer and default_url:
            answer["url"] = default_url
        answers.append(answer)
    outcomes = []
    for start in range(0, len(answers), MAX_BULK):
        outcomes += _call(session, "PATCH", f"{server}/api/results", header, {"results": answers[start:start + MAX_BULK]})["results"]
    return outcomes, sorted(str(service) for service in by_service)


def batch_results(data: dict, *, header: str, session: requests.Session) -> list[dict]:
    """The batch's results [{result, service, endpoint}]: from the payload, or from the server when
    the payload left them out (over 64 KB)."""
    batch = data.get("batch")
    if not isinstance(batch, dict):
        raise InvalidInput("this payload is one result, not a batch: answer it with `catalog answer RESULT`")
    if batch.get("results") is not None:
        return batch["results"]
    return _call(session, "GET", f"{data['server']['url']}/api/batches/{batch['id']}", header)["results"]


def read_lines(source: IO[str], name: str) -> list[dict]:
    """JSON lines `{"service", "result", "message"?, "url"?}`; blank lines skipped."""
    lines = []
    for number, text in enumerate(source, 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError as error:
            raise InvalidInput(f"{name}:{number}: not JSON ({error.msg})") from None
        if not isinstance(line, dict) or set(line) - {"service", "result", "message", "url"}:
            raise InvalidInput(f'{name}:{number}: each line is an object {{"service", "result", "message"?, "url"?}}')
        lines.append(line)
    return lines


def _check_result(result: object, where: str = "") -> None:
    if result not in RESULT_VALUES:
        raise InvalidInput(f"{where}result must be one of {', '.join(RESULT_VALUES)}, not {result!r}")


def _call(session: requests.Session, method: str, url: str, header: str, body: dict | None = None) -> dict:
    try:
        response = session.request(method, url, json=body, headers={"Authorization": header}, timeout=TIMEOUT)
    except requests.RequestException as error:
        raise ConfigError(f"{method} {url} failed ({type(error).__name__})") from None
    try:
        document = response.json()
    except ValueError:
        document = None
    if response.status_code != 200 or not isinstance(document, dict):
        message = document.get("message") if isinstance(document, dict) else (response.text or "")[:200]
        raise InvalidInput(f"{method} {url} answered {response.status_code}: {message}")
    return document


def run_answer(result: str | None, *, message: str | None, url: str | None, results: str | None, listing: bool) -> int:
    """`catalog answer`: exit 0 when every answer was recorded, 1 otherwise (each refusal on stderr)."""
    if (result is not None) + (results is not None) + listing != 1:
        raise InvalidInput("give one of RESULT (one result), --results FILE (a batch) or --list")
    environ = os.environ
    data = read_payload(environ)
    session = requests.Session()
    header = authorization(data["server"]["url"], environ, session)
    if listing:
        for item in batch_results(data, header=header, session=session):
            print(json.dumps(item, separators=(",", ":")))
        return 0
    url = url or run_url(environ)
    if result is not None:
        row = answer_one(data, result.strip().lower(), message, url, header=header, session=session)
        print(f"result {row['id']}: {row['result']}", file=sys.stderr)
        return 0
    with (sys.stdin if results == "-" else open(results, encoding="utf-8")) as source:
        lines = read_lines(source, results)
    outcomes, unanswered = answer_batch(data, lines, url, header=header, session=session)
    refused = [outcome for outcome in outcomes if outcome["status"] != 200]
    for outcome in refused:
        print(f"catalog: result {outcome['id']}: {outcome['status']} {outcome['error']['message']}", file=sys.stderr)
    if unanswered:
        print(f"catalog: {len(unanswered)} results of the batch not answered (they will time out): "
              + ", ".join(unanswered[:10]) + (" ..." if len(unanswered) > 10 else ""), file=sys.stderr)
    print(f"answered {len(outcomes) - len(refused)} of {len(outcomes)} results", file=sys.stderr)
    return 1 if refused or unanswered else 0
