"""A small client for Switchboard's `POST /api/events/` (standard library only).

    from switchboard_client import Client
    client = Client("https://switchboard.example.com", api_key="sb_...")
    client.send([{"id": "m1", "type": "message", ...}, ...])   # -> list of batch ids
    client.batch(batch_id)                                      # -> status, counts, rejections

Events are sent as gzip-compressed NDJSON in batches that stay under the
server's body limit. 429 and 5xx answers and connection errors are retried
with exponential backoff (honouring Retry-After); a 202 means the batch is
stored, so a retry never follows one. Other 4xx answers raise `Rejected` with
the server's reason: retrying would not help.
"""

from __future__ import annotations

import gzip
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

DEFAULT_MAX_BATCH_BYTES = 8 * 1024 * 1024  # below the server's default 10 MB
DEFAULT_MAX_BATCH_EVENTS = 5000
RETRY_STATUSES = {429, 500, 502, 503, 504}


class Rejected(Exception):
    """The server refused a request for a reason that a retry would not change."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass
class Client:
    base_url: str
    api_key: str
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS
    retries: int = 5
    backoff_seconds: float = 0.5
    timeout: float = 30.0

    def send(self, events: Iterable[dict]) -> list[int]:
        """Post events in as few batches as the limits allow; returns the batch ids."""
        return [self.post_ndjson(body) for body in self._bodies(events)]

    def post_ndjson(self, body: bytes) -> int:
        """Post one NDJSON body (compressed here); returns its batch id."""
        headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
        answer = self._request("POST", "/api/events/", gzip.compress(body), headers)
        return answer["batch_id"]

    def batch(self, batch_id: int) -> dict:
        return self._request("GET", f"/api/batches/{batch_id}/")

    def wait(self, batch_ids: Iterable[int], timeout: float = 60.0, poll: float = 0.5) -> list[dict]:
        """Wait until the batches are processed; returns their final status documents."""
        deadline = time.monotonic() + timeout
        pending = list(batch_ids)
        done: dict[int, dict] = {}
        while pending:
            for batch_id in list(pending):
                status = self.batch(batch_id)
                if status["status"] == "done":
                    done[batch_id] = status
                    pending.remove(batch_id)
            if pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"batches still unfinished after {timeout}s: {pending}")
                time.sleep(poll)
        return [done[batch_id] for batch_id in done]

    def _bodies(self, events: Iterable[dict]) -> Iterator[bytes]:
        lines: list[bytes] = []
        size = 0
        for event in events:
            line = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
            if lines and (size + len(line) > self.max_batch_bytes or len(lines) >= self.max_batch_events):
                yield b"".join(lines)
                lines, size = [], 0
            lines.append(line)
            size += len(line)
        if lines:
            yield b"".join(lines)

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> dict:
        headers = {"Authorization": f"Api-Key {self.api_key}", "Accept": "application/json", **(headers or {})}
        request = urllib.request.Request(self.base_url.rstrip("/") + path, body, headers, method=method)
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as error:
                detail = _detail(error.read())
                if error.code not in RETRY_STATUSES or attempt == self.retries:
                    raise Rejected(error.code, detail) from None
                delay = _retry_after(error.headers.get("Retry-After"), self.backoff_seconds * 2**attempt)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if attempt == self.retries:
                    raise
                delay = self.backoff_seconds * 2**attempt
            time.sleep(delay)
        raise AssertionError("unreachable")


def _detail(body: bytes) -> str:
    try:
        return str(json.loads(body).get("detail", body[:500].decode(errors="replace")))
    except (ValueError, AttributeError):
        return body[:500].decode(errors="replace")


def _retry_after(header: str | None, default: float) -> float:
    try:
        return max(float(header), default) if header else default
    except ValueError:
        return default
