"""The handlers of `catalog`'s commands: each turns its arguments into one library call and prints
the outcome. The flags and the error handling around them are in cli.py."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from .errors import CatalogError, ConfigError
from .logs import redact_credentials
from .settings import Settings

EXIT_ERROR = 1


def settings_from(args: argparse.Namespace) -> Settings:
    flags = {name: getattr(args, name, None)
             for name in ("home", "database_url", "repo", "branch", "server_url", "dispatcher", "public_read")}
    return Settings.resolve(flags)


def open_store(settings: Settings, *, create: bool = True):
    """The configured database (CATALOG_DATABASE_URL / --database-url, else SQLite in the home), migrated;
    `create=False` for commands that only read: one already made (a ConfigError names where it looked)."""
    from .store import open_database

    return open_database(settings.database_url, home=settings.home, create=create)


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
    store = open_store(settings)
    plan = make_plan(store, source)
    if plan.same_revision:
        print(f"no changes: revision {plan.revision} is already applied")
        return EXIT_ERROR if _print_stored_file_errors(store) else 0
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
    count = _print_stored_file_errors(store)
    if count:  # the files with errors kept their last good state; the rest was applied
        print(f"{count} file{'s' if count != 1 else ''} with errors kept their last good state", file=sys.stderr)
        return _EXIT_APPLIED_WITH_ERRORS
    return 0


def _print_stored_file_errors(store) -> int:
    """Each error of the applied revision's files that kept their last good state, on stderr; how many files."""
    rows = store.catalog.file_errors()
    for row in rows:
        for error in row["errors"]:
            print(_error_text(error), file=sys.stderr)
    return len(rows)


def _error_text(error: dict) -> str:
    """A stored file error as file:line:col: message."""
    return f"{error['file']}:{error['line']}:{error['col']}: {error['message']}"


def _print_warnings(warnings: list) -> None:
    """What applied with a warning: a reference to a broken file's slug, a waiver past its expiry, a
    notification route whose variable is unset."""
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

    store = open_store(settings_from(args), create=False)
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
    store = open_store(settings, create=False)
    runs = store.catalog.sync_runs(limit=1)
    status = {
        "database": store.describe(),
        "schema_version": store.schema_version(),
        "applied_revision": store.state.get("applied_revision"),
        "last_check": store.state.get("last_sync_check"),
        "last_run": runs[0] if runs else None,
        "counts": store.catalog.counts(),
        "file_errors": [error for row in store.catalog.file_errors() for error in row["errors"]],
        "writeback_tampering": store.state.get(FINDINGS_KEY, []),
        "github_budget": _budget_status(store, settings),
        "notifications": store.events.delivery_summary(failed_limit=10),
    }
    broken_setting = 1 if status["github_budget"].get("error") else 0  # shown with the rest, and the exit says so
    if args.json:
        print(redact_credentials(json.dumps(status, indent=2)))  # a message recorded by an older version may quote CATALOG_REPO
        return broken_setting
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
    if budget.get("error"):
        print(f"GitHub budget: {budget['error']} (the scheduler dispatches nothing until it is fixed)", file=sys.stderr)
    else:
        print("GitHub budget: " + ", ".join(f"{w['window']} ({w['left']} left)" for w in budget["windows"])
              + (f"; paused until {budget['paused_until']} (GitHub's rate limit)" if budget["paused_until"] else ""))
    for error in status["file_errors"]:
        print(f"error: {_error_text(error)}")
    for finding in status["writeback_tampering"]:
        when = f" (found {finding['found_at']})" if finding.get("found_at") else ""  # older entries have no time
        print(f"tampering{when}: {finding['path'] + ': ' if finding['path'] else ''}{finding['message']}")
    notifications = status["notifications"]
    print(f"notifications: {notifications['unrouted'] + notifications['pending']} waiting,"
          f" {notifications['failed']} failed after the last retry")
    for failed in notifications["failed_deliveries"]:
        print(f"failed notification: route {failed['route']}, event {failed['event_id']} ({failed['type']}):"
              f" {failed['last_error']}")
    return broken_setting


def _budget_status(store, settings: Settings) -> dict:
    """The dispatch budget's room now, per window, and a pause GitHub asked for."""
    from datetime import datetime, timezone

    from .budget import Budget, describe_window
    from .clock import format_time

    try:
        budget = Budget.from_text(store, settings.github_budget)
    except ConfigError as error:  # said, beside everything else status shows: it is the command to diagnose with
        return {"error": str(error), "windows": [], "paused_until": None}
    paused = store.budget.paused_until()
    now = budget.clock.now()
    return {
        "windows": [{"window": describe_window(limit, seconds), "left": left} for limit, seconds, left in budget.left()],
        "paused_until": format_time(datetime.fromtimestamp(paused, timezone.utc)) if paused and paused > now.timestamp() else None,
    }


def cmd_dispatch(args: argparse.Namespace) -> int:
    """One pass; exit 1 when a dispatch failed for good (results in `error`), else 0."""
    from . import scorecard_events
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
    # what `catalog up` runs with each pass: without it, a cron-run catalog never saw a level go stale
    changed, recorded = scorecard_events.time_pass(store, clock.now())
    if changed or recorded:
        print(f"scorecards: {changed} levels changed with time, {recorded} waiver or campaign events", file=sys.stderr)
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

    tokens = list_tokens(open_store(settings_from(args), create=False))
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

    before = revoke_token(open_store(settings_from(args), create=False), args.name, now=Clock().now())
    if before is not None:
        print(f"token {args.name!r} was revoked already, at {before}", file=sys.stderr)
    else:
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

    store = open_store(settings_from(args), create=False) if args.against_store else None
    with contextlib.ExitStack() as bars:  # a bar on a terminal's stderr, gone before the findings print
        report = verify(_results_branch(args, store), store=store, progress=_progress_bars(bars, args.quiet))
    if args.format == "json":
        print(json.dumps({"ok": report.ok, "branch": report.branch, "tip": report.tip, "folders": report.roots,
                          "lines": report.lines, "chained": report.chained, "commits": report.commits, "queued": report.queued,
                          "findings": [finding.as_dict() for finding in report.findings]}, indent=2))
    else:
        for line in lines_of(report):
            print(line)
    return 0 if report.ok else EXIT_ERROR


def cmd_as_of(args: argparse.Namespace) -> int:
    """Each pair's latest result at TIME; exit 1 for a TIME it cannot read or a service no line names."""
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
    store = open_store(settings_from(args), create=False)
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
