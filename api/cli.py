"""The `catalog` program: the core's commands, plus `serve` and `up`, which run the web app."""

from __future__ import annotations

import argparse
import os
import sys

from reconciler import cli as core
from reconciler.commands import open_store, settings_from


def _settings(args: argparse.Namespace):
    """Settings from flags and environment; the server URL follows --host/--port unless given."""
    settings = settings_from(args)
    if not (args.server_url or os.environ.get("CATALOG_SERVER_URL")):
        host = f"[{args.host}]" if ":" in args.host else args.host
        if args.host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        settings.server_url = f"http://{host}:{args.port}"
    return settings


def cmd_serve(args: argparse.Namespace) -> int:
    from api.access import AccessLog
    from api.app import create_app, serve

    settings = _settings(args)
    serve(create_app(open_store(settings), settings, access_log=AccessLog()), host=args.host, port=args.port)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from api.up import apply_embedded_defaults, up

    settings = _settings(args)
    notes = apply_embedded_defaults(
        settings,
        dispatcher_given=bool(args.dispatcher or os.environ.get("CATALOG_DISPATCHER")),
        public_read_given=args.public_read is not None or bool(os.environ.get("CATALOG_PUBLIC_READ")),
        host=args.host,
    )
    return up(settings, host=args.host, port=args.port, notes=notes)


def main(argv: list[str] | None = None) -> int:
    return core.main(argv, handlers={"serve": cmd_serve, "up": cmd_up})


if __name__ == "__main__":
    sys.exit(main())
