"""The `catalog` command: a thin layer that parses flags and prints library errors as one line."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from .commands import (
    EXIT_ERROR,
    cmd_answer,
    cmd_as_of,
    cmd_dispatch,
    cmd_export_results,
    cmd_migrate,
    cmd_plan,
    cmd_run_check,
    cmd_schema,
    cmd_scorecard,
    cmd_serve,
    cmd_status,
    cmd_sync,
    cmd_token_create,
    cmd_token_list,
    cmd_token_revoke,
    cmd_up,
    cmd_validate,
    cmd_verify,
    cmd_writeback,
)
from .errors import CatalogError
from .logs import redact_credentials
from .schema import KINDS


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
        " dispatch is answered with --results FILE: JSON lines {\"service\", \"result\", \"message\"?, \"url\"?}."
        " A connection error, a timeout, a 5xx or a 429 is tried again (5 attempts; $CATALOG_ANSWER_BACKOFF"
        " seconds before the first retry, default 1, doubling).",
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
        description="Check the results branch, in every write-back folder it has or had: every history line"
        " parses, every prev link holds, no result id appears twice, no commit changed or removed a line, and"
        " (once an allowed_signers file was added) every commit is signed. A branch without history lines is a"
        " finding. Exit 0 verified, 1 with the findings, one per line.",
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
        " finished at or before TIME. TIME is YYYY-MM-DD (the end of that day, UTC) or"
        " YYYY-MM-DDTHH:MM[:SS[.ffffff]][Z|+HH:MM] (UTC without a zone).",
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
    except BrokenPipeError:  # `catalog run-check ... | head -1`: the reader closed our output, having what it wanted
        _quiet_stdout()
        return 0
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


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that Python's flush at exit does not fail on the closed pipe again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _internal_error(error: Exception) -> int:
    """A bug: still one line, the traceback only on request."""
    if os.environ.get("CATALOG_DEBUG"):
        raise error
    reason = redact_credentials(f"{type(error).__name__}: {error}")  # e.g. a git command line holding the URL
    print(f"catalog: internal error ({reason}); set CATALOG_DEBUG=1 for details", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
