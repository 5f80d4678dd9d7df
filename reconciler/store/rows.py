"""Row shapes shared by the repositories: column lists, JSON decoders, the result filters."""

from __future__ import annotations

import json
import operator

from ..outcomes import FINISHED_STATUSES, OPEN_STATUSES, RESULTS, sql_list

OPEN_SQL = sql_list(OPEN_STATUSES)
FINISHED_SQL = sql_list(FINISHED_STATUSES)

SERVICE_COLUMNS = (
    "slug, name, priority, type, description, owner, repository, active, tags, dependencies, meta, path, digest, error"
)
CHECK_COLUMNS = (
    "slug, name, description, frequency, schedule, timeout_seconds, active, repository, targets, target_kind,"
    " target_type, target_owner, target_tags, target_max_priority, batch_size, path, digest, error"
)

_COUNTED = sorted(RESULTS)  # a service's counts, keys in this order


def service_json_text(service: str, runs: str | None) -> str:
    """GET /api/services/{slug}'s text from what each dialect's one statement returns: the service's
    object, and its runs' objects joined by commas, a tab (JSON text never holds a raw one), their
    results joined by commas (None: no runs). Adds `latest_results` and `counts` to the object."""
    latest, _, results = (runs or "\t").partition("\t")
    values = results.split(",")  # each one of RESULTS (a CHECK in the schema)
    counts = ",".join(f'"{result}":{n}' for result in _COUNTED if (n := values.count(result)))
    return f'{service[:-1]},"latest_results":[{latest}],"counts":{{{counts}}}}}'


# A result as every reader sees it: its columns, plus the slug and name of its check and service.
# Who may answer a check's results with an OIDC token (`reconciler.oidc.answer_refusal`): the check `c`'s
# slug and repository, and the stored catalog.yaml (its defaults.repository, its oidc.workflow pin).
ANSWER_RULE_COLUMNS = ('c.slug AS "check", c.repository,'
                       " (SELECT value FROM catalog_state WHERE key = 'catalog_config') AS catalog_config")
RESULT_SELECT = (
    'SELECT r.*, c.slug AS "check", c.name AS check_name, s.slug AS service, s.name AS service_name,'
    " a.attestation FROM results AS r JOIN checks AS c ON c.id = r.check_id"
    " LEFT JOIN services AS s ON s.id = r.service_id LEFT JOIN result_attestations AS a ON a.result_id = r.id"
)


# What an answer returns besides the completed row: the slugs of its check and service.
COMPLETED_SLUGS = (
    ', (SELECT slug FROM checks WHERE id = results.check_id) AS "check",'
    " (SELECT slug FROM services WHERE id = results.service_id) AS service"
)


def names(columns: str) -> list[str]:
    return [name.strip() for name in columns.split(",")]


def positional(columns: str, extra: int = 0) -> str:
    """`?` for each column and `extra` more: the parameters of `service_values` / `check_values` rows."""
    return ", ".join("?" * (len(names(columns)) + extra))


# a record's values in column order, as a tuple: quicker to bind than by name for 100,000s of rows
service_values = operator.itemgetter(*names(SERVICE_COLUMNS))
check_values = operator.itemgetter(*names(CHECK_COLUMNS))


def updates(columns: str) -> str:
    return ", ".join(f"{name} = excluded.{name}" for name in names(columns) if name != "slug")


def decode_service(row: dict) -> dict:
    for key in ("tags", "dependencies", "meta"):
        row[key] = json.loads(row[key])
    row["active"] = bool(row["active"])
    return row


def decode_check(row: dict) -> dict:
    row["targets"] = json.loads(row["targets"])
    row["target_tags"] = json.loads(row["target_tags"]) if row["target_tags"] else None
    row["active"] = bool(row["active"])
    return row


def decode_sync_run(row: dict) -> dict:
    row["errors"] = json.loads(row["errors"])
    return row


def encode_attestation(attestation: dict | None) -> str | None:
    """An attestation as stored: JSON text with sorted keys (one value, one text)."""
    return None if attestation is None else json.dumps(attestation, sort_keys=True, separators=(",", ":"))


def decode_result(row: dict | None) -> dict | None:
    """A result row as callers see it: its attestation (JSON text in the table) as an object."""
    if row is not None and row.get("attestation") is not None:
        row["attestation"] = json.loads(row["attestation"])
    return row


def count_results(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["result"]] = counts.get(row["result"], 0) + 1
    return counts


def result_filters(
    *, service: str | None = None, check: str | None = None, result: str | None = None,
    status: str | None = None, since: str | None = None, before_id: int | None = None,
) -> tuple[str, list]:
    """` AND ...` conditions on results `r` for the usual filters (slugs, values, since, keyset page);
    an empty text filter is no filter."""
    return given_conditions([
        (service or None, " AND r.service_id = (SELECT id FROM services WHERE slug = ?)"),
        (check or None, " AND r.check_id = (SELECT id FROM checks WHERE slug = ?)"),
        (result or None, " AND r.result = ?"),
        (status or None, " AND r.status = ?"),
        (since or None, " AND r.created_at >= ?"),
        (before_id, " AND r.id < ?"),
    ])


def given_conditions(clauses: list[tuple[object, str]]) -> tuple[str, list]:
    """The SQL of each (value, ` AND ... ?`) whose value is not None, and those values. A filter
    written only when given lets the database use its index: `(? IS NULL OR column = ?)` does not
    (SQLite read every row of the table in order instead)."""
    given = [(value, sql) for value, sql in clauses if value is not None]
    return "".join(sql for _, sql in given), [value for value, _ in given]


def service_filter(dialect, owner: str | None, type: str | None, tag: str | None,
                   include_removed: bool = False) -> tuple[str, list]:
    """The WHERE clause (and its parameters) for services (live ones unless told) matching the filters."""
    where, params = "TRUE" if include_removed else "services.removed_at IS NULL", []
    if owner:
        where, params = where + " AND services.owner = ?", params + [owner]
    if type:
        where, params = where + " AND services.type = ?", params + [type]
    if tag:
        where += " AND " + dialect.has_element("services.tags", "?")
        params.append(tag)
    return where, params
