"""HTTP to Switchboard: one request, retried while a retry can help.

429, 408 and 5xx answers and connection errors (refused, reset, timed out)
are retried with exponential backoff and jitter, never sooner than the
server's Retry-After. A 202 means the batch is stored, so nothing is ever
sent again after one; a retry after an answer that was lost resends the same
bytes, which the server de-duplicates by event identity. Other 4xx answers
raise `Rejected` at once: retrying would not change them.
"""

from __future__ import annotations

import email.utils
import gzip
import http.client
import json
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime

from switchboard_client import __version__

USER_AGENT = f"switchboard-client/{__version__}"
# This machine's clock when a request leaves: the server corrects the events' timestamps
# by it for this clock's skew (its docs/event-types.md, "Client clocks").
SENT_AT_HEADER = "X-Sent-At"


def send_time() -> float:
    return time.time()


def stamp_send_time(request: urllib.request.Request) -> None:
    """Set the send time of this attempt: a retry is stamped anew, the body stays the same."""
    request.add_header(SENT_AT_HEADER, f"{send_time():.6f}")


class Rejected(Exception):
    """The server refused a request for a reason that a retry would not change."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class RetriesExhausted(Exception):
    """Every attempt failed with an error worth retrying; `__cause__` is the last one."""


def is_retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


def retry_after_seconds(header: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds to wait: a number of seconds or an HTTP date (RFC 9110)."""
    if not header:
        return None
    header = header.strip()
    try:
        return max(float(header), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds before retry number `attempt + 1`: exponential, capped, half of it random
    (so that clients that failed together do not come back together), and never
    sooner than the server asked."""
    ceiling = min(cap, base * 2**attempt)
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, retry_after + random.uniform(0, base))
    return delay


@dataclass
class Transport:
    base_url: str
    api_key: str
    timeout: float = 15.0
    max_retries: int = 10
    backoff: float = 0.5
    max_backoff: float = 30.0
    gzip: bool = True

    def post_ndjson(self, body: bytes) -> dict:
        """Post one NDJSON body of events stamped by this machine's clock (retried as needed);
        returns the server's 202 answer."""
        return self.post_events(body, "application/x-ndjson", stamped=True)

    def post_events(self, body: bytes, content_type: str, stamped: bool = False) -> dict:
        """Post one body of events: NDJSON, or JSON (an object or an array). `stamped`: their
        timestamps come from this machine's clock, so each attempt tells its send time."""
        headers = {"Content-Type": content_type}
        if self.gzip:
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        return self.request("POST", "/api/events/", body, headers, stamped=stamped)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None, stamped: bool = False
    ) -> dict:
        headers = {
            "Authorization": f"Api-Key {self.api_key}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            **(headers or {}),
        }
        request = urllib.request.Request(self.base_url.rstrip("/") + path, body, headers, method=method)
        for attempt in range(self.max_retries + 1):
            retry_after = None
            if stamped:
                stamp_send_time(request)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as error:
                detail = _detail(error.read())
                if not is_retryable(error.code):
                    raise Rejected(error.code, detail) from None
                last: Exception = Rejected(error.code, detail)
                retry_after = retry_after_seconds(error.headers.get("Retry-After"))
            except (OSError, http.client.HTTPException) as error:  # refused, reset, timed out, cut short
                last = error
            if attempt < self.max_retries:
                time.sleep(backoff_delay(attempt, self.backoff, self.max_backoff, retry_after))
        raise RetriesExhausted(f"{method} {path} failed {self.max_retries + 1} times: {last}") from last


def _detail(body: bytes) -> str:
    try:
        return str(json.loads(body).get("detail", body[:500].decode(errors="replace")))
    except (ValueError, AttributeError):
        return body[:500].decode(errors="replace")
