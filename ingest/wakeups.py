"""Waking the workers: at most one broker message per web process and WAKEUP_INTERVAL_SECONDS.

The outbox table is the queue; a message only says "there is work". A request
calls `wake()`, which sets a flag and returns at once (no broker round trip on
the request path); a background thread of the process publishes one
`drain_outbox_task` for all the requests of an interval. A woken worker drains
every claimable batch, so a wake-up that finds nothing costs one query. If the
broker is down the message is lost, the batch stays pending, and the sweeper
(celery beat) wakes the workers once the broker is back.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from django.conf import settings

logger = logging.getLogger(__name__)


def publish(countdown: float = 0) -> bool:
    """Send one wake-up (due in `countdown` seconds); False (logged) if the broker is unavailable."""
    from ingest.tasks import drain_outbox_task  # tasks import the batches, which import this module

    try:
        drain_outbox_task.apply_async(countdown=countdown or None)
    except Exception as error:  # kombu raises OperationalError, redis ConnectionError, OSError...
        logger.warning("no wake-up sent, pending batches wait for the sweeper: the broker is unavailable (%s)", error)
        return False
    return True


class Waker:
    """Coalesces wake-ups: the first `wake()` publishes at once, later ones within the
    interval once at its end."""

    def __init__(self) -> None:
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def wake(self) -> None:
        if self._pid != os.getpid():  # first use, or a forked child (gunicorn workers)
            with self._lock:
                if self._pid != os.getpid():
                    self._wanted = threading.Event()
                    self._thread = threading.Thread(target=self._run, name="outbox-waker", daemon=True)
                    self._thread.start()
                    self._pid = os.getpid()
        self._wanted.set()

    def _run(self) -> None:
        wanted = self._wanted
        while True:
            wanted.wait()
            wanted.clear()
            publish()
            # Requests meanwhile set the flag again: one message for all of them.
            time.sleep(settings.SWITCHBOARD["WAKEUP_INTERVAL_SECONDS"])


_waker = Waker()


def wake() -> None:
    """Ask for a worker to drain the outbox soon (cheap: no I/O in the caller)."""
    _waker.wake()
