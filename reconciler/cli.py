"""The `catalog` command: a thin layer that parses flags and prints library errors as one line."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Callable

from .errors import CatalogError
from .logs import redact_credentials
from .schema import KINDS
from .settings import Settings

EXIT_ERROR = 1


def _add_settings_flags(parser: argparse.ArgumentParser, *, server: bool = False) -> None:
    """The deployment settings (docs/operating.md); each also an environment variable."""
    parser.add_argument("--home", help="state folder: catalog.db and the git checkout (CATALOG_HOME, default .catalog)")
    parser.add_argument("--database-url", dest="database_url",
                        help="sqlite:///PATH or postgresql://USER@HOST/DB (CATALOG_DATABASE_URL, default SQLite in the home)")
    parser.add_argument("--repo", help="the catalog repository: URL or local path (CATALOG_REPO)")
    parser.add_argument("--branch", help="branch to sync (CATALOG_BRANCH, default: the remote's default)")
    parser.add_argument("--server-url", dest="server_url", help="public URL of the API, sent in payloads (CATALOG_SERVER_URL)")
    parser.add_argument("--dispatcher", help="github, local:DIR or log (CATALOG_DISPATCHER, default github)")
    if server:
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
        parser.add_argument(
            "--public-read", dest="public_read", action="store_const", const=True, default=None,
            help="serve reads (API and pages) without a token (CATALOG_PUBLIC_READ)",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="catalog",
        description="Service catalog with GitOps health checks: services and checks as YAML in git.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    validate = commands.add_parser(
        "validate", help="validate a catalog directory (exit 0 valid, 1 invalid)",
        description="Validate every file of a catalog directory alone and together (slugs, dependencies,"
        " targets); print file:line:col: message per error. Exit 0 valid, 1 invalid. No store is needed.",
    )
    validate.add_argument("path", nargs="?", default=".", help="catalog directory (default .)")
    validate.add_argument("--format", choices=("text", "github"), default="text", help="github: ::error annotations")
    validate.set_defaults(handler=cmd_validate)

    schema = commands.add_parser("schema", help="print the JSON Schema of catalog files")
    schema.add_argument("kind", nargs="?", choices=(*KINDS, "backstage"),
                        help="one kind of file (backstage: a Backstage Component; default: all)")
    schema.set_defaults(handler=cmd_schema)

    plan = commands.add_parser(
        "plan", help="show what a sync would create, update and remove",
        description="Fetch the catalog repository and print what a sync would create, update and remove,"
        " without applying it. Exit status: 0 success, 1 error (a file error, a sync that would be refused,"
        " a failed fetch); with --detailed-exitcode, 2 when there are changes.",
    )
    _add_settings_flags(plan)
    plan.add_argument("--detailed-exitcode", action="store_true", help="exit 0 no changes, 2 changes, 1 error")
    plan.set_defaults(handler=cmd_plan)

    sync = commands.add_parser(
        "sync", help="pull the catalog repository and apply it",
        description="Pull the catalog repository and apply it in one transaction. Exit status: 0 applied"
        " cleanly (or the revision was already applied), 3 applied but some files have errors (they keep"
        " their last good state), 1 refused (mass removal) or failed (fetch, settings).",
    )
    _add_settings_flags(sync)
    sync.add_argument("--allow-mass-removal", action="store_true", help="allow removing more than half the services")
    sync.add_argument("--quiet", "-q", action="store_true", help="no progress bar, even on a terminal")
    sync.set_defaults(handler=cmd_sync)

    migrate = commands.add_parser(
        "migrate", help="apply the database's pending migrations (serve and up also do it at start)"
    )
    _add_settings_flags(migrate)
    migrate.set_defaults(handler=cmd_migrate)

    status = commands.add_parser("status", help="last sync, counts, pending results")
    _add_settings_flags(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=cmd_status)

    scorecard = commands.add_parser(
        "scorecard", help="services by level of a scorecard (or every scorecard's summary)",
        description="Without SLUG: every scorecard with how many services hold each level. With SLUG: that"
        " scorecard's services, highest level first, with the checks holding each back. Exit 1 for an unknown slug.",
    )
    _add_settings_flags(scorecard)
    scorecard.add_argument("slug", nargs="?", help="a scorecard's slug")
    scorecard.add_argument("--json", action="store_true", help="print JSON")
    scorecard.set_defaults(handler=cmd_scorecard)

    dispatch = commands.add_parser("dispatch", help="one scheduler pass: expire timed-out results, dispatch due checks")
    _add_settings_flags(dispatch)
    dispatch.add_argument("--dry-run", action="store_true", help="list what is due, send nothing")
    dispatch.add_argument("--plan", action="store_true",
                          help="print the dispatches a day per check against CATALOG_GITHUB_BUDGET (exit 2: does not fit)")
    dispatch.set_defaults(handler=cmd_dispatch)

    run_check = commands.add_parser("run-check", help="dispatch a check now (ad-hoc)")
    _add_settings_flags(run_check)
    run_check.add_argument("slug", help="the check's slug")
    run_check.add_argument("--service", help="only this service's slug")
    run_check.set_defaults(handler=cmd_run_check)

    answer = commands.add_parser(
        "answer", help="answer the catalog from a check's Action: reads $PAYLOAD",
        description="Send a check's answer to the catalog from its Action, without hand-written HTTP. Reads"
        " $PAYLOAD (client_payload.data) and authenticates with $SERVICE_CATALOG_TOKEN, or else with a GitHub"
        " Actions OIDC token for the server URL (the job needs `permissions: id-token: write`). A batch"
        " dispatch is answered with --results FILE: JSON lines {\"service\", \"result\", \"message\"?, \"url\"?}.",
    )
    answer.add_argument("result", nargs="?", help="pass, warning, fail, error or skipped (one result)")
    answer.add_argument("--message", help="text shown with the result")
    answer.add_argument("--url", help="link to the run (default: this Action run's, when in one)")
    answer.add_argument("--results", metavar="FILE", help="a batch's answers as JSON lines ('-' for stdin)")
    answer.add_argument("--list", action="store_true",
                        help="print the batch's results, one JSON line {result, service, endpoint} each, and send nothing")
    answer.set_defaults(handler=cmd_answer)

    token = commands.add_parser("token", help="API tokens")
    token_commands = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    token_create = token_commands.add_parser("create", help="create a token and print it alone on stdout")
    _add_settings_flags(token_create)
    token_create.add_argument("name")
    token_create.add_argument(
        "--scope", action="append", required=True,
        help="read, results:write, checks:run, sync or admin (repeatable)",
    )
    token_create.set_defaults(handler=cmd_token_create)
    token_list = token_commands.add_parser("list", help="list tokens (never their secrets)")
    _add_settings_flags(token_list)
    token_list.set_defaults(handler=cmd_token_list)
    token_revoke = token_commands.add_parser("revoke", help="revoke a token by name")
    _add_settings_flags(token_revoke)
    token_revoke.add_argument("name")
    token_revoke.set_defaults(handler=cmd_token_revoke)

    writeback = commands.add_parser("writeback", help="commit finished results to git and push")
    _add_settings_flags(writeback)
    writeback.add_argument("--no-push", action="store_true", help="commit locally only")
    writeback.add_argument("--quiet", "-q", action="store_true", help="no progress bar, even on a terminal")
    writeback.set_defaults(handler=cmd_writeback)

    verify = commands.add_parser(
        "verify", help="prove from git alone that the results history is complete and unaltered",
        description="Check the results branch: every history line parses, every prev link holds, no result id"
        " appears twice, no commit changed or removed a line, and (with results/allowed_signers) every commit is"
        " signed. Exit 0 verified, 1 with the findings, one per line.",
    )
    _add_ledger_flags(verify)
    verify.add_argument("--against-store", action="store_true",
                        help="also check that every finished result written back is there, exactly once, as stored")
    verify.add_argument("--format", choices=("text", "json"), default="text")
    verify.add_argument("--quiet", "-q", action="store_true", help="no progress bar, even on a terminal")
    verify.set_defaults(handler=cmd_verify)

    as_of = commands.add_parser(
        "as-of", help="every pair's latest finished result at a past time, from the ledger alone",
        description="Read the results branch and print, for each (service, check) pair, the latest result"
        " finished at or before TIME. TIME is ISO 8601; a bare date means the end of that day (UTC).",
    )
    as_of.add_argument("time", metavar="TIME", help="e.g. 2026-01-05 or 2026-01-05T12:00:00Z")
    _add_ledger_flags(as_of)
    as_of.add_argument("--service", help="one service's pairs only (its slug)")
    as_of.add_argument("--format", choices=("table", "json"), default="table")
    as_of.set_defaults(handler=cmd_as_of)

    export = commands.add_parser(
        "export", help="export results (CSV or JSON lines) for auditors",
        description="Print every result matching the filters, oldest first, as CSV (with a header) or JSON"
        " lines, streamed: any number of results in constant memory. A progress bar goes to stderr on a"
        " terminal only.",
    )
    export_commands = export.add_subparsers(dest="export_what", metavar="WHAT", required=True)
    export_results = export_commands.add_parser("results", help="results, oldest first")
    _add_settings_flags(export_results)
    export_results.add_argument("--since", help="results created at or after this ISO 8601 time (no zone: UTC)")
    export_results.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="csv (default) or jsonl")
    export_results.add_argument("--service", help="only this service's results (slug)")
    export_results.add_argument("--check", help="only this check's results (slug)")
    export_results.add_argument("--result", help="only this outcome: pass, warning, fail, error, skipped, unknown")
    export_results.add_argument("--status", help="only this status: pending, sent, completed, timed-out, error")
    export_results.add_argument("--output", "-o", help="write to this file instead of stdout")
    export_results.add_argument("--quiet", "-q", action="store_true", help="no progress bar, even on a terminal")
    export_results.set_defaults(handler=cmd_export_results)

    serve = commands.add_parser("serve", help="run the HTTP API")
    _add_settings_flags(serve, server=True)
    serve.set_defaults(handler=cmd_serve)

    up = commands.add_parser("up", help="everything in one process: API, sync loop, scheduler, write-back")
    _add_settings_flags(up, server=True)
    up.set_defaults(handler=cmd_up)
    return parser


def _add_ledger_flags(parser: argparse.ArgumentParser) -> None:
    """Where the results branch is: `verify` and `as-of` read git only."""
    parser.add_argument("--home", help="state folder (CATALOG_HOME): where a remote repository is fetched to")
    parser.add_argument("--database-url", dest="database_url", help="the store, for --against-store (CATALOG_DATABASE_URL)")
    parser.add_argument("--repo", help="the catalog repository: URL or local path (CATALOG_REPO; default: where write-back goes)")
    parser.add_argument("--branch", dest="results_branch", default=None,
                        help="the results branch (default: catalog.yaml's writeback.branch, catalog-results)")


def settings_from(args: argparse.Namespace) -> Settings:
    flags = {name: getattr(args, name, None)
             for name in ("home", "database_url", "repo", "branch", "server_url", "dispatcher", "public_read")}
    return Settings.resolve(flags)


def open_store(settings: Settings):
    """The configured database (CATALOG_DATABASE_URL / --database-url, else SQLite in the home), migrated."""
    from .store import open_database

    return open_database(settings.database_url, home=settings.home)


# -- command handlers: each turns arguments into one library call and prints its outcome --------


def cmd_validate(args: argparse.Namespace) -> int:
    from .validation import validate_directory

    notes: list[str] = []
    count, errors = validate_directory(args.path, notes)
    _print_notes(notes)
    for error in errors:
        if args.format == "github":
            print(_github_annotation(args.path, error))
        else:
            print(error)
    files = f"{count} file{'s' if count != 1 else ''}"
    if errors:
        print(f"{len(errors)} error{'s' if len(errors) != 1 else ''} in {files}", file=sys.stderr)
        return EXIT_ERROR
    print(f"{files} valid", file=sys.stderr)
    return 0


def _github_annotation(root: str, error) -> str:
    """`::error file=F,line=L,col=C::MSG`, escaped as GitHub's workflow commands require."""
    path = error.location.path if root in (".", "./", "") else f"{root.rstrip('/')}/{error.location.path}"

    def data(text: str) -> str:
        return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    def prop(text: str) -> str:
        return data(text).replace(":", "%3A").replace(",", "%2C")

    where = error.location
    return f"::error file={prop(path)},line={where.line},col={where.col}::{data(error.message)}"


def cmd_schema(args: argparse.Namespace) -> int:
    from .schema import json_schema

    print(json.dumps(json_schema(args.kind), indent=2))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from .gitsource import source_from_settings
    from .reconcile import make_plan, mass_removal_refusal

    settings = settings_from(args)
    source = source_from_settings(settings)
    plan = make_plan(open_store(settings), source)
    if plan.same_revision:
        print(f"no changes: revision {plan.revision} is already applied")
        return 0
    print(f"plan: {plan.previous_revision or '(nothing applied yet)'} -> {plan.revision}")
    for change in plan.changes:
        print(f"  {change}")
    print(
        f"{plan.count('create')} to create, {plan.count('update')} to update,"
        f" {plan.count('remove')} to remove, {plan.unchanged} unchanged"
    )
    _print_file_errors(plan.errors)
    _print_warnings(plan.warnings)
    _print_notes(plan.notes)
    refusal = mass_removal_refusal(plan)
    if refusal:
        print(f"catalog: sync would be refused: {refusal}", file=sys.stderr)
    if refusal or plan.errors:
        return EXIT_ERROR
    return 2 if args.detailed_exitcode and plan.has_changes else 0


_EXIT_APPLIED_WITH_ERRORS = 3  # `catalog sync`: applied, but some files kept their last good state


def cmd_sync(args: argparse.Namespace) -> int:
    from .gitsource import source_from_settings
    from .reconcile import collector_paused, sync

    settings = settings_from(args)
    store = open_store(settings)
    with collector_paused(), contextlib.ExitStack() as bars:  # this process only syncs: nothing else needs the collector
        report = sync(store, source_from_settings(settings), allow_mass_removal=args.allow_mass_removal,
                      progress=_progress_bars(bars, args.quiet))
    if report.outcome == "unchanged":
        print(f"no changes: revision {report.revision} is already applied ({report.duration_ms:.0f} ms)")
    else:
        plan = report.plan
        print(f"applied {report.revision} (previous: {report.previous_revision or 'none'})")
        print(
            f"{plan.count('create')} created, {plan.count('update')} updated,"
            f" {plan.count('remove')} removed, {plan.unchanged} unchanged in {report.duration_ms:.0f} ms"
        )
        _print_warnings(plan.warnings)
        _print_notes(plan.notes)
    file_errors = store.catalog.file_errors()
    if file_errors:
        # the files with errors kept their last good state; the rest was applied
        for row in file_errors:
            error = row["error"]
            print(f"{error['file']}:{error['line']}:{error['col']}: {error['message']}", file=sys.stderr)
        count = len(file_errors)
        print(f"{count} file{'s' if count != 1 else ''} with errors kept their last good state", file=sys.stderr)
        return _EXIT_APPLIED_WITH_ERRORS
    return 0


def _print_warnings(warnings: list) -> None:
    """What applied although it names a broken file's slug."""
    for warning in warnings:
        print(f"{warning.location}: warning: {warning.message}", file=sys.stderr)


def _print_notes(notes: list[str]) -> None:
    """What was read and skipped: Backstage entities that are not Components."""
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def _print_file_errors(errors: list) -> None:
    for error in errors:
        print(str(error), file=sys.stderr)
    if errors:
        print(f"{len(errors)} error{'s' if len(errors) != 1 else ''} (those files keep their last good state)", file=sys.stderr)


def cmd_migrate(args: argparse.Namespace) -> int:
    from .store import open_database

    settings = settings_from(args)
    store = open_database(settings.database_url, home=settings.home, migrate=False)
    applied = store.migrate()
    now = store.schema_version()
    if applied:
        # every version this build knows and did not just apply was there before
        before = max((v for v, _ in store.backend.migrations if v not in applied and v <= now), default=0)
        print(f"{store.describe()}: migrated from version {before} to {now} (applied {', '.join(map(str, applied))})")
    else:
        print(f"{store.describe()}: up to date at version {now}")
    store.close()
    return 0


def cmd_scorecard(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from . import scorecard_views

    store = open_store(settings_from(args))
    if args.slug is None:
        cards = scorecard_views.scorecard_summaries(store)
        if args.json:
            print(json.dumps({"scorecards": cards}, indent=2))
            return 0
        if not cards:
            print("no scorecard: add a file under scorecards/ and sync")
        for card in cards:
            counts = ", ".join(f"{n} {name}" for name, n in card["by_level"].items())
            print(f"{card['slug']}: {card['name']} ({card['services']} services): {counts}")
        return 0
    card = scorecard_views.scorecard(store, args.slug, datetime.now(timezone.utc), page=None)
    if args.json:
        print(json.dumps(card, indent=2))
        return 0
    print(f"{card['name']} ({card['slug']}): " + " < ".join(level["name"] for level in card["levels"]))
    for row in card["service_levels"]:
        held_back = ", ".join(f"{check} {state}" for check, state in row["checks"].items())
        print(f"  {row['level'] or 'none':<12} {row['service']}" + (f"  ({held_back})" if held_back else ""))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .writeback import FINDINGS_KEY

    settings = settings_from(args)
    store = open_store(settings)
    runs = store.catalog.sync_runs(limit=1)
    status = {
        "database": store.describe(),
        "schema_version": store.schema_version(),
        "applied_revision": store.state.get("applied_revision"),
        "last_check": store.state.get("last_sync_check"),
        "last_run": runs[0] if runs else None,
        "counts": store.catalog.counts(),
        "file_errors": [row["error"] for row in store.catalog.file_errors()],
        "writeback_tampering": store.state.get(FINDINGS_KEY, []),
        "github_budget": _budget_status(store, settings),
        "notifications": store.events.delivery_summary(failed_limit=10),
    }
    if args.json:
        print(redact_credentials(json.dumps(status, indent=2)))  # a message recorded by an older version may quote CATALOG_REPO
        return 0
    run, counts = status["last_run"], status["counts"]
    print(f"database: {status['database']} (schema version {status['schema_version']})")
    if run is None:
        print("last sync: never (run `catalog sync`)")
    else:
        print(f"last sync: {run['outcome']} at {run['finished_at']} in {run['duration_ms']:.0f} ms")
        print(f"  applied revision:   {status['applied_revision'] or 'none'}")
        print(f"  attempted revision: {run['attempted_revision'] or 'none'}")
        print(
            f"  {run['created']} created, {run['updated']} updated, {run['removed']} removed,"
            f" {run['unchanged']} unchanged"
        )
        if run["message"]:
            print(f"  message: {redact_credentials(run['message'])}")
    if status["last_check"]:
        print(f"last checked: {status['last_check']['at']} (revision {status['last_check']['revision']})")
    print(
        f"services: {counts['services']} ({counts['removed_services']} removed), checks: {counts['checks']}"
    )
    print(
        f"results: {counts['results']} in all, {counts['pending_results']} pending,"
        f" {counts['sent_results']} sent"
    )
    budget = status["github_budget"]
    print("GitHub budget: " + ", ".join(f"{w['window']} ({w['left']} left)" for w in budget["windows"])
          + (f"; paused until {budget['paused_until']} (GitHub's rate limit)" if budget["paused_until"] else ""))
    for error in status["file_errors"]:
        print(f"error: {error['file']}:{error['line']}:{error['col']}: {error['message']}")
    for finding in status["writeback_tampering"]:
        print(f"tampering: {finding['path']}: {finding['message']}")
    notifications = status["notifications"]
    print(f"notifications: {notifications['unrouted'] + notifications['pending']} waiting,"
          f" {notifications['failed']} failed after the last retry")
    for failed in notifications["failed_deliveries"]:
        print(f"failed notification: route {failed['route']}, event {failed['event_id']} ({failed['type']}):"
              f" {failed['last_error']}")
    return 0


def _budget_status(store, settings: Settings) -> dict:
    """The dispatch budget's room now, per window, and a pause GitHub asked for."""
    from datetime import datetime, timezone

    from .budget import Budget, describe_window
    from .clock import format_time

    budget = Budget.from_text(store, settings.github_budget)
    paused = store.budget.paused_until()
    now = budget.clock.now()
    return {
        "windows": [{"window": describe_window(limit, seconds), "left": left} for limit, seconds, left in budget.left()],
        "paused_until": format_time(datetime.fromtimestamp(paused, timezone.utc)) if paused and paused > now.timestamp() else None,
    }


def cmd_dispatch(args: argparse.Namespace) -> int:
    """One pass; exit 1 when a dispatch failed for good (results in `error`), else 0."""
    from .clock import Clock, format_time
    from .dispatch import dispatcher_from_settings
    from .schedule import due_pairs, expire_results, run_pass

    settings = settings_from(args)
    store = open_store(settings)
    clock = Clock()
    if args.plan:
        from .dispatch_plan import print_plan

        return print_plan(store, settings, clock.now())
    if args.dry_run:
        now = clock.now()
        expiring = expire_results(store, now, dry_run=True)
        pairs = due_pairs(store, now)
        _print_due(store, pairs)
        print(f"{len(pairs)} due, {len(expiring)} would time out (at {format_time(now)}); nothing sent", file=sys.stderr)
        return 0
    _log_to_stderr()
    report = run_pass(store, dispatcher_from_settings(settings, clock=clock, store=store), settings=settings, clock=clock)
    _print_outcomes(store, report)
    print(f"dispatch: {report}", file=sys.stderr)
    return EXIT_ERROR if report.failed else 0


def cmd_run_check(args: argparse.Namespace) -> int:
    """Exit 1 when a dispatch failed for good; a transient failure leaves the result pending (exit 0)."""
    from .clock import Clock
    from .dispatch import dispatcher_from_settings
    from .schedule import run_check

    settings = settings_from(args)
    store = open_store(settings)
    clock = Clock()
    _log_to_stderr()
    rows = run_check(
        store, dispatcher_from_settings(settings, clock=clock, store=store), args.slug, args.service,
        settings=settings, clock=clock,
    )
    for row in rows:
        detail = f": {row['message']}" if row["status"] == "error" and row["message"] else ""
        print(f"result {row['id']}  {row['check']}  {row['service'] or '-'}  {row['status']}{detail}")
    return EXIT_ERROR if any(row["status"] == "error" for row in rows) else 0


def _print_due(store, pairs: list) -> None:
    checks = {c["id"]: c["slug"] for c in store.reads.checks()}
    services = {s["id"]: s["slug"] for s in store.reads.services()}
    for check_id, service_id in sorted(pairs, key=lambda p: (checks[p[0]], services.get(p[1], ""))):
        print(f"due  {checks[check_id]}  {services.get(service_id, '-') if service_id else '-'}")


def _print_outcomes(store, report) -> None:
    failed = dict(report.failed)
    deferred = dict(report.deferred)
    for result_id in sorted(set(report.expired) | set(report.dispatched) | set(failed) | set(deferred)):
        row = store.results.get(result_id)
        outcome = row["status"]
        if result_id in failed:
            outcome += f": {failed[result_id]}"
        elif result_id in deferred:
            outcome = f"still pending: {deferred[result_id]}"
        print(f"result {result_id}  {row['check']}  {row['service'] or '-'}  {outcome}")


def _log_to_stderr() -> None:
    from .logs import log_to_stderr

    log_to_stderr("%(levelname)s %(name)s: %(message)s")


def cmd_answer(args: argparse.Namespace) -> int:
    from .answer import run_answer

    return run_answer(args.result, message=args.message, url=args.url, results=args.results, listing=args.list)


def cmd_token_create(args: argparse.Namespace) -> int:
    from .clock import Clock
    from .tokens import create_token

    secret = create_token(open_store(settings_from(args)), args.name, args.scope, now=Clock().now())
    print(secret)  # alone on stdout, so `TOKEN=$(catalog token create ...)` works
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from .tokens import list_tokens

    tokens = list_tokens(open_store(settings_from(args)))
    if not tokens:
        print("no tokens; create one with: catalog token create NAME --scope read", file=sys.stderr)
        return 0
    rows = [("NAME", "SCOPES", "CREATED", "LAST USED", "REVOKED")] + [
        (t["name"], ",".join(t["scopes"]), t["created_at"], t["last_used_at"] or "never", t["revoked_at"] or "-")
        for t in tokens
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from .clock import Clock
    from .tokens import revoke_token

    revoke_token(open_store(settings_from(args)), args.name, now=Clock().now())
    print(f"revoked token {args.name!r} (servers stop accepting it within seconds)", file=sys.stderr)
    return 0


def cmd_writeback(args: argparse.Namespace) -> int:
    """One write-back pass; exit 1 when tampering with pushed history was found (reported, not undone)."""
    from .writeback import writeback_pass

    settings = settings_from(args)
    with contextlib.ExitStack() as bars:
        report = writeback_pass(open_store(settings), settings, push=not args.no_push,
                                progress=_progress_bars(bars, args.quiet))
    for line in report.lines():
        print(line)
    for finding in report.findings:
        print(f"catalog: tampering: {finding}", file=sys.stderr)
    return EXIT_ERROR if report.findings else 0


def _results_branch(args: argparse.Namespace, store=None):
    """The results branch `verify` and `as-of` read: --repo, else where write-back goes; --branch, else
    the store's catalog.yaml (when one is open), else the default."""
    from .ledger import ResultsBranch
    from .schema import DEFAULT_WRITEBACK_BRANCH
    from .verify import default_branch

    settings = settings_from(args)
    repo = settings.repo or str((settings.home / "results.git").resolve())
    branch = args.results_branch or (default_branch(store) if store is not None else DEFAULT_WRITEBACK_BRANCH)
    return ResultsBranch.open(repo, branch, settings.home)


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 when the branch verifies, 1 with one line per finding."""
    from .verify import lines_of, verify

    store = open_store(settings_from(args)) if args.against_store else None
    with contextlib.ExitStack() as bars:  # a bar on a terminal's stderr, gone before the findings print
        report = verify(_results_branch(args, store), store=store, progress=_progress_bars(bars, args.quiet))
    if args.format == "json":
        print(json.dumps({"ok": report.ok, "branch": report.branch, "tip": report.tip, "lines": report.lines,
                          "chained": report.chained, "commits": report.commits, "queued": report.queued,
                          "findings": [finding.as_dict() for finding in report.findings]}, indent=2))
    else:
        for line in lines_of(report):
            print(line)
    return 0 if report.ok else EXIT_ERROR


def cmd_as_of(args: argparse.Namespace) -> int:
    from .asof import parse_moment, state_at, table

    moment = parse_moment(args.time)
    rows = state_at(_results_branch(args), moment, service=args.service)
    if args.format == "json":
        print(json.dumps({"as_of": moment, "results": rows}, indent=2, ensure_ascii=False))
    else:
        for line in table(rows, moment):
            print(line)
    return 0


def cmd_export_results(args: argparse.Namespace) -> int:
    """Results as CSV or JSON lines on stdout (or --output), streamed; progress on a terminal's stderr."""
    from .export import CHUNKERS, DEFUSE, check_filters, parse_since, result_batches
    from .progress import terminal_progress

    check_filters(args.result, args.status)
    filters = {"service": args.service, "check": args.check, "result": args.result, "status": args.status,
               "since": parse_since(args.since)}
    store = open_store(settings_from(args))
    filtered = any(value is not None for value in filters.values())
    total = None if filtered else sum(row["count"] for row in store.metrics.result_counts())
    output = open(args.output, "wb") if args.output else sys.stdout.buffer
    try:
        with terminal_progress("exporting results", total=total, quiet=args.quiet) as advance:
            def counted(batches):
                for rows in batches:
                    yield rows
                    advance(len(rows))

            batches = result_batches(store, defuse=DEFUSE[args.format], **filters)
            for chunk in CHUNKERS[args.format](counted(batches)):
                output.write(chunk)
        output.flush()
    except BrokenPipeError:  # `catalog export results | head`: the reader has what it wanted
        sys.stderr.close()
        return 0
    finally:
        if args.output:
            output.close()
    return 0


def _progress_bars(bars: contextlib.ExitStack, quiet: bool):
    """`progress(description, total)` for the core: a bar on a terminal (closed with `bars`), else nothing."""
    from .progress import terminal_progress

    return lambda description, total: bars.enter_context(terminal_progress(description, total=total, quiet=quiet))


def cmd_serve(args: argparse.Namespace) -> int:
    raise CatalogError("serve runs the web API: start it with the `catalog` program this project installs (api.cli)")


def cmd_up(args: argparse.Namespace) -> int:
    raise CatalogError("up runs the web API: start it with the `catalog` program this project installs (api.cli)")


def main(argv: list[str] | None = None, *, handlers: dict[str, Callable[[argparse.Namespace], int]] | None = None) -> int:
    """Run one command. `handlers` lets the web layer supply the commands that serve HTTP (serve, up),
    so this core never imports it."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = (handlers or {}).get(args.command, args.handler)
    try:
        return handler(args)
    except CatalogError as error:
        print(f"catalog: {redact_credentials(str(error))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("catalog: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_ERROR
    except OSError as error:
        print(f"catalog: {redact_credentials(str(error))}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as error:
        from .store import DATABASE_ERRORS

        if not isinstance(error, DATABASE_ERRORS):
            return _internal_error(error)
        first_line = (str(error).strip() or type(error).__name__).splitlines()[0]
        print(f"catalog: database error: {redact_credentials(first_line)}", file=sys.stderr)
        return EXIT_ERROR


def _internal_error(error: Exception) -> int:
    """A bug: still one line, the traceback only on request."""
    if os.environ.get("CATALOG_DEBUG"):
        raise error
    reason = redact_credentials(f"{type(error).__name__}: {error}")  # e.g. a git command line holding the URL
    print(f"catalog: internal error ({reason}); set CATALOG_DEBUG=1 for details", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
