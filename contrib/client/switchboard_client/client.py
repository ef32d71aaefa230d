"""`Client`: queue events in memory, send them in batches from a background thread.

    client = Client("https://switchboard.example.com", "sb_...")
    client.enqueue({"id": "m1", "type": "message", ...})   # returns at once
    client.flush()                                          # optional: wait until sent

One daemon thread takes events from a bounded queue and posts them as gzip
NDJSON: a batch leaves when it holds `flush_at` events, when one more would
pass `max_batch_bytes`, or `flush_interval` seconds after its first event.
Each event is serialized once, when it is enqueued; retries resend those very
bytes, so the server's de-duplication (by event id, or by content for events
without one) makes a retry after a lost answer harmless. A batch refused as
too large (413) is split in halves and sent again, down to one event.

What is still queued when the interpreter exits normally is sent before it
ends (one atexit hook for all clients, which share one deadline:
`shutdown_timeout`); what is not delivered by then is reported, logged and,
with `spool_path`, appended to an NDJSON file that `switchboard-send` resends.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from switchboard_client.batching import bodies, encode, join
from switchboard_client.transport import Rejected, Transport, halves_of_too_large, records_limit

log = logging.getLogger("switchboard_client")

ErrorCallback = Callable[[Exception, list], None]

# Clients that may hold events, for the one exit hook; a client that is shut down or
# garbage-collected leaves the set by itself.
_live_clients: weakref.WeakSet[Client] = weakref.WeakSet()


class QueueFull(Exception):
    """An event was dropped because the queue was full (`when_full="drop"`)."""


class ShutdownDeadline(Exception):
    """`shutdown` (or the interpreter's exit) ran out of time before these events were
    delivered. Those that were being sent may have arrived: sending them again is harmless."""


def _shut_down_all() -> None:
    """At interpreter exit: every client stops taking events and sends what it holds,
    all at once, so that exit waits one deadline, not one per client."""
    clients = list(_live_clients)
    for client in clients:
        client._close()
    started = time.monotonic()
    for client in clients:
        limit = client.shutdown_timeout
        client._shutdown_by(None if limit is None else started + limit, limit)


atexit.register(_shut_down_all)


def _send_loop(client_ref: weakref.ref[Client]) -> None:
    """The sender thread. It holds its client only while there is work (and for an
    idle second), so a client that nobody refers to any more is collected once its
    queue is delivered, and the thread ends."""
    while (client := client_ref()) is not None:
        batch = client._next_batch(idle=1.0)
        if batch is None:
            return
        if batch:
            client._send_in_flight()
        del client


class Client:
    """A Switchboard client app's connection: background batching, or synchronous calls.

    Args:
        url: the service, e.g. ``https://switchboard.example.com``. Redirects are
            not followed (see `Redirected`).
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
            batch that could not be delivered (retries exhausted, refused,
            redirected, or left at the shutdown deadline); without it, failures
            are logged (and raised in sync mode).
        sync_mode: `enqueue` posts at once in the calling thread (scripts, tests):
            no thread, no queue.
        shutdown_timeout: seconds `shutdown()` and the interpreter's exit wait at
            most for queued events to be delivered; None: as long as retries take.
        spool_path: a file to which every event not delivered (given up on,
            dropped, or left at the deadline) is appended as an NDJSON line,
            for ``switchboard-send FILE`` to send again.
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
        shutdown_timeout: float | None = 5.0,
        spool_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if flush_at < 1 or max_queue_size < 1 or max_batch_bytes < 1:
            raise ValueError("flush_at, max_queue_size and max_batch_bytes must be at least 1")
        if when_full not in ("block", "drop"):
            raise ValueError('when_full must be "block" or "drop"')
        if shutdown_timeout is not None and shutdown_timeout < 0:
            raise ValueError("shutdown_timeout must be at least 0 (or None)")
        self.transport = Transport(url, api_key, timeout, max_retries, backoff, max_backoff, gzip)
        self.flush_at = flush_at
        self.flush_interval = flush_interval
        self.max_batch_bytes = max_batch_bytes
        self.max_queue_size = max_queue_size
        self.when_full = when_full
        self.on_error = on_error
        self.sync_mode = sync_mode
        self.shutdown_timeout = shutdown_timeout
        self.spool_path = Path(spool_path) if spool_path is not None else None
        # Counts of events: delivered (answered 202), given up on, dropped when full.
        self.sent = self.failed = self.dropped = 0
        # Records per body the server said it takes (its 413): later batches hold no more.
        self.server_records_limit: int | None = None
        self._closed = False
        # Set while a thread runs `on_error`: a failure reported from inside it (say the
        # callback enqueues into a full queue) is logged instead, never reported back into it.
        self._in_on_error = threading.local()
        self._reset()
        if not sync_mode:
            _live_clients.add(self)

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
        # The batch being sent, as parts still to post (the last one next): one part,
        # or the halves of a part the server refused as too large.
        self._in_flight: list[list[bytes]] = []
        self._abandoned = False  # the shutdown deadline passed: what is left was reported
        self._spool_lock = threading.Lock()
        self.transport.cancel = threading.Event()

    @property
    def queue_size(self) -> int:
        """Events waiting in the queue (not counting the batch being filled or sent)."""
        return len(self._queue)

    @property
    def pending(self) -> int:
        """Events enqueued and neither delivered nor given up on yet."""
        return self._unfinished

    def _in_sender_thread(self) -> bool:
        """True in the sender thread, that is inside `on_error`: waiting there for the
        queue to drain would wait for this very thread."""
        return self._thread is threading.current_thread()

    # -- the background path ---------------------------------------------------

    def enqueue(self, event: object) -> bool:
        """Queue one event (a JSON object) for sending; True if queued, False if dropped
        (in sync mode: True if delivered, False if it failed and went to `on_error`).

        Thread-safe. Returns at once unless the queue is full and `when_full` is
        "block" (never blocks when called from `on_error`: a full queue drops the
        event then). Raises TypeError/ValueError for an event JSON cannot carry,
        and RuntimeError after `shutdown()`.
        """
        line = encode(event)
        if self.sync_mode:
            if self._closed:
                raise RuntimeError("the client is shut down")
            return self._send_now([line])
        if self._pid != os.getpid():
            self._reset()
        with self._lock:
            may_block = self.when_full == "block" and not self._in_sender_thread()
            while not self._closed and len(self._queue) >= self.max_queue_size and may_block:
                self._not_full.wait()
            if self._closed:
                raise RuntimeError("the client is shut down")
            queued = len(self._queue) < self.max_queue_size
            if queued:
                self._queue.append(line)
                self._unfinished += 1
                self._not_empty.notify()
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=_send_loop, args=(weakref.ref(self),), name="switchboard-client", daemon=True
                    )
                    self._thread.start()
            else:
                self.dropped += 1
        if not queued:
            self._report(QueueFull(f"queue full ({self.max_queue_size} events): event dropped"), [line])
        return queued

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is queued now and wait until it is delivered or given up on.
        Returns False if `timeout` seconds passed first (and at once, without
        waiting, when called from `on_error` with events still pending)."""
        if self.sync_mode or self._pid != os.getpid():
            return True
        with self._lock:
            if self._in_sender_thread():
                return self._unfinished == 0
            self._flushing += 1
            self._not_empty.notify_all()  # the thread may be waiting for a batch to fill
            try:
                return self._idle.wait_for(lambda: self._unfinished == 0, timeout)
            finally:
                self._flushing -= 1

    def shutdown(self, timeout: float | None = None) -> bool:
        """Refuse new events, deliver the queued ones, stop the thread. Runs by itself
        at interpreter exit.

        Waits at most `timeout` seconds (default: `shutdown_timeout`; None there:
        as long as retries take). What is not delivered by then is given up on:
        reported to `on_error` as a `ShutdownDeadline` with the events, logged,
        and appended to `spool_path` if set. Returns False in that case. Called
        from `on_error`, it does not wait: the thread sends what is queued, then stops.
        """
        limit = self.shutdown_timeout if timeout is None else timeout
        return self._shutdown_by(None if limit is None else time.monotonic() + limit, limit)

    def _shutdown_by(self, deadline: float | None, limit: float | None) -> bool:
        """`shutdown` with its deadline on the monotonic clock (the exit hook's is shared)."""
        thread = self._close()
        _live_clients.discard(self)
        if thread is None:
            return True
        if thread is threading.current_thread():
            return self._unfinished == 0
        if self._abandoned:  # called again (say from on_error) after the deadline passed
            return False
        thread.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))
        if not thread.is_alive():
            return True
        self._give_up(limit)
        return False

    def _close(self) -> threading.Thread | None:
        """Take no more events; the thread sends what is queued, then ends. The thread, if any."""
        if self._pid != os.getpid():
            return None  # a forked child that never enqueued: the parent's lock may be held in its copy
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()
            return self._thread

    def _give_up(self, limit: float | None) -> None:
        """Stop sending; report what is left (the batch being sent, then the queue)."""
        with self._lock:
            if self._abandoned:
                return
            self._abandoned = True
            self.transport.cancel.set()  # a backoff wait ends now
            lines = [line for part in reversed(self._in_flight) for line in part]
            lines += self._queue
            self._in_flight, self._queue = [], deque()
            self.failed += len(lines)
            self._unfinished = 0
            self._idle.notify_all()
        if lines:
            self._report(ShutdownDeadline(f"not delivered within the shutdown deadline ({limit:g}s)"), lines)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def _next_batch(self, idle: float) -> bool | None:
        """Wait until a batch is full or due and make it the one in flight (True); False
        if nothing came for `idle` seconds; None once shut down and empty."""
        with self._lock:
            while not self._queue:
                if self._closed:
                    return None
                if not self._not_empty.wait(idle) and not self._queue and not self._closed:
                    return False
            due = time.monotonic() + self.flush_interval
            most = self._events_per_batch()
            lines: list[bytes] = []
            size = 0
            while True:
                while self._queue and len(lines) < most:
                    if lines and size + len(self._queue[0]) + 1 > self.max_batch_bytes:
                        break
                    line = self._queue.popleft()
                    lines.append(line)
                    size += len(line) + 1
                self._not_full.notify(len(lines))
                wait = due - time.monotonic()
                if self._queue or len(lines) >= most or self._flushing or self._closed or wait <= 0:
                    self._in_flight = [lines]
                    return True
                self._not_empty.wait(wait)

    def _events_per_batch(self) -> int:
        return min(self.flush_at, self.server_records_limit or self.flush_at)

    def _send_in_flight(self) -> None:
        """Post the batch in flight, split in halves while the server finds it too large."""
        while True:
            with self._lock:
                if self._abandoned or not self._in_flight:
                    return
                part = self._in_flight[-1]
            error = self._post(part)
            with self._lock:
                if self._abandoned:  # the shutdown deadline passed: it was reported then
                    return
                self._in_flight.pop()
                if error is not None and (halves := halves_of_too_large(error, part)):
                    self._in_flight += reversed(halves)
                    self.server_records_limit = records_limit(error) or self.server_records_limit
                    continue
                self._finished(len(part), delivered=error is None)
            if error is not None:
                self._report(error, part)

    def _post(self, lines: list[bytes]) -> Exception | None:
        """Post one body; the exception that ended it, if any (the thread lives on)."""
        try:
            self.transport.post_ndjson(join(lines))
        except Exception as error:
            return error
        return None

    def _finished(self, count: int, delivered: bool) -> None:
        """Count events delivered or given up on (the lock held)."""
        if delivered:
            self.sent += count
        else:
            self.failed += count
        self._unfinished -= count
        if self._unfinished == 0:
            self._idle.notify_all()

    def _send_now(self, lines: list[bytes]) -> bool:
        """Sync mode: post now; True if delivered. A failure raises without `on_error`."""
        error = self._post(lines)
        with self._lock:
            if error is None:
                self.sent += len(lines)
            else:
                self.failed += len(lines)
        if error is None:
            return True
        if self.on_error is None:
            raise error
        self._report(error, lines)
        return False

    def _report(self, error: Exception, lines: list[bytes]) -> None:
        """Tell of events not delivered: to `on_error` (else the log), and the spool file."""
        spooled = self._spool(lines)
        nested = getattr(self._in_on_error, "active", False)
        if self.on_error is None or nested or isinstance(error, ShutdownDeadline):
            log.error(
                "switchboard_client: %d event(s) not delivered: %s%s",
                len(lines),
                error,
                f" (appended to {self.spool_path})" if spooled else "",
            )
        if self.on_error is None or nested:
            return
        self._in_on_error.active = True
        try:
            self.on_error(error, [json.loads(line) for line in lines])
        except Exception:
            log.exception("switchboard_client: on_error raised")
        finally:
            self._in_on_error.active = False

    def _spool(self, lines: list[bytes]) -> bool:
        """Append the lines to `spool_path` (O_APPEND); False without one, or if it fails."""
        if self.spool_path is None:
            return False
        try:
            with self._spool_lock:
                # The events themselves (messages, actors): a new spool file is its owner's only.
                spool = os.open(self.spool_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    data = memoryview(join(lines))
                    while data:  # a write may take only part (a signal, a file past 2 GiB)
                        data = data[os.write(spool, data) :]
                finally:
                    os.close(spool)
        except OSError as error:
            log.error("switchboard_client: cannot append to %s: %s", self.spool_path, error)
            return False
        return True

    # -- synchronous calls ---------------------------------------------------

    def send(self, events: Iterable[object]) -> list[int]:
        """Post events now, in as few batches as `flush_at` and `max_batch_bytes` allow
        (a batch the server finds too large is split in halves); returns the batch ids.
        Raises `Rejected` or `RetriesExhausted` on failure."""
        lines = (encode(event) for event in events)
        batch_ids = []
        for group in bodies(lines, self._events_per_batch, self.max_batch_bytes):
            parts = [group]
            while parts:
                part = parts.pop()
                try:
                    batch_ids.append(self.post_ndjson(join(part)))
                except Rejected as error:
                    if not (halves := halves_of_too_large(error, part)):
                        raise
                    parts += reversed(halves)
                    self.server_records_limit = records_limit(error) or self.server_records_limit
        return batch_ids

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
