"""Client clocks (SPEC §10): a record sent with its client's send time is placed by the server's clock.

A client whose clock is off by minutes stamps its events off by as much. When the
record (`sentAt`) or its batch (the `X-Sent-At` header) says when the client sent
it, the skew is `sentAt - received_at`, and the event is placed at
`received_at - (sentAt - timestamp)` (as Segment and PostHog do); the timestamp as
sent is kept (`Event.client_timestamp`). Without a send time nothing changes.

A skew within the setting CLOCK_SKEW_TOLERANCE_SECONDS (10 s) is not corrected: `received_at - sentAt`
is the clock's offset plus the request's transit (milliseconds, seconds for a slow upload
or a queued request), so a small one is mostly transit, and correcting it would only move
a well-set clock's events by a jitter that differs per batch (and break the exact order of
a status and a message stamped in the same second).

Limits, each with its reason:
* a client clock more than 23 h ahead of the server (its `sentAt`, or the record's
  `timestamp` itself) is refused, not corrected: that is a broken clock or a wrong
  unit, not a skew (PostHog's bound);
* a `timestamp` more than FUTURE_TOLERANCE_SECONDS after its own `sentAt` is in the
  future once corrected (SPEC §2.4), and refused as any future timestamp is;
* a clock behind is corrected however far behind it is, down to 1970.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from events.registry import RECEIVED_AT, SENT_AT, Invalid, NormalizedEvent, check_not_future, json_type_name, recognise

MAX_CLOCK_AHEAD_SECONDS = 23 * 3600
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Receipt:
    """When the server received a batch (its clock), and the send time its client gave for all of it."""

    received_at: float
    sent_at: float | None = None


def normalize(
    record: object, now: float, future_tolerance: float, receipt: Receipt | None = None, skew_tolerance: float = 0.0
) -> NormalizedEvent:
    """Validate one decoded JSON value and place it in time: corrected for its client's clock
    when it has a send time more than `skew_tolerance` off the receive time, else as given
    (the future judged against `now`)."""
    event = recognise(record)
    times = send_time(record, receipt)  # type: ignore[arg-type]  # recognise() proved it an object
    place(event, times, now, future_tolerance, skew_tolerance)
    return event


def place(
    event: NormalizedEvent,
    times: tuple[float, float] | None,
    now: float,
    future_tolerance: float,
    skew_tolerance: float,
) -> None:
    """Place a recognised event in time by its (sent_at, received_at), if any (`send_times`); `Invalid` if refused."""
    if times is None or abs(times[0] - times[1]) <= skew_tolerance:
        check_not_future(event, now, future_tolerance)
    else:
        correct(event, *times, future_tolerance)
        # A receive time the record brings (an import) is the client's word: the placed time is
        # held to the server's own clock too, so no record lands in the future.
        check_not_future(event, now, future_tolerance)


def iso_epoch_micros(text: str) -> int:
    """Whole microseconds since the epoch of an ISO 8601 text (naive means UTC); ValueError if
    it is not one. Whole microseconds, so that a stored time gives its text back exactly."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // MICROSECOND


def epoch_of(value: object, field: str) -> float:
    """Epoch seconds of a send or receive time: a JSON number, or an ISO 8601 string (naive means UTC)."""
    if isinstance(value, str):
        try:
            seconds = iso_epoch_micros(value) / 1_000_000
        except ValueError:
            raise Invalid(f"'{field}' {value[:64]!r} is not ISO 8601") from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise Invalid(f"'{field}' must be finite")
    else:
        raise Invalid(f"'{field}' must be epoch seconds (a number) or an ISO 8601 string, got {json_type_name(value)}")
    if seconds < 0:
        raise Invalid(f"'{field}' must not be before 1970")
    return seconds


def header_epoch(text: str) -> float:
    """The `X-Sent-At` header: epoch seconds or ISO 8601; `Invalid` says why not."""
    text = text.strip()
    try:
        value: object = float(text)
    except ValueError:
        value = text
    return epoch_of(value, "X-Sent-At")


def send_time(record: dict[str, Any], receipt: Receipt | None) -> tuple[float, float] | None:
    """(sent_at, received_at) when the record's time is to be corrected, else None.

    `sentAt` is the record's send time by its client's clock; `receivedAt` an imported record's
    receive time (logged traffic, exports), ignored from the API. Each is epoch seconds or ISO 8601.

    From the API (a receipt): the record's `sentAt`, else its batch's. Imports have no
    receipt: only a record that brings both `sentAt` and `receivedAt` is corrected.
    """
    return send_times(record.get(SENT_AT), record.get(RECEIVED_AT), receipt)


def send_times(sent: object, received: object, receipt: Receipt | None) -> tuple[float, float] | None:
    """`send_time` of a record whose `sentAt` and `receivedAt` are `sent` and `received` (None: absent)."""
    if receipt is not None:
        if sent is not None:
            return epoch_of(sent, SENT_AT), receipt.received_at
        if receipt.sent_at is not None:
            return receipt.sent_at, receipt.received_at
        return None
    if sent is None or received is None:
        return None
    return epoch_of(sent, SENT_AT), epoch_of(received, RECEIVED_AT)


def correct(event: NormalizedEvent, sent_at: float, received_at: float, future_tolerance: float) -> None:
    """Place `event` by the server's clock, keeping the timestamp as sent; `Invalid` if refused."""
    ts = event.ts
    if sent_at - received_at > MAX_CLOCK_AHEAD_SECONDS:
        raise Invalid(
            f"send time {sent_at:.3f} is more than 23 h ahead of the server's receipt at {received_at:.3f}: "
            "a client clock this far ahead is refused, not corrected"
        )
    if ts - received_at > MAX_CLOCK_AHEAD_SECONDS:
        raise Invalid(
            f"timestamp {ts:.3f} is more than 23 h ahead of the server's receipt at {received_at:.3f}: "
            "a client clock this far ahead is refused, not corrected"
        )
    if ts - sent_at > future_tolerance:
        raise Invalid(
            f"timestamp {ts:.3f} is more than {future_tolerance:.0f}s after its send time {sent_at:.3f}, "
            "so in the future once corrected for the client's clock"
        )
    placed = received_at - (sent_at - ts)
    if placed < 0:
        raise Invalid(f"timestamp {ts:.3f} corrected for the client's clock ({placed:.3f}) is before 1970")
    event.client_ts, event.ts = ts, placed
