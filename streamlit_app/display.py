"""Small pure helpers that turn the gateway's JSON into what a page shows (no Streamlit)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

# Cell styles (pandas Styler CSS) for a status or a worker's health. Colours, not emoji:
# a browser without an emoji font (a headless CI Chromium) shows emoji as empty boxes.
STATUS_STYLES = {
    "pending": "background-color: #e3f2fd; color: #0d47a1",
    "running": "background-color: #fff8e1; color: #8d6e00",
    "completed": "background-color: #c8e6c9; color: #1b5e20",
    "failed": "background-color: #ffcdd2; color: #b71c1c; font-weight: bold",
    "canceled": "background-color: #e0e0e0; color: #424242",
}
HEALTH_STYLES = {
    "healthy": "background-color: #c8e6c9; color: #1b5e20",
    "stale": "background-color: #ffe0b2; color: #e65100; font-weight: bold",
    "gone": "background-color: #e0e0e0; color: #616161",
}


def cell_style(styles: dict[str, str]) -> Callable[[object], str]:
    """A ``Styler.map`` function: the style of the first word of a cell (``pending (queued)``
    is styled as ``pending``)."""

    def style(cell: object) -> str:
        words = str(cell).split()
        return styles.get(words[0], "") if words else ""

    return style


def parse_time(value: str | None) -> datetime | None:
    """An ISO-8601 timestamp of the API as an aware datetime (None stays None)."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def clock(value: str | None) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SS`` UTC, or an empty string."""
    parsed = parse_time(value)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if parsed else ""


def seconds_between(earlier: str | None, later: datetime) -> float | None:
    parsed = parse_time(earlier)
    return None if parsed is None else (later - parsed).total_seconds()


def duration(seconds: float | None) -> str:
    """``0.4 s``, ``12 s``, ``3 min``, ``2.5 h``, ``4.0 d``; ``never`` for None."""
    if seconds is None:
        return "never"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def milliseconds(value: float | None) -> str:
    """A latency in ms as ``0.8 ms``, ``35 ms``, ``1.25 s``; ``—`` when there is none."""
    if value is None:
        return "—"
    if value < 10:
        return f"{value:.1f} ms"
    if value < 1000:
        return f"{value:.0f} ms"
    return f"{value / 1000:.2f} s"


def status_label(status: str, pending_reason: str | None = None) -> str:
    """``pending (retrying)``; just the status when there is no sub-state."""
    return f"{status} ({pending_reason})" if pending_reason else status


def relative(value: str | None, now: datetime) -> str:
    """A timestamp relative to ``now``: ``12 s ago``, ``in 3 min``; empty for None."""
    parsed = parse_time(value)
    if parsed is None:
        return ""
    seconds = (now - parsed).total_seconds()
    return f"{duration(seconds)} ago" if seconds >= 0 else f"in {duration(-seconds)}"


def when(value: str | None, now: datetime) -> str:
    """HTML for ``st.markdown(..., unsafe_allow_html=True)``: the time relative to ``now``,
    the absolute UTC time on hover (``—`` for None). Our own timestamps only: nothing a
    user typed is put in here."""
    if value is None:
        return "—"
    return f'<span title="{clock(value)} UTC">{relative(value, now)}</span>'


def parse_since(text: str, now: datetime) -> datetime | None:
    """A "since" an operator types, in UTC: ``10:00`` (today, or yesterday when that is
    still ahead), or a date and time ``2026-12-04 10:00``; None for an empty text.
    ValueError with the accepted forms for anything else."""
    text = text.strip()
    if not text:
        return None
    try:
        if len(text) <= 5 and ":" in text:
            hours, minutes = (int(part) for part in text.split(":"))
            today = now.astimezone(UTC).replace(hour=hours, minute=minutes, second=0, microsecond=0)
            return today if today <= now else today - timedelta(days=1)
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(
            f"{text!r} is not a time: write HH:MM (UTC, today) or YYYY-MM-DD HH:MM (UTC)"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
