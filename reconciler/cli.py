"""The `catalog` command: a thin layer that parses flags and prints library errors as one line."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from typing import Callable

from .errors import CatalogError
from .settings import Settings

EXIT_ERROR = 1


def _add_settings_flags(parser: argparse.ArgumentParser, *, server: bool = False) -> None:
    """The deployment settings of DESIGN.md section 4; each also an environment variable."""
    parser.add_argument("--home", help="state folder: catalog.db and the git checkout (CATALOG_HOME, default .catalog)")
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

    validate = commands.add_parser("validate", help="validate a catalog directory (exit 0 valid, 1 invalid)")
    validate.add_argument("path", nargs="?", default=".", help="catalog directory (default .)")
    validate.add_argument("--format", choices=("text", "github"), default="text", help="github: ::error annotations")
    validate.set_defaults(handler=cmd_validate)

    schema = commands.add_parser("schema", help="print the JSON Schema of catalog files")
    schema.add_argument("kind", nargs="?", choices=("service", "check", "catalog"), help="one kind of file (default: all)")
    schema.set_defaults(handler=cmd_schema)

    plan = commands.add_parser("plan", help="show what a sync would create, update and remove")
    _add_settings_flags(plan)
    plan.add_argument("--detailed-exitcode", action="store_true", help="exit 0 no changes, 2 changes, 1 error")
    plan.set_defaults(handler=cmd_plan)

    sync = commands.add_parser("sync", help="pull the catalog repository and apply it")
    _add_settings_flags(sync)
    sync.add_argument("--allow-mass-removal", action="store_true", help="allow removing more than half the services")
    sync.set_defaults(handler=cmd_sync)

    status = commands.add_parser("status", help="last sync, counts, pending results")
    _add_settings_flags(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=cmd_status)

    dispatch = commands.add_parser("dispatch", help="one scheduler pass: expire timed-out results, dispatch due checks")
    _add_settings_flags(dispatch)
    dispatch.add_argument("--dry-run", action="store_true", help="list what is due, send nothing")
    dispatch.set_defaults(handler=cmd_dispatch)

    run_check = commands.add_parser("run-check", help="dispatch a check now (ad-hoc)")
    _add_settings_flags(run_check)
    run_check.add_argument("slug", help="the check's slug")
    run_check.add_argument("--service", help="only this service's slug")
    run_check.set_defaults(handler=cmd_run_check)

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
    writeback.set_defaults(handler=cmd_writeback)

    serve = commands.add_parser("serve", help="run the HTTP API")
    _add_settings_flags(serve, server=True)
    serve.set_defaults(handler=cmd_serve)

    up = commands.add_parser("up", help="everything in one process: API, sync loop, scheduler, write-back")
    _add_settings_flags(up, server=True)
    up.set_defaults(handler=cmd_up)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    flags = {name: getattr(args, name, None) for name in ("home", "repo", "branch", "server_url", "dispatcher", "public_read")}
    return Settings.resolve(flags)


def open_store(settings: Settings):
    from .store import Store

    return Store(settings.database_path)


# -- command handlers: each turns arguments into one library call and prints its outcome --------


def cmd_validate(args: argparse.Namespace) -> int:
    raise CatalogError("validate is not implemented yet")


def cmd_schema(args: argparse.Namespace) -> int:
    from .schema import json_schema

    print(json.dumps(json_schema(args.kind), indent=2))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    raise CatalogError("plan is not implemented yet")


def cmd_sync(args: argparse.Namespace) -> int:
    raise CatalogError("sync is not implemented yet")


def cmd_status(args: argparse.Namespace) -> int:
    raise CatalogError("status is not implemented yet")


def cmd_dispatch(args: argparse.Namespace) -> int:
    raise CatalogError("dispatch is not implemented yet")


def cmd_run_check(args: argparse.Namespace) -> int:
    raise CatalogError("run-check is not implemented yet")


def cmd_token_create(args: argparse.Namespace) -> int:
    raise CatalogError("token create is not implemented yet")


def cmd_token_list(args: argparse.Namespace) -> int:
    raise CatalogError("token list is not implemented yet")


def cmd_token_revoke(args: argparse.Namespace) -> int:
    raise CatalogError("token revoke is not implemented yet")


def cmd_writeback(args: argparse.Namespace) -> int:
    raise CatalogError("writeback is not implemented yet")


def cmd_serve(args: argparse.Namespace) -> int:
    raise CatalogError("serve is not implemented yet")


def cmd_up(args: argparse.Namespace) -> int:
    raise CatalogError("up is not implemented yet")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CatalogError as error:
        print(f"catalog: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("catalog: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_ERROR
    except (OSError, sqlite3.Error) as error:
        print(f"catalog: {error}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as error:  # a bug: still one line, the traceback only on request
        if os.environ.get("CATALOG_DEBUG"):
            raise
        print(f"catalog: internal error ({type(error).__name__}: {error}); set CATALOG_DEBUG=1 for details", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
