"""Stored epoch seconds as date-times, the one place that converts them for display.

Python's `datetime` ends at 9999-12-31 (and holds no infinity or NaN). Ingest refuses future
timestamps, so only an old import can have stored a `ts` past that; converting it raised, and
every page showing the event answered 500. Such a time is shown as OUT_OF_RANGE, and its epoch
seconds as stored wherever the page has them.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

OUT_OF_RANGE = "out of range"


def utc_moment(ts: float) -> datetime | None:
    """The date-time (UTC) of epoch seconds; None when no date-time can hold it."""
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):  # past year 9999, infinite, NaN
        return None


def utc_text(ts: float | None, pattern: str) -> str:
    """Epoch seconds formatted with `pattern` (strftime, UTC); '' for none, OUT_OF_RANGE if unrepresentable."""
    if ts is None:
        return ""
    moment = utc_moment(ts)
    return OUT_OF_RANGE if moment is None else moment.strftime(pattern)


def finite_or_none(ts: float | None) -> float | None:
    """Epoch seconds for JSON, which has no infinity or NaN: those become null."""
    return ts if ts is not None and math.isfinite(ts) else None
