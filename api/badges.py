"""Shields-style SVG status badges for READMEs: a service overall, or one check on a service.

Badges follow the read rule of every other read: public when the server runs with public read
(`--public-read`), otherwise they need a token like any page. GitHub's image proxy sends no token,
so README badges need public read. Public badges are cacheable for five minutes, with an ETag.
"""

from __future__ import annotations

import hashlib
from html import escape

from litestar import Request, Response
from litestar.datastructures import State
from litestar.params import FromPath

from api import dashboard
from api.auth import requires_read
from api.routing import get
from reconciler.errors import NotFound

CACHE_SECONDS = 300
COLOURS = {
    "pass": "#2e7d32", "warning": "#a15c00", "fail": "#c62828", "error": "#c62828", "timed-out": "#c62828",
    "skipped": "#6b6b6b", "pending": "#6b6b6b", "sent": "#6b6b6b", "none": "#6b6b6b",
    "passing": "#2e7d32", "failing": "#c62828", "unknown": "#6b6b6b",
}
LABEL_COLOUR = "#555"


def _text_width(text: str) -> int:
    """Roughly the width of 11px Verdana: enough for a badge without measuring fonts."""
    return int(sum(7.5 if ch.isupper() or ch in "mwMW" else 6.2 for ch in text)) + 10


def render_badge(label: str, message: str, colour: str) -> str:
    """One SVG badge: grey label on the left, coloured message on the right; texts escaped."""
    left, right = _text_width(label), _text_width(message)
    width = left + right
    label_text, message_text = escape(label), escape(message)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img"'
        f' aria-label="{label_text}: {message_text}"><title>{label_text}: {message_text}</title>'
        f'<rect width="{left}" height="20" fill="{LABEL_COLOUR}"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{colour}"/>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{left / 2}" y="14">{label_text}</text>'
        f'<text x="{left + right / 2}" y="14">{message_text}</text></g></svg>'
    )


def svg_slug(name: str) -> str:
    """The slug in a badge's file name (`x.svg`); any other name is a 404."""
    if not name.endswith(".svg") or len(name) <= 4:
        raise NotFound(f"badges end in .svg, not {name!r}")
    return name[:-4]


def badge_response(request: Request, svg: str) -> Response:
    """A badge with its cache headers; 304 when the client already holds it (its ETag)."""
    etag = '"' + hashlib.sha256(svg.encode()).hexdigest()[:32] + '"'
    public = request.app.state.settings.public_read
    headers = {
        "Cache-Control": f"{'public' if public else 'private'}, max-age={CACHE_SECONDS}",
        "ETag": etag,
    }
    if request.headers.get("if-none-match") == etag:
        return Response(content=b"", status_code=304, headers=headers)
    return Response(content=svg, media_type="image/svg+xml; charset=utf-8", headers=headers)


@get("/badges/services/{name:str}", guards=[requires_read], include_in_schema=False, sync_to_thread=True)
def service_badge(request: Request, state: State, name: FromPath[str]) -> Response:
    """`passing`, `N failing` or `unknown` over every check of the service."""
    store, now = state.store, state.clock.now()
    service = store.reads.service(svg_slug(name))
    verdict = dashboard.overall([one for _, one in dashboard.service_cells(store, service, now)])
    colour = COLOURS["failing" if verdict.endswith("failing") else verdict]
    return badge_response(request, render_badge(service["slug"], verdict, colour))


@get("/badges/services/{slug:str}/{name:str}", guards=[requires_read], include_in_schema=False, sync_to_thread=True)
def service_check_badge(request: Request, state: State, slug: FromPath[str], name: FromPath[str]) -> Response:
    """The latest result of one check on one service."""
    store, now = state.store, state.clock.now()
    service = store.reads.service(slug)
    check = store.reads.check(svg_slug(name))
    pair = (check["id"], service["id"])
    cell = dashboard.cell(
        store.pages.latest(service_ids=[service["id"]]).get(pair),
        store.pages.open_runs(service_ids=[service["id"]]).get(pair),
        dashboard.stale_cutoff(check, now), True,
    )
    key = cell.key if cell.key not in ("pending", "sent") else "none"
    message = dashboard.LABELS[key] if key != "none" else "unknown"
    if cell.stale:
        message += " (stale)"
    return badge_response(request, render_badge(check["slug"], message, COLOURS[key]))


BADGE_HANDLERS = [service_badge, service_check_badge]
