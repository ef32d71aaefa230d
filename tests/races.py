"""The scaffolding of the tests that race two writers (PostgreSQL's locks; SQLite runs one
writer at a time): a writer runs in a thread of its own, on a connection of its own, and the
test orders it against another by what PostgreSQL shows (a backend waiting for a lock), not by
sleeps, which order nothing on a busy machine. One copy, so that every race waits the same way."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from django.db import connection, transaction

T = TypeVar("T")


def backend_pid() -> int:
    """The PostgreSQL backend of this thread's connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def within(seconds: float, check: Callable[[], bool], every: float = 0.02) -> bool:
    """Whether `check()` comes true within `seconds`, asked every `every` seconds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return False


def waits_for_a_lock(pid: int, seconds: float = 10.0) -> bool:
    """Whether the backend `pid` waits for a lock within `seconds` (PostgreSQL)."""

    def waiting() -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
            return cursor.fetchone() == ("Lock",)

    return within(seconds, waiting)


def lock_requests_wait(where: str, count: int, seconds: float = 10.0) -> bool:
    """Whether `count` requests of pg_locks matching `where` (SQL) wait at once within `seconds`."""

    def waiting() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM pg_locks WHERE {where} AND NOT granted")
            return cursor.fetchone()[0] == count

    return within(seconds, waiting)


def pid_appears(pids: list[int], seconds: float = 10.0) -> bool:
    """Whether a writer records its backend pid in `pids` within `seconds`."""
    return within(seconds, lambda: bool(pids), every=0.01)


def start_writer(work: Callable[[], object], errors: list, pids: list[int] | None = None) -> threading.Thread:
    """Run `work` in a thread started here, on a connection of its own that it closes when done
    (Django leaves a thread's connection open); what `work` raises goes to `errors`, for the
    test to check (a thread's exception fails no test by itself). With `pids`, the thread first
    records its backend pid there (see `pid_appears`)."""

    def run() -> None:
        try:
            if pids is not None:
                pids.append(backend_pid())
            work()
        except Exception as error:  # noqa: BLE001 - the test checks `errors`
            errors.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@contextmanager
def transaction_held(hold: Callable[[], object], errors: list) -> Iterator[Callable[[], None]]:
    """Run `hold` in a transaction of a writer (`start_writer`) that stays open, holding its
    locks, until the block ends or calls the release function it is given."""
    holding, release = threading.Event(), threading.Event()

    def work() -> None:
        with transaction.atomic():
            hold()
            holding.set()
            release.wait(30)

    thread = start_writer(work, errors)
    try:
        assert holding.wait(10), errors
        yield release.set
    finally:
        release.set()
        thread.join(30)


def against_a_code_point_claimer(store: Callable[[], T]) -> tuple[T | None, list[set[str]], list[Exception]]:
    """Run `store` in a transaction of this thread while another writer, claiming ["B", "a"]
    in code-point order (events/identity.py), holds "B" and claims "a" once `store` waits for
    a lock: (what `store` returned, what the writer claimed, the errors of either). A `store`
    that took "a" before waiting for "B" deadlocks with it."""
    from events import identity  # the registry, for the tests that race on it

    storing = backend_pid()
    errors: list[Exception] = []
    claimed: list[set[str]] = []
    holds_b = threading.Event()

    def writer() -> None:
        with transaction.atomic():
            ids = identity.claim([("B", 1_500_000_000.0)])
            holds_b.set()
            if waits_for_a_lock(storing):
                ids |= identity.claim([("a", 1_500_000_000.0)])
            claimed.append(ids)

    thread = start_writer(writer, errors)
    if not holds_b.wait(10):
        errors.append(TimeoutError("the writer did not claim B"))
    result = None
    with transaction.atomic():
        try:
            result = store()
        except Exception as error:  # noqa: BLE001 - the test checks `errors`
            errors.append(error)
    thread.join(30)
    return result, claimed, errors
