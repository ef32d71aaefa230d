"""The event table's strongest locks, taken on a schedule without stalling the service (PostgreSQL).

Creating a month's partition or detaching one takes `ACCESS EXCLUSIVE` on the event table.
While a long read holds the table (`pg_dump`, an analyst's export), such a request waits,
and every new query of the table, readers included, queues behind it: the service would
stall for as long as the long read runs. So each attempt waits at most
`DDL_LOCK_WAIT_SECONDS` for a lock (`lock_timeout`), then rolls back, which lets the queries
queued behind it go, pauses and tries again, until `DDL_LOCK_DEADLINE_SECONDS`; then it
gives up with `LockWaitGaveUp`, having changed nothing, and the next scheduled run tries
again. One place for that rule: `with_table_lock`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.backends.utils import CursorWrapper

from events.privacy import blocks

logger = logging.getLogger(__name__)
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a wait over lock_timeout
T = TypeVar("T")


class LockWaitGaveUp(Exception):
    """A scheduled change of the event table did not get its lock within the deadline; nothing changed."""


def with_table_lock(table: str, mode: str, work: Callable[[CursorWrapper], T], *, what: str, meanwhile: str) -> T:
    """Run `work(cursor)` in a transaction of its own that holds the erasure lock exclusively and
    then `table` locked in `mode`, in that order (events/partitions.py `create` says why), and
    return what it returns.

    The wait for the erasure lock is not bounded: it waits for the storing transactions under
    way (a group each), with readers going on. Every lock wait after it (the table's, and any
    later one of the transaction: a detach's upgrade to `ACCESS EXCLUSIVE`) is bounded by
    `DDL_LOCK_WAIT_SECONDS`; over it the attempt rolls back and, after a pause at least as
    long as the attempt (readers and writers get the table at least half the time), runs
    again. Past `DDL_LOCK_DEADLINE_SECONDS`: `LockWaitGaveUp`, saying `what` gave up, who held
    the table, and `meanwhile` (what happens until a later run succeeds).
    """
    limits = settings.SWITCHBOARD
    wait = limits["DDL_LOCK_WAIT_SECONDS"]
    began = time.monotonic()
    deadline = began + limits["DDL_LOCK_DEADLINE_SECONDS"]
    attempts = 0
    while True:
        attempts += 1
        started = time.monotonic()
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                blocks.lock_exclusive()
                cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{round(wait * 1000)}ms"])
                cursor.execute(f"LOCK TABLE {table} IN {mode} MODE")
                return work(cursor)
        except OperationalError as error:
            if getattr(error.__cause__, "pgcode", None) != LOCK_NOT_AVAILABLE:
                raise
        pause = max(wait, time.monotonic() - started)
        if time.monotonic() + pause > deadline:
            raise LockWaitGaveUp(
                f"{what} gave up after {attempts} attempts in {time.monotonic() - began:.1f} s"
                f" (DDL_LOCK_DEADLINE_SECONDS): each waited {wait:g} s (DDL_LOCK_WAIT_SECONDS) for the lock of"
                f" {table}, which other transactions held ({_holders(table)}); waiting longer would have queued"
                f" every query of the table behind the request. Nothing was changed: {meanwhile}"
            )
        logger.info("%s: %s is held by another transaction; again in %.1f s", what, table, pause)
        time.sleep(pause)


def _holders(table: str) -> str:
    """The sessions holding a lock on `table` or one of its partitions now, longest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.pid, coalesce(nullif(a.application_name, ''), a.backend_type), a.usename,"
            " extract(epoch FROM now() - a.xact_start)::bigint FROM pg_stat_activity a"
            " WHERE a.pid <> pg_backend_pid() AND a.pid IN (SELECT l.pid FROM pg_locks l WHERE l.granted"
            " AND l.relation IN (SELECT %s::regclass UNION ALL"
            " SELECT inhrelid FROM pg_inherits WHERE inhparent = %s::regclass))"
            " ORDER BY a.xact_start NULLS LAST LIMIT 5",
            [table, table],
        )
        sessions = [
            f"pid {pid} ({name}, user {user}, in a transaction for {'?' if age is None else age} s)"
            for pid, name, user, age in cursor.fetchall()
        ]
    return "; ".join(sessions) or "no session holds it now"
