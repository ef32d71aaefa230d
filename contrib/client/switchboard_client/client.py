"""`Client`: queue events in memory, send them in batches from a background thread.

    client = Client("https://switchboard.example.com", "sb_...")
    client.enqueue({"id": "m1", "type": "message", ...})   # returns at once
    client.flush()                                          # optional: wait until sent

One daemon thread takes events from a bounded queue and posts them as gzip
NDJSON: a batch leaves when it holds `flush_at` events, when one more would
pass `max_batch_bytes`, or `flush_interval` seconds after its first event.
Each event is serialized once, when it is enqueued; retries resend those very
bytes, so the server's de-duplication (by event id, or by content for events
without one) makes a retry after a lost answer harmless. What is still queued
when the interpreter exits normally is sent before it ends (atexit).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Literal

from switchboard_client.batching import bodies, encode, join
from switchboard_client.transport import Transport

log = logging.getLogger("switchboard_client")

ErrorCallback = Callable[[Exception, list], None]


class QueueFull(Exception):
    """An event was dropped because the queue was full (`when_full="drop"`)."""


class Client:
    """A Switchboard client app's connection: background batching, or synchronous calls.

    Args:
        url: the service, e.g. ``https://switchboard.example.com``.
        api_key: the client app's key (``manage.py create_app``).
        flush_at: events per batch at most.
        flush_interval: seconds an event waits at most for its batch to fill.
        max_batch_bytes: NDJSON bytes per batch at most (before gzip); the server
            refuses bodies over its MAX_BODY_BYTES (10 MB by default).
        max_queue_size: events waiting to be sent at most.
        when_full: ``"block"``: `enqueue` waits for room (backpressure, nothing is
            lost); ``"drop"``: `enqueue` drops the event, returns False, counts it
            in `dropped` and reports it to `on_error` with a `QueueFull`.
        max_retries, backoff, max_backoff: retries of a failed post (429, 5xx,
            connection errors), waiting ``backoff * 2**n`` seconds capped at
            `max_backoff`, half of it random, and at least Retry-After.
        timeout: seconds per HTTP request.
        gzip: compress request bodies.
        on_error: called as ``on_error(exception, events)`` with the events of a
            batch that could not be delivered (retries exhausted, or refused);
            without it, failures are logged (and raised in sync mode).
        sync_mode: `enqueue` posts at once in the calling thread (scripts, tests):
            no thread, no queue.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        flush_at: int = 500,
        flush_interval: float = 1.0,
        max_batch_bytes: int = 1_000_000,
        max_queue_size: int = 10_000,
        when_full: Literal["block", "drop"] = "block",
        max_retries: int = 10,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 15.0,
        gzip: bool = True,
        on_error: ErrorCallback | None = None,
        sync_mode: bool = False,
    ) -> None:
        if flush_at < 1 or max_queue_size < 1 or max_batch_bytes < 1:
            raise ValueError("flush_at, max_queue_size and max_batch_bytes must be at least 1")
        if when_full not in ("block", "drop"):
            raise ValueError('when_full must be "block" or "drop"')
        self.transport = Transport(url, api_key, timeout, max_retries, backoff, max_backoff, gzip)
        self.flush_at = flush_at
        self.flush_interval = flush_interval
        self.max_batch_bytes = max_batch_bytes
        self.max_queue_size = max_queue_size
        self.when_full = when_full
        self.on_error = on_error
        self.sync_mode = sync_mode
        # Counts of events: delivered (answered 202), given up on, dropped when full.
        self.sent = self.failed = self.dropped = 0
        self._closed = False
        self._reset()
        if not sync_mode:
            atexit.register(self.shutdown)

    def _reset(self) -> None:
        """Fresh queue, locks and thread: at creation, and in a forked child (whose
        copy of the parent's queue is the parent's to send, and whose locks may be held)."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._queue: deque[bytes] = deque()
        self._unfinished = 0  # queued or being sent
        self._flushing = 0  # callers waiting in flush(): send partial batches now
        self._thread: threading.Thread | None = None

    @property
    def queue_size(self) -> int:
        """Events waiting in the queue (not counting the batch being filled or sent)."""
        return len(self._queue)

    @property
    def pending(self) -> int:
        """Events enqueued and neither delivered nor given up on yet."""
        return self._unfinished

    # -- the background path ---------------------------------------------------

    def enqueue(self, event: object) -> bool:
        """Queue one event (a JSON object) for sending; True if queued, False if dropped
        (in sync mode: True if delivered, False if it failed and went to `on_error`).

        Thread-safe. Returns at once unless the queue is full and `when_full` is
        "block". Raises TypeError/ValueError for an event JSON cannot carry, and
        RuntimeError after `shutdown()`.
        """
        line = encode(event)
        if self.sync_mode:
            if self._closed:
                raise RuntimeError("the client is shut down")
            return self._deliver([line]) is not None
        if self._pid != os.getpid():
            self._reset()
        with self._lock:
            while not self._closed and len(self._queue) >= self.max_queue_size and self.when_full == "block":
                self._not_full.wait()
            if self._closed:
                raise RuntimeError("the client is shut down")
            queued = len(self._queue) < self.max_queue_size
            if queued:
                self._queue.append(line)
                self._unfinished += 1
                self._not_empty.notify()
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="switchboard-client", daemon=True)
                    self._thread.start()
            else:
                self.dropped += 1
        if not queued:
            self._report(QueueFull(f"queue full ({self.max_queue_size} events): event dropped"), [event])
        return queued

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is queued now and wait until it is delivered or given up on.
        Returns False if `timeout` seconds passed first."""
        if self.sync_mode or self._pid != os.getpid():
            return True
        with self._lock:
            self._flushing += 1
            self._not_empty.notify_all()  # the thread may be waiting for a batch to fill
            try:
                return self._idle.wait_for(lambda: self._unfinished == 0, timeout)
            finally:
                self._flushing -= 1

    def shutdown(self, timeout: float | None = None) -> bool:
        """Refuse new events, deliver the queued ones, stop the thread. Runs by itself
        at interpreter exit. Returns False if `timeout` seconds passed first."""
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()
            thread = self._thread if self._pid == os.getpid() else None
        atexit.unregister(self.shutdown)
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def _run(self) -> None:
        while (lines := self._next_batch()) is not None:
            try:
                self._deliver(lines)
            finally:
                with self._lock:
                    self._unfinished -= len(lines)
                    if self._unfinished == 0:
                        self._idle.notify_all()

    def _next_batch(self) -> list[bytes] | None:
        """The next batch to send, once it is full or due; None once shut down and empty."""
        with self._lock:
            while not self._queue:
                if self._closed:
                    return None
                self._not_empty.wait()
            due = time.monotonic() + self.flush_interval
            lines: list[bytes] = []
            size = 0
            while True:
                while self._queue and len(lines) < self.flush_at:
                    if lines and size + len(self._queue[0]) + 1 > self.max_batch_bytes:
                        break
                    line = self._queue.popleft()
                    lines.append(line)
                    size += len(line) + 1
                self._not_full.notify(len(lines))
                wait = due - time.monotonic()
                if self._queue or len(lines) >= self.flush_at or self._flushing or self._closed or wait <= 0:
                    return lines
                self._not_empty.wait(wait)

    def _deliver(self, lines: list[bytes]) -> int | None:
        """Post one batch; returns its id, or None once the failure is reported."""
        try:
            batch_id = self.transport.post_ndjson(join(lines))["batch_id"]
        except Exception as error:  # whatever happens, the thread lives on and reports it
            with self._lock:
                self.failed += len(lines)
            if self.sync_mode and self.on_error is None:
                raise
            self._report(error, [json.loads(line) for line in lines])
            return None
        with self._lock:
            self.sent += len(lines)
        return batch_id

    def _report(self, error: Exception, events: list) -> None:
        if self.on_error is None:
            log.error("switchboard_client: %d event(s) not delivered: %s", len(events), error)
            return
        try:
            self.on_error(error, events)
        except Exception:
            log.exception("switchboard_client: on_error raised")

    # -- synchronous calls ---------------------------------------------------

    def send(self, events: Iterable[object]) -> list[int]:
        """Post events now, in as few batches as `flush_at` and `max_batch_bytes` allow;
        returns the batch ids. Raises `Rejected` or `RetriesExhausted` on failure."""
        lines = (encode(event) for event in events)
        return [self.post_ndjson(join(group)) for group in bodies(lines, self.flush_at, self.max_batch_bytes)]

    def post_ndjson(self, body: bytes) -> int:
        """Post one NDJSON body as it is; returns its batch id."""
        return self.transport.post_ndjson(body)["batch_id"]

    def batch(self, batch_id: int) -> dict:
        """A batch's status, counts and rejections."""
        return self.transport.request("GET", f"/api/batches/{batch_id}/")

    def wait(self, batch_ids: Iterable[int], timeout: float = 60.0, poll: float = 0.5) -> list[dict]:
        """Wait until the batches are processed; returns their final status documents in order."""
        ids = list(batch_ids)
        deadline = time.monotonic() + timeout
        pending = list(dict.fromkeys(ids))
        done: dict[int, dict] = {}
        while pending:
            for batch_id in list(pending):
                status = self.batch(batch_id)
                if status["status"] in ("done", "failed"):
                    done[batch_id] = status
                    pending.remove(batch_id)
            if pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"batches still unfinished after {timeout}s: {pending}")
                time.sleep(poll)
        return [done[batch_id] for batch_id in ids]
