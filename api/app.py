"""The app factory: `create_app(store, settings)` builds the Litestar app, so tests hand in their own."""

from __future__ import annotations

import gc
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from litestar import Litestar, MediaType
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware

from api.access import AccessLog
from api.actions import ActionController, SyncController, webhook_github
from api.auth import AuthMiddleware
from api.batches import BatchController
from api.catalog import CheckController, ServiceController
from api.errors import EXCEPTION_HANDLERS
from api.events import EventController
from api.metrics import metrics, metrics_registry
from api.openapi import openapi_config
from api.pages import PAGE_HANDLERS, template_config
from api.results import AnswerWriter, ResultController, export_results_csv
from api.scorecards import API_HANDLERS as SCORECARD_HANDLERS
from api.routing import get, read
from reconciler.clock import Clock
from reconciler.logs import log_to_stderr
from reconciler.oidc import OidcVerifier
from reconciler.settings import Settings
from reconciler.store import Database
from reconciler.tokens import TokenVerifier

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # api.access writes its lines in this shape too
MAX_BODY_BYTES = 1024 * 1024  # results carry at most a 64 KiB message; nothing needs more
log = logging.getLogger("catalog.api")

SyncTrigger = Callable[[], None]
CheckRunner = Callable[[str, "str | None"], list]


@get("/healthz", tags=["operations"], summary="Liveness: the server answers and its database opens",
     media_type=MediaType.JSON)
async def healthz(state: State) -> dict:
    return {"status": "ok", "schema_version": await read(state.store, state.store.schema_version)}


def create_app(
    store: Database,
    settings: Settings,
    *,
    clock: Clock | None = None,
    sync_trigger: SyncTrigger | None = None,
    check_runner: CheckRunner | None = None,
    access_log: AccessLog | None = None,
    oidc: OidcVerifier | None = None,
) -> Litestar:
    """The whole HTTP face: API, webhook, dashboard pages, OpenAPI at /schema; `access_log` gets a
    line per request (`catalog serve` and `catalog up` give one writing to stderr). `oidc` checks
    GitHub Actions OIDC tokens (default: CATALOG_OIDC_ISSUER for CATALOG_OIDC_AUDIENCE)."""
    clock = clock or Clock()
    verifier = TokenVerifier(store, clock)
    oidc = oidc or OidcVerifier(settings.oidc_issuer, settings.expected_audience)
    # The answers' writer thread never checkpoints in a commit; a thread of its own copies the WAL back
    # (PASSIVE: it blocks no writer), so the next batch is written meanwhile (AnswerWriter._after_commit).
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog-writer", initializer=_defer_checkpoints,
                                initargs=(store,))
    checkpointer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog-checkpoint")
    registry, http_metrics = metrics_registry(store, clock, settings)
    state = State({
        "store": store,
        "settings": settings,
        "clock": clock,
        "sync_trigger": sync_trigger or default_sync_trigger(store, settings),
        "check_runner": check_runner or default_check_runner(store, settings, clock),
        "answers": AnswerWriter(store, writer, checkpointer),
        "metrics_registry": registry,
    })
    return Litestar(
        route_handlers=[
            healthz, metrics, ResultController, export_results_csv, BatchController, ServiceController, CheckController,
            SyncController, ActionController, EventController, webhook_github, *SCORECARD_HANDLERS, *PAGE_HANDLERS,
        ],
        state=state,
        middleware=[DefineMiddleware(AuthMiddleware, verifier=verifier, oidc=oidc)],
        exception_handlers=EXCEPTION_HANDLERS,
        before_send=[http_metrics.before_send, *([access_log.before_send] if access_log else [])],
        request_max_body_size=MAX_BODY_BYTES,
        template_config=template_config(),
        openapi_config=openapi_config(),
        on_shutdown=[lambda app: (writer.shutdown(wait=True), checkpointer.shutdown(wait=True))],
        logging_config=None,
        debug=False,
    )


def default_sync_trigger(store: Database, settings: Settings) -> SyncTrigger:
    """Start a sync of the configured repository in a background thread; one at a time."""
    running = threading.Lock()

    def run() -> None:
        from reconciler.gitsource import source_from_settings
        from reconciler.reconcile import sync

        try:
            report = sync(store, source_from_settings(settings))
            log.info("background sync: %s", report)
        except Exception:  # a sync failure is recorded in sync_runs by the reconciler; log it too
            log.exception("background sync failed")
        finally:
            running.release()

    def trigger() -> None:
        if not running.acquire(blocking=False):
            return  # a sync is running; it will read the newest revision anyway
        threading.Thread(target=run, name="catalog-sync", daemon=True).start()

    return trigger


def default_check_runner(store: Database, settings: Settings, clock: Clock) -> CheckRunner:
    """Dispatch a check now through the configured dispatcher (reconciler.schedule.run_check)."""

    def run(check_slug: str, service_slug: str | None) -> list:
        from reconciler.dispatch import dispatcher_from_settings
        from reconciler.schedule import run_check

        dispatcher = dispatcher_from_settings(settings, clock=clock, store=store)
        return run_check(store, dispatcher, check_slug, service_slug, settings=settings, clock=clock)

    return run


def _defer_checkpoints(store: Database) -> None:
    """The writer thread's first work. Logged, never raised: an initializer's error breaks its pool for good."""
    try:
        store.results.defer_checkpoints()
    except Exception as error:  # noqa: BLE001 - the thread's commits then checkpoint as SQLite does by default
        log.warning("could not defer WAL checkpoints on the writer thread: %s", error)


def server_config(app: Litestar, *, host: str, port: int):
    """uvicorn's settings for `catalog serve` and `catalog up`: uvloop + httptools, our own access log."""
    import uvicorn

    return uvicorn.Config(
        app, host=host, port=port, loop="uvloop", http="httptools", access_log=False,
        proxy_headers=False,  # a proxy's X-Forwarded-For would only change the client address, which nothing uses
        log_level="info", server_header=False, timeout_graceful_shutdown=10, log_config=None,
    )


def settle_heap() -> None:
    """Hide the objects alive after start-up (modules, the app and its routes: some 70,000) from the
    garbage collector. A full collection then scans only what requests allocate; scanning them all
    paused the server for up to 40 ms under load, which was most of the PATCH p99."""
    gc.collect()
    gc.freeze()


def run_server(server, base: str) -> None:
    """`server.run()` (a uvicorn.Server); a port it cannot listen on is a ConfigError, not uvicorn's exit."""
    from reconciler.errors import ConfigError

    try:
        server.run()
    except SystemExit:
        if server.started:
            raise
    if not server.started:
        raise ConfigError(f"could not listen on {base} (is the port in use? try --port)")


def serve(app: Litestar, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    log_to_stderr(LOG_FORMAT)
    server = uvicorn.Server(server_config(app, host=host, port=port))
    settle_heap()
    run_server(server, f"http://{host}:{port}")
