"""The event table's month changes on a schedule (make_partitions, prune_events' month drops)
while a long read holds the table (`pg_dump`, an analyst's export): each waits for the lock a
moment at a time, so new queries of the table are never queued behind it for longer, and gives
up, changing nothing, past its deadline (events/ddl_locks.py). PostgreSQL's locks: SQLite has
no partitions."""

from __future__ import annotations

import io
import logging
import time

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from events import partitions
from events.models import Event, PrunedEvent
from events.partitions import DEFAULT, Month
from events.tasks import make_partitions_task, prune_old_events_task
from tests.races import backend_pid, pid_appears, start_writer, transaction_held, waits_for_a_lock
from tests.test_partitions import DAY, ensure, message, month_partitions, partition_of
from tests.test_retention import post_lines

pytestmark = pytest.mark.django_db(transaction=True)
WAIT = 0.3  # DDL_LOCK_WAIT_SECONDS in these tests
# A reader queued behind a waiting request goes on once the request gives up: within WAIT, plus
# this much for a shared, busy machine. Without the bound it waits for the long read (here its
# own lock_timeout, READER_PATIENCE, fails it).
SLACK = 1.2
READER_PATIENCE = "6s"
READERS = 5
RETRY_LINE = "is held by another transaction; again in"


@pytest.fixture
def bounded(settings):  # noqa: ANN001, ANN201 - pytest-django's settings
    """Set the per-attempt wait and the deadline (seconds)."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no partitions (and no lock queue: it runs one writer at a time)")

    def set_limits(deadline: float) -> None:
        settings.SWITCHBOARD = {
            **settings.SWITCHBOARD,
            "DDL_LOCK_WAIT_SECONDS": WAIT,
            "DDL_LOCK_DEADLINE_SECONDS": deadline,
        }

    return set_limits


def reader_seconds() -> float:
    """How long a new reader of the event table takes (it fails after READER_PATIENCE queued)."""
    started = time.monotonic()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{READER_PATIENCE}'")
        cursor.execute("SELECT count(*) FROM events_event")
        cursor.fetchone()
    return time.monotonic() - started


def readers_during(ddl_pid: int) -> list[float]:
    """READERS readers, each started while the DDL's request waits for a lock."""
    seconds = []
    for _ in range(READERS):
        assert waits_for_a_lock(ddl_pid), "the DDL never waited for the table's lock"
        seconds.append(reader_seconds())
    return seconds


def long_read(pids: list[int]) -> None:
    """A long read's first step: it holds the event table (ACCESS SHARE) until its transaction ends."""
    pids.append(backend_pid())
    Event.objects.exists()


def test_readers_are_not_queued_behind_make_partitions_during_a_long_read_and_the_month_is_made_after_it(
    bounded,  # noqa: ANN001
    caplog,  # noqa: ANN001
):
    bounded(60)
    caplog.set_level(logging.INFO, logger="events.ddl_locks")
    may = Month(2022, 5)  # in the default partition, and no other test makes its partition
    post_lines([message("may", may.start + DAY)])
    ddl_pid: list[int] = []
    made: list[tuple[Month, int]] = []
    errors: list[object] = []
    with transaction_held(lambda: long_read([]), errors) as release:
        creating = start_writer(
            lambda: made.extend(partitions.make_partitions(months_ahead=0, min_rows=1)), errors, ddl_pid
        )
        try:
            assert pid_appears(ddl_pid)
            seconds = readers_during(ddl_pid[0])
        finally:
            release()
            creating.join(30)
    assert not errors
    assert max(seconds) < WAIT + SLACK, seconds
    assert sum(RETRY_LINE in line for line in caplog.messages) >= READERS - 1  # it waited a moment at a time
    assert made == [(may, 1)] and partition_of("may") == may.name


def test_make_partitions_gives_up_past_its_deadline_with_the_reason_and_changes_nothing(bounded, caplog):  # noqa: ANN001
    bounded(1.5)
    june = Month(2022, 6)
    post_lines([message("june", june.start + DAY)])
    ahead = Month.of(time.time())
    for _ in range(partitions.MONTHS_AHEAD):
        ahead = ahead.next()
    with transaction.atomic(), connection.cursor() as cursor:  # the month beat's run makes next
        partitions.detach_and_drop(cursor, ahead)
    holder: list[int] = []
    errors: list[object] = []
    with transaction_held(lambda: long_read(holder), errors):
        started = time.monotonic()
        with pytest.raises(CommandError) as gave_up:
            call_command("make_partitions", "--months", "0", "--min-rows", "1", stderr=io.StringIO())
        took = time.monotonic() - started
        assert make_partitions_task() == 0  # beat's run: the same, logged as an error
    assert not errors
    said = str(gave_up.value)
    assert said.startswith(f"creating partition {june.name} gave up after ")
    assert f"lock of events_event, which other transactions held (pid {holder[0]} (" in said
    assert "the month's events are stored in the default partition (nothing is lost)" in said
    assert took < 1.5 + WAIT + SLACK
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "events.tasks"]
    assert len(logged) == 1 and logged[0][0] == logging.ERROR
    assert logged[0][1].startswith(f"make_partitions_task: creating partition {ahead.name} gave up after ")
    # Nothing changed: no partition, the event where it was; once the read is over, the next runs make them.
    assert june.name not in month_partitions() and ahead.name not in month_partitions()
    assert partition_of("june") == DEFAULT and list(Event.objects.values_list("uid", flat=True)) == ["june"]
    assert partitions.make_partitions(months_ahead=0, min_rows=1) == [(june, 1)] and partition_of("june") == june.name
    assert make_partitions_task() == 1 and ahead.name in month_partitions()


def test_readers_are_not_queued_behind_a_prunes_detach_during_a_long_read_and_the_month_goes_after_it(
    bounded,  # noqa: ANN001
):
    from events.retention import prune_events

    bounded(60)
    august = Month(2022, 8)
    ensure(august)
    post_lines([message(f"a{i}", august.start + i * DAY) for i in range(3)])
    ddl_pid: list[int] = []
    pruned: list[int] = []
    errors: list[object] = []
    with transaction_held(lambda: long_read([]), errors) as release:
        pruning = start_writer(lambda: pruned.append(prune_events(august.end)), errors, ddl_pid)
        try:
            assert pid_appears(ddl_pid)
            seconds = readers_during(ddl_pid[0])
        finally:
            release()
            pruning.join(30)
    assert not errors
    assert max(seconds) < WAIT + SLACK, seconds
    assert pruned == [3] and august.name not in month_partitions() and PrunedEvent.objects.count() == 3


def test_a_prune_gives_up_dropping_a_month_past_its_deadline_and_changes_nothing(bounded, settings, caplog):  # noqa: ANN001
    from events.retention import prune_events

    bounded(1.5)
    september = Month(2022, 9)
    ensure(september)
    post_lines([message(f"s{i}", september.start + i * DAY) for i in range(3)])
    holder: list[int] = []
    errors: list[object] = []
    with transaction_held(lambda: long_read(holder), errors):
        with pytest.raises(CommandError) as gave_up:
            call_command("prune_events", "--before", str(september.end), stderr=io.StringIO())
        settings.SWITCHBOARD = {**settings.SWITCHBOARD, "RETENTION_DAYS": int((time.time() - september.end) // DAY)}
        assert prune_old_events_task() == 0  # beat's run: the same, logged as an error
    assert not errors
    said = str(gave_up.value)
    assert said.startswith(f"dropping partition {september.name} gave up after ")
    assert f"(pid {holder[0]} (" in said and "its events stay stored until the next prune_events" in said
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "events.tasks"]
    assert len(logged) == 1 and logged[0][0] == logging.ERROR
    assert logged[0][1].startswith(f"prune_old_events_task: dropping partition {september.name} gave up after ")
    # Nothing changed: the month, its events, no baseline rows; once the read is over, the next run drops it.
    assert september.name in month_partitions() and Event.objects.count() == 3 and not PrunedEvent.objects.exists()
    assert prune_events(september.end) == 3 and september.name not in month_partitions()
