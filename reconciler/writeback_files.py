"""The files the write-back commits: history lines, per-service and per-check summaries, README."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Iterable

from .outcomes import NO_LEVEL

# Characters that YAML or line-splitting tools read as line breaks, or YAML refuses; JSON leaves them raw.
_UNSAFE_CHARACTERS = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff\ud800-\udfff]")


def _escape(match: re.Match) -> str:
    return f"\\u{ord(match.group()):04x}"


SYMBOLS = {
    "pass": "✅",
    "warning": "⚠️",
    "fail": "❌",
    "error": "🛑",
    "skipped": "⏭️",
    "timed-out": "⌛",
}
NOT_RUN = "—"


# The ledger (docs/operating.md, "The ledger"): each history line's `prev` is the sha256 of the line
# written before it; the newest line's hash is the chain head, named by every commit.
ZERO_HASH = "0" * 64
LEDGER_FILE = "ledger.json"
LEDGER_TRAILER = "Ledger-Head"
ALLOWED_SIGNERS_FILE = "allowed_signers"
# `prev` follows keys that sort before it ("check", ...), so it is never first; a quote inside a JSON
# string is escaped, so this text occurs in a line only as the key itself.
_PREV = re.compile(r',"prev":"[0-9a-f]{64}"')


def history_line(row: dict, prev: str | None = None) -> str:
    """One finished result as one line of JSON: sorted keys, no spaces, so the same result gives the same bytes.
    `prev` chains it to the line written before it (lines written before the ledger have none)."""
    record = {
        "id": row["id"],
        "check": row["check_slug"],
        "service": row["service_slug"],
        "status": row["status"],
        "result": row["result"],
        "message": row["message"],
        "url": row["url"],
        "created": row["created_at"],
        "finished": row["finished_at"],
        "revision": row["revision"],
        "trigger": row["trigger"],
    }
    if row.get("attestation"):  # answered with an OIDC token: who answered, kept (lines of others keep their bytes)
        record["attestation"] = row["attestation"]
    if prev is not None:
        record["prev"] = prev
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _UNSAFE_CHARACTERS.sub(_escape, text)  # no Unicode line separators: one result, one line


def line_hash(line: str | bytes) -> str:
    """The sha256 of a line's bytes (without its newline): what the next line's `prev` names."""
    return hashlib.sha256(line if isinstance(line, bytes) else line.encode("utf-8")).hexdigest()


def unchained(line: str) -> str:
    """A history line without its `prev`: what the store's rendering of the result must equal."""
    return _PREV.sub("", line, count=1)


def ledger_json(head: str, lines: int, last_id: int | None) -> str:
    """results/ledger.json: the chain head after a commit, how many chained lines lead to it, the newest id."""
    return json.dumps({"head": head, "lines": lines, "last_id": last_id}, indent=2) + "\n"


def history_path(root: str, finished_at: str) -> str:
    """`results/history/2026/01/05.jsonl`: the UTC day the result finished."""
    return f"{root}history/{finished_at[0:4]}/{finished_at[5:7]}/{finished_at[8:10]}.jsonl"


def line_id(line: str) -> int | None:
    """The result id of a history line, or None when the line is not one of ours."""
    try:
        value = json.loads(line).get("id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def outcome(row: dict) -> str:
    """What a glance needs: the result when the check answered, else `timed-out` or `error`."""
    return row["result"] if row["status"] == "completed" else row["status"]


def _summary_entry(row: dict) -> dict:
    return {
        "id": row["id"],
        "outcome": outcome(row),
        "status": row["status"],
        "result": row["result"],
        "message": row["message"],
        "url": row["url"],
        "finished": row["finished_at"],
        "revision": row["revision"],
    }


def _scalar(value: object) -> str:
    """A JSON value is a YAML flow value; only the characters YAML treats specially get escaped."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))
    return _UNSAFE_CHARACTERS.sub(_escape, text)


def _dump(header: dict, section: str, entries: dict[str, dict]) -> str:
    """YAML with one flow mapping per entry: fast to write, and a changed entry is a one-line diff."""
    lines = [f"{key}: {_scalar(value)}" for key, value in header.items()]
    lines.append(f"{section}:" + ("" if entries else " {}"))
    lines += [f"  {_scalar(key)}: {_scalar(entry)}" for key, entry in entries.items()]
    return "\n".join(lines) + "\n"


def _counts(rows: Iterable[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[outcome(row)] = counts.get(outcome(row), 0) + 1
    return dict(sorted(counts.items()))


def service_summary(service: dict, latest: list[dict], as_of: str) -> str:
    """services/<slug>.yaml: the latest result of each check for the service, and their counts."""
    header = {"service": service["slug"], "name": service["name"], "as_of": as_of, "counts": _counts(latest)}
    return _dump(header, "checks", {row["check_slug"]: _summary_entry(row) for row in latest})


def check_summary(check: dict, latest: list[dict], as_of: str) -> str:
    """checks/<slug>.yaml: the latest result of the check for each service (`-` for `services: none`)."""
    header = {"check": check["slug"], "name": check["name"], "as_of": as_of, "counts": _counts(latest)}
    return _dump(header, "services", {(row["service_slug"] or "-"): _summary_entry(row) for row in latest})


def scorecard_summary(card: dict, as_of: str) -> str:
    """scorecards/<slug>.yaml: every service's level of one scorecard (`scorecard_views.scorecard`)."""
    header = {"scorecard": card["slug"], "name": card["name"], "as_of": as_of,
              "levels": [level["name"] for level in card["levels"]], "counts": card["by_level"]}
    return _dump(header, "services", {
        row["service"]: {"level": row["level"] or NO_LEVEL, **({"checks": row["checks"]} if row["checks"] else {})}
        for row in sorted(card["service_levels"], key=lambda row: row["service"])
    })


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def readme(services: list[dict], checks: list[dict], latest: dict[tuple[int, int], dict], as_of: str,
           scorecards: list[dict] = (), levels: dict[int, dict[str, str | None]] | None = None) -> str:  # type: ignore[assignment]
    """README.md: every service (rows) against every check (columns), one symbol per latest result,
    after a level column per scorecard (`-` where it does not apply)."""
    levels = levels or {}
    legend = " · ".join(f"{symbol} {name}" for name, symbol in SYMBOLS.items()) + f" · {NOT_RUN} not run yet"
    lines = [
        "# Health check results",
        "",
        f"Latest result of every check for every service, as of {as_of}.",
        "Every result ever recorded is in `history/` (one JSON line per result, by UTC day); "
        "`git log` on this branch shows when each was written.",
        "",
        legend,
        "",
    ]
    per_service = [check for check in checks if check["target_kind"] != "none"]
    if services and per_service:
        level_heads = "".join(f"[{_cell(card['name'])}](scorecards/{card['slug']}.yaml) | " for card in scorecards)
        lines.append("| Service | " + level_heads
                     + " | ".join(f"[{_cell(c['slug'])}](checks/{c['slug']}.yaml)" for c in per_service) + " |")
        lines.append("|---|" + ":-:|" * (len(scorecards) + len(per_service)))
        for service in services:
            held = levels.get(service["id"], {})
            cells = [_cell(held[card["slug"]] or NO_LEVEL) if card["slug"] in held else "-" for card in scorecards]
            for check in per_service:
                row = latest.get((check["id"], service["id"]))
                cells.append(SYMBOLS.get(outcome(row), "?") if row else NOT_RUN)
            name = f"[{_cell(service['slug'])}](services/{service['slug']}.yaml)"
            if not service["active"]:
                name += " (inactive)"
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    unattached = [check for check in checks if check["target_kind"] == "none"]
    if unattached:
        lines += ["## Checks without a service", "", "| Check | Latest |", "|---|:-:|"]
        for check in unattached:
            row = latest.get((check["id"], 0))
            symbol = SYMBOLS.get(outcome(row), "?") if row else NOT_RUN
            lines.append(f"| [{_cell(check['slug'])}](checks/{check['slug']}.yaml) | {symbol} |")
        lines.append("")
    return "\n".join(lines)
