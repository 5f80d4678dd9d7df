"""`catalog answer`: an Action's answer to the catalog, without hand-written HTTP (DESIGN.md section 9).

    catalog answer pass --message "owner set"              # the one result of $PAYLOAD
    catalog answer --list > batch.jsonl                    # a batch's results, one JSON line each
    catalog answer --results results.jsonl                 # a batch: {"service", "result", "message"?} lines

It reads `$PAYLOAD` (the dispatch's base64 `data`), and authenticates with `$SERVICE_CATALOG_TOKEN`
or, without it, with a GitHub Actions OIDC token requested for the server URL as audience
(`ACTIONS_ID_TOKEN_REQUEST_URL` / `ACTIONS_ID_TOKEN_REQUEST_TOKEN`, given to jobs with
`permissions: id-token: write`). The catalog's server checks that token (section 12).

Requests that fail for now are tried again (`catalog_client`). That is safe: a result is finished by
one answer only, and every later answer gets 409. So a 409 that answers a retry, after an attempt whose
response was lost (a connection error, a timeout, a 5xx), counts as recorded: that attempt finished the
result. (It cannot tell that attempt from another answer finishing the result in the seconds between; the
catalog keeps whichever came first.) A 409 whose code is `timed_out` is never counted so: the answer came
after the check's timeout, and nothing was recorded.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
from dataclasses import dataclass, field
from typing import IO, Mapping

import requests

from .answer_limits import MAX_BULK_ANSWERS, MAX_BULK_BODY_BYTES, MAX_MESSAGE_BYTES
from .catalog_client import CatalogClient, authorization, error_code, retry_from
from .errors import CatalogError, ConfigError, InvalidInput, TooLate
from .outcomes import FINISHED_STATUSES, parse_result

LINE_FIELDS = ("service", "result", "message", "url")
BULK_HEAD, BULK_TAIL = b'{"results":[', b"]}"  # a bulk body around its answers, joined by commas


def read_payload(environ: Mapping[str, str]) -> dict:
    """The decoded `data` of the dispatch, from $PAYLOAD; ConfigError saying what is wrong with it."""
    text = environ.get("PAYLOAD")
    if not text:
        raise ConfigError("PAYLOAD is not set: give the step `env: PAYLOAD: ${{ github.event.client_payload.data }}`")
    try:
        data = json.loads(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        raise ConfigError("PAYLOAD is not the base64 JSON the catalog sends (client_payload.data)") from None
    if not isinstance(data, dict) or not isinstance(data.get("server"), dict):
        raise ConfigError("PAYLOAD has no `server`: is it client_payload.data of a catalog dispatch?")
    _check_server(data["server"])
    if "batch" in data:
        _check_batch(data["batch"])
    return data


def _check_server(server: dict) -> None:
    url, endpoint = server.get("url"), server.get("endpoint")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"PAYLOAD's server.url must be the catalog's http(s) URL, not {_brief(url)}")
    if not isinstance(endpoint, str) or not endpoint.startswith("/"):
        raise ConfigError(f"PAYLOAD's server.endpoint must be a path such as /api/results/29/, not {_brief(endpoint)}")


def _check_batch(batch: object) -> None:
    batch_id = batch.get("id") if isinstance(batch, dict) else None
    if isinstance(batch_id, bool) or not isinstance(batch_id, int):
        raise ConfigError(f"PAYLOAD's batch must be an object {{id, size, results?}} with a number as id, not {_brief(batch)}")
    if not isinstance(batch.get("results"), (list, type(None))):
        raise ConfigError(f"PAYLOAD's batch.results must be a list, not {_brief(batch['results'])}")


def run_url(environ: Mapping[str, str]) -> str | None:
    """The link to this Action run, when running in one."""
    server, repository, run = (environ.get(name) for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    return f"{server}/{repository}/actions/runs/{run}" if server and repository and run else None


def _recorded_before(status: int, body: object) -> bool:
    """Whether a retry's answer (`body`: the reply's, or one bulk item's) says an earlier attempt whose
    response was lost finished the result: a 409, unless its code says the answer came after the
    check's timeout (`timed_out`), when nothing was recorded."""
    return status == 409 and error_code(body) != TooLate.code


def answer_one(data: dict, result: str, message: str | None, url: str | None, client: CatalogClient) -> dict | None:
    """PATCH the one result of a single-pair payload: the recorded result, or None when a retry found it
    recorded by an earlier attempt whose response was lost."""
    if "batch" in data:
        raise InvalidInput(f"this payload is a batch of {data['batch'].get('size')} results: answer them with --results FILE")
    body = {"result": parse_result(result), **({"message": message} if message else {}), **({"url": url} if url else {})}
    reply = client.request("PATCH", data["server"]["endpoint"], _encode(body))
    if reply.maybe_delivered and _recorded_before(reply.status, reply.document):
        return None
    return reply.json()


@dataclass(frozen=True)
class Line:
    """One line of --results: the answer for one service of the batch."""

    number: int
    service: str | None  # None for a check with `services: none`
    answer: dict  # result (as parse_result reads it), message?, url?


def read_lines(source: IO[str], name: str) -> list[Line]:
    """JSON lines `{"service", "result", "message"?, "url"?}`; blank lines skipped."""
    lines = []
    for number, text in enumerate(source, 1):
        if not text.strip():
            continue
        try:
            fields = json.loads(text)
        except ValueError as error:
            raise InvalidInput(f"{name}:{number}: not JSON ({error.msg})") from None
        if not isinstance(fields, dict) or set(fields) - set(LINE_FIELDS):
            raise InvalidInput(f'{name}:{number}: each line is an object {{"service", "result", "message"?, "url"?}}')
        lines.append(_line(number, fields))
    return lines


def _line(number: int, fields: dict) -> Line:
    service = fields.get("service")
    if service is not None and not isinstance(service, str):
        raise InvalidInput(f"line {number}: 'service' must be a service's slug (null for `services: none`),"
                           f" not {_brief(service)}")
    try:
        result = parse_result(fields.get("result"))
    except InvalidInput as error:
        raise InvalidInput(f"line {number}: {error}") from None
    return Line(number, service, {"result": result, **{key: fields[key] for key in ("message", "url") if fields.get(key)}})


@dataclass
class BatchReport:
    """What became of a batch's answers."""

    outcomes: list[dict] = field(default_factory=list)  # the server's, one per answer sent: {id, status, result | error}
    recorded_earlier: set[int] = field(default_factory=set)  # ids whose retry got 409 after a lost response
    unanswered: list[str] = field(default_factory=list)  # services given no answer, their results still open
    finished: list[str] = field(default_factory=list)  # services given no answer, their results already finished
    stopped: str | None = None  # why a request after the first was refused whole: its answers and the rest unsent
    unsent: int = 0  # the answers of that request and of those after it


def answer_batch(data: dict, lines: list[Line], default_url: str | None, client: CatalogClient) -> BatchReport:
    """Bulk-PATCH a batch's answers, given per service, in as many requests as the server's limits need."""
    ids = result_ids(batch_results(data, client))
    report = BatchReport()
    answers = encoded_answers(lines, ids, data["batch"]["id"], default_url)
    for number, body in enumerate(bulk_bodies(answers)):
        try:
            reply = client.request("PATCH", "/api/results", body)
            outcomes = reply.json().get("results")
        except (ConfigError, InvalidInput) as error:
            if number == 0:
                raise  # nothing recorded: the error says it all
            # the earlier requests' answers are recorded: say so, and how many were not (a split batch)
            report.stopped, report.unsent = str(error), len(answers) - len(report.outcomes)
            break
        if not isinstance(outcomes, list):
            raise InvalidInput(f"{reply.request} answered without its list of results")
        if reply.maybe_delivered:
            report.recorded_earlier |= {outcome["id"] for outcome in outcomes
                                        if _recorded_before(outcome["status"], outcome)}
        report.outcomes += outcomes
    answered = {line.service for line in lines}
    left = [service for service in ids if service not in answered]
    report.unanswered, report.finished = _open_and_finished(data, left, client) if left else ([], [])
    return report


def batch_results(data: dict, client: CatalogClient) -> list:
    """The batch's results [{result, service, endpoint}]: from the payload, or from the server when
    the payload left them out (over 64 KB)."""
    batch = data.get("batch")
    if batch is None:
        raise InvalidInput("this payload is one result, not a batch: answer it with `catalog answer RESULT`")
    if batch.get("results") is not None:
        return batch["results"]
    return client.request("GET", f"/api/batches/{batch['id']}").json().get("results")


def result_ids(items: object) -> dict[str | None, int]:
    """{service slug, None for `services: none`: result id} of a batch's results; ConfigError when
    they are not the list the catalog sends."""
    if not isinstance(items, list):
        raise ConfigError(f"the batch's results must be a list, not {_brief(items)}")
    ids = {}
    for index, item in enumerate(items):
        result, service = (item.get("result"), item.get("service")) if isinstance(item, dict) else (None, None)
        result_id = result.get("id") if isinstance(result, dict) else None
        slug = service.get("slug") if isinstance(service, dict) else None
        if isinstance(result_id, bool) or not isinstance(result_id, int) or not (service is None or isinstance(slug, str)):
            raise ConfigError(f"the batch's results[{index}] must be {{result: {{id}}, service: {{slug}} or null,"
                              f" endpoint}}, not {_brief(item)}")
        ids[slug] = result_id
    return ids


def encoded_answers(lines: list[Line], ids: dict[str | None, int], batch_id: int, default_url: str | None) -> list[bytes]:
    """Each line's answer for its result, as JSON; InvalidInput for a service not in the batch, given
    twice, or an answer larger than a request may carry."""
    first_line: dict[str | None, int] = {}
    answers = []
    for line in lines:
        if line.service in first_line:
            raise InvalidInput(f"line {line.number}: service {line.service!r} is given twice"
                               f" (first on line {first_line[line.service]})")
        if line.service not in ids:
            raise InvalidInput(f"line {line.number}: service {line.service!r} is not in batch {batch_id}")
        first_line[line.service] = line.number
        answer = {"id": ids[line.service], **line.answer}
        if "url" not in answer and default_url:
            answer["url"] = default_url
        encoded = _encode(answer)
        if len(BULK_HEAD) + len(encoded) + len(BULK_TAIL) > MAX_BULK_BODY_BYTES:
            raise InvalidInput(f"line {line.number}: the answer is {len(encoded)} bytes as JSON, more than a request"
                               f" may carry; 'message' is at most {MAX_MESSAGE_BYTES} bytes")
        answers.append(encoded)
    return answers


def bulk_bodies(answers: list[bytes]) -> list[bytes]:
    """The encoded answers as PATCH /api/results bodies, each within the server's limits: at most
    MAX_BULK_ANSWERS answers and MAX_BULK_BODY_BYTES bytes."""
    bodies, chunk, size = [], [], 0
    for answer in answers:
        if chunk and (len(chunk) == MAX_BULK_ANSWERS or _bulk_size(size + len(answer), len(chunk) + 1) > MAX_BULK_BODY_BYTES):
            bodies.append(BULK_HEAD + b",".join(chunk) + BULK_TAIL)
            chunk, size = [], 0
        chunk.append(answer)
        size += len(answer)
    if chunk:
        bodies.append(BULK_HEAD + b",".join(chunk) + BULK_TAIL)
    return bodies


def _bulk_size(answer_bytes: int, count: int) -> int:
    """The bytes of a bulk body holding `count` answers of `answer_bytes` in all."""
    return len(BULK_HEAD) + answer_bytes + (count - 1) + len(BULK_TAIL)


def _open_and_finished(data: dict, services: list[str | None], client: CatalogClient) -> tuple[list[str], list[str]]:
    """(still open, already finished) among these services of the batch, by their results' status now
    (the server's list; the payload's is as dispatched). All still open when the server cannot say."""
    try:
        items = client.request("GET", f"/api/batches/{data['batch']['id']}").json().get("results")
        result_ids(items)
    except CatalogError:
        items = []
    status = {(item["service"] or {}).get("slug"): item["result"].get("status") for item in items}
    finished = [service for service in services if status.get(service) in FINISHED_STATUSES]
    still_open = [str(service) for service in services if service not in finished]
    return sorted(still_open), sorted(f"{service} ({status[service]})" for service in finished)


def _encode(document: dict) -> bytes:
    """JSON as sent: compact, ASCII (so its length is the bytes the server counts)."""
    return json.dumps(document, separators=(",", ":")).encode("ascii")


def _brief(value: object) -> str:
    """A value for a message: its repr, cut to one short line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def run_answer(result: str | None, *, message: str | None, url: str | None, results: str | None, listing: bool) -> int:
    """`catalog answer`: exit 0 when every answer was recorded, 1 otherwise (each refusal on stderr)."""
    if (result is not None) + (results is not None) + listing != 1:
        raise InvalidInput("give one of RESULT (one result), --results FILE (a batch) or --list")
    environ = os.environ
    data = read_payload(environ)
    lines = None
    if results is not None:
        with (sys.stdin if results == "-" else open(results, encoding="utf-8")) as source:
            lines = read_lines(source, results)
    retry, session = retry_from(environ), requests.Session()
    client = CatalogClient(data["server"]["url"], authorization(data["server"]["url"], environ, session, retry), session, retry)
    if listing:
        items = batch_results(data, client)
        result_ids(items)
        for item in items:
            print(json.dumps(item, separators=(",", ":")))
        return 0
    url = url or run_url(environ)
    if result is not None:
        return _report_one(answer_one(data, result, message, url, client), client.server_url + data["server"]["endpoint"])
    return _report_batch(answer_batch(data, lines, url, client))


def _report_one(row: dict | None, url: str) -> int:
    if row is None:
        print(f"{url}: recorded by an earlier attempt whose response was lost (the retry got 409)", file=sys.stderr)
    else:
        print(f"result {row['id']}: {row['result']}", file=sys.stderr)
    return 0


def _report_batch(report: BatchReport) -> int:
    refused = [outcome for outcome in report.outcomes
               if outcome["status"] != 200 and outcome["id"] not in report.recorded_earlier]
    for outcome in refused:
        print(f"catalog: result {outcome['id']}: {outcome['status']} {outcome['error']['message']}", file=sys.stderr)
    if report.recorded_earlier:
        print(f"{len(report.recorded_earlier)} results recorded by an earlier attempt whose response was lost"
              f" (the retry got 409): {_listed(sorted(map(str, report.recorded_earlier)))}", file=sys.stderr)
    if report.finished:
        print(f"{len(report.finished)} results of the batch were already finished, not answered again: "
              + _listed(report.finished), file=sys.stderr)
    if report.unanswered:
        print(f"catalog: {len(report.unanswered)} results of the batch not answered (they will time out): "
              + _listed(report.unanswered), file=sys.stderr)
    if report.stopped:
        print(f"catalog: {report.stopped}", file=sys.stderr)
        print(f"catalog: {report.unsent} answers not recorded: the request carrying them was refused after the earlier"
              " ones were recorded; their results stay open (answer them again, or they time out)", file=sys.stderr)
    print(f"answered {len(report.outcomes) - len(refused)} of {len(report.outcomes) + report.unsent} results", file=sys.stderr)
    return 1 if refused or report.unanswered or report.stopped else 0


def _listed(names: list[str]) -> str:
    return ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
