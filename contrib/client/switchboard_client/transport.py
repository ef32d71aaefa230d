"""HTTP to Switchboard: one request, retried while a retry can help.

429, 408 and 5xx answers and connection errors (refused, reset, timed out)
are retried with exponential backoff and jitter, never sooner than the
server's Retry-After. A 202 means the batch is stored, so nothing is ever
sent again after one; a retry after an answer that was lost resends the same
bytes, which the server de-duplicates by event identity. Other 4xx answers
raise `Rejected` at once: retrying would not change them. A 413 (a body over
the server's MAX_BODY_BYTES or MAX_RECORDS_PER_BODY) is for the caller to
split: `halves_of_too_large`.

Redirects are never followed: urllib would turn a redirected POST into a GET
(the events lost) or send the key to whatever host the Location names. A 3xx
raises `Redirected`, naming the Location: the configured URL is wrong (say
http:// where the service wants https://), and only the user can fix that.
"""

from __future__ import annotations

import email.utils
import gzip
import http.client
import json
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from switchboard_client import __version__

USER_AGENT = f"switchboard-client/{__version__}"
# The server's 413 detail, when it names its records limit (ingest/body.py).
RECORDS_LIMIT = re.compile(r"more than (\d+) records")
T = TypeVar("T")
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


class Redirected(Rejected):
    """The server answered a redirect (3xx), which is not followed; `location` is where it pointed."""

    def __init__(self, status: int, method: str, url: str, location: str | None) -> None:
        where = urllib.parse.urljoin(url, location) if location else "no Location given"
        super().__init__(
            status,
            f"{method} {url} was redirected to {where}, not followed (the API key and the events go only to"
            " the configured URL): set the client's URL to where the service answers",
        )
        self.location = where if location else None


class RetriesExhausted(Exception):
    """Every attempt failed with an error worth retrying; `__cause__` is the last one."""


class Cancelled(Exception):
    """The request was given up on before its retries ran out (the client's shutdown deadline)."""


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


def halves_of_too_large(error: Exception, items: list[T]) -> list[list[T]] | None:
    """The two halves to post instead of `items` when the server refused them as too
    large (413) and there is more than one item to split; None otherwise."""
    if isinstance(error, Rejected) and error.status == 413 and len(items) > 1:
        half = (len(items) + 1) // 2
        return [items[:half], items[half:]]
    return None


def records_limit(error: Exception) -> int | None:
    """The records per body the server takes, when its 413 says so (MAX_RECORDS_PER_BODY)."""
    if isinstance(error, Rejected) and error.status == 413 and (match := RECORDS_LIMIT.search(error.detail)):
        return max(int(match.group(1)), 1)
    return None


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
    # Set to give up: a backoff wait ends at once and raises `Cancelled`.
    cancel: threading.Event = field(default_factory=threading.Event)
    opener: urllib.request.OpenerDirector = field(default_factory=lambda: urllib.request.build_opener(NoRedirects))

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
        url = self.base_url.rstrip("/") + path
        request = urllib.request.Request(url, body, headers, method=method)
        for attempt in range(self.max_retries + 1):
            retry_after = None
            if self.cancel.is_set():
                raise Cancelled(f"{method} {path} given up on")
            if stamped:
                stamp_send_time(request)
            try:
                with self.opener.open(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as error:
                if 300 <= error.code < 400:
                    raise Redirected(error.code, method, url, error.headers.get("Location")) from None
                detail = _detail(error.read())
                if not is_retryable(error.code):
                    raise Rejected(error.code, detail) from None
                last: Exception = Rejected(error.code, detail)
                retry_after = retry_after_seconds(error.headers.get("Retry-After"))
            except (OSError, http.client.HTTPException) as error:  # refused, reset, timed out, cut short
                last = error
            if attempt < self.max_retries and self.cancel.wait(
                backoff_delay(attempt, self.backoff, self.max_backoff, retry_after)
            ):
                raise Cancelled(f"{method} {path} given up on after {attempt + 1} attempts: {last}") from last
        raise RetriesExhausted(f"{method} {path} failed {self.max_retries + 1} times: {last}") from last


def _detail(body: bytes) -> str:
    try:
        return str(json.loads(body).get("detail", body[:500].decode(errors="replace")))
    except (ValueError, AttributeError):
        return body[:500].decode(errors="replace")
