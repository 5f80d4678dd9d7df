"""Server-rendered SVG charts of level trends: stacked bars per day, no script, no external request."""

from __future__ import annotations

from datetime import date
from html import escape

from reconciler.scorecard_views import TREND_DAYS

# One shade per level, lowest first ("none" is grey); the legend names them, so colour is not the only signal
SHADES = ["#c4c7cc", "#b26a00", "#8a97a6", "#d4a017", "#1b7f2a", "#0b57d0", "#6a1b9a"]
HEIGHT = 120
BAR = 2  # pixels per day: a year fits in 730 px, and the SVG scales down to a phone's width


def shade(index: int) -> str:
    return SHADES[min(index, len(SHADES) - 1)]


def level_trend_svg(days: list[dict], levels: list[str], label: str) -> str:
    """Stacked bars, one per day, of how many services held each level (`days`: [{day, by_level}],
    oldest first); a year wide, the newest day at the right edge."""
    names = ["none", *levels]
    width = TREND_DAYS * BAR
    last = date.fromisoformat(days[-1]["day"]) if days else None
    most = max((sum(day["by_level"].values()) for day in days), default=0) or 1
    parts = [
        f'<svg class="trend" viewBox="0 0 {width} {HEIGHT}" width="100%" height="{HEIGHT}" preserveAspectRatio="none"'
        f' role="img" aria-label="{escape(label)}"><title>{escape(label)}</title>'
    ]
    for day in days:
        position = TREND_DAYS - 1 - (last - date.fromisoformat(day["day"])).days  # type: ignore[operator]
        y = float(HEIGHT)
        for index, name in enumerate(names):
            count = day["by_level"].get(name, 0)
            if not count:
                continue
            height = HEIGHT * count / most
            y -= height
            parts.append(f'<rect x="{position * BAR}" y="{y:.2f}" width="{BAR}" height="{height:.2f}" fill="{shade(index)}">'
                         f'<title>{escape(day["day"])}: {count} {escape(name)}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def legend(levels: list[str]) -> list[dict]:
    return [{"name": name, "colour": shade(index)} for index, name in enumerate(["none", *levels])]


def summary_text(days: list[dict]) -> str:
    """What the chart shows, for a screen reader: the first and last day's counts."""
    if not days:
        return "no daily snapshot yet: the first is taken within a day"
    first, last = days[0], days[-1]
    describe = lambda day: ", ".join(f"{n} {name}" for name, n in day["by_level"].items() if n)  # noqa: E731
    return f"{first['day']}: {describe(first) or 'no services'}; {last['day']}: {describe(last) or 'no services'}"
