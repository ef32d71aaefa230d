"""Issue 19 part 1: the event table partitioned by month (PostgreSQL; SQLite keeps one plain
table), the id registry that keeps an id stored once across partitions, `make_partitions`,
and retention that drops whole months while the summaries stay exact."""

from __future__ import annotations

import io
import json
import math
import threading
import time

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from events import partitions
from events.models import Event, EventIdentity, PrunedEvent
from events.partitions import Month
from ingest.imports import bulk
from tests.races import backend_pid, lock_requests_wait, pid_appears, start_writer, transaction_held, waits_for_a_lock
from tests.test_retention import chat_lines, classic, import_lines, oracle_lines, post_lines, timestamp

pytestmark = pytest.mark.django_db(transaction=True)
DAY = 86_400
POSTGRESQL = "postgresql"


def partition_of(uid: str) -> str:
    """The table holding an event (PostgreSQL: its partition)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM events_event WHERE uid = %s", [uid])
        return cursor.fetchone()[0]


def month_partitions() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'events_event'::regclass AND c.relname <> 'events_event_default'"
        )
        return sorted(name for (name,) in cursor.fetchall())


def ensure(month: Month) -> None:
    """A month's partition (PostgreSQL), as `make_partitions` makes it."""
    if connection.vendor == POSTGRESQL and month not in partitions.existing():
        partitions.create(month)


def message(uid: str, ts: float, site: str = "part-site", sender: str = "visitor") -> bytes:
    return json.dumps(
        {"id": uid, "type": "message", "from": sender, "site_id": site, "data": {"message": "hi"}, "timestamp": ts}
    ).encode()


def test_the_event_table_is_partitioned_by_month_with_a_default_partition_after_migrate():
    this_month = Month.of(time.time())
    with connection.cursor() as cursor:
        if connection.vendor != POSTGRESQL:  # SQLite: one plain table, the same registry
            cursor.execute("SELECT type FROM sqlite_master WHERE name = 'events_event'")
            assert cursor.fetchone() == ("table",) and not partitions.partitioned()
            assert EventIdentity.objects.count() == 0
            return
        cursor.execute("SELECT pg_get_partkeydef('events_event'::regclass)")
        assert cursor.fetchone() == ("RANGE (ts)",)
        cursor.execute(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c WHERE relname = %s", [partitions.DEFAULT]
        )
        assert cursor.fetchone() == ("DEFAULT",)
        cursor.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'events_event'::regclass"
            " AND contype IN ('p', 'u', 'f')"
        )
        assert cursor.fetchall() == [("PRIMARY KEY (id, ts)",)]  # no unique uid, no foreign key
        cursor.execute("SELECT count(*) FROM pg_constraint WHERE confrelid = 'events_event'::regclass")
        assert cursor.fetchone() == (0,)  # nothing references it (a stanza's event: no database constraint)
    month, wanted = this_month, []
    for _ in range(partitions.MONTHS_AHEAD + 1):
        wanted.append(month.name)
        month = month.next()
    assert set(wanted) <= set(month_partitions())
    assert partitions.existing()[-1] == Month.of(this_month.start + 100 * DAY)  # 3 months ahead


def accept_far_future(settings) -> None:  # noqa: ANN001 - pytest-django's settings
    """Far-future times are refused by default (FUTURE_TOLERANCE_SECONDS); a deployment may allow them."""
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "FUTURE_TOLERANCE_SECONDS": 200 * 365 * DAY}


def test_an_event_of_any_timestamp_is_stored_once(settings):
    accept_far_future(settings)
    now = time.time()
    times = {"y1970": 0.5, "y2100": 4_102_444_800.0 + 5, "now": now}
    batch = post_lines([message(uid, ts) for uid, ts in times.items()])
    assert (batch.accepted, batch.duplicates, batch.rejected) == (3, 0, 0)
    assert sorted(Event.objects.values_list("uid", flat=True)) == sorted(times)
    assert EventIdentity.objects.count() == 3
    if connection.vendor == POSTGRESQL:
        assert partition_of("y1970") == partition_of("y2100") == partitions.DEFAULT
        assert partition_of("now") == Month.of(now).name
    assert classic() == ["part-site,messages=0,emails=3,operators=0,visitors=1"]


def test_a_duplicate_id_in_another_month_is_a_duplicate_live_and_on_import(tmp_path, settings):
    accept_far_future(settings)
    january, march = Month(2025, 1), Month(2025, 3)
    ensure(january)
    ensure(march)
    first = post_lines([message("same", january.start + DAY), message("other", january.start + 2 * DAY)])
    assert (first.accepted, first.duplicates) == (2, 0)

    # The same ids in another month's partition, and in the default partition: live, then imported.
    again = post_lines([message("same", march.start + DAY), message("other", 4_102_444_800.0)])
    assert (again.accepted, again.duplicates) == (0, 2)
    job = import_lines(tmp_path / "again.jsonl", [message("other", march.start + 5), message("same", 0.25)])
    assert (job.accepted, job.duplicates) == (0, 2)
    # A dominating import (PostgreSQL: indexes deferred, the Bloom filter read from the registry),
    # its ids in a third month.
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "IMPORT_DEFER_INDEXES_BYTES": 0}
    lines = [message("same", march.start + 9), message("new", march.start + 9)]
    lines += [message(f"filler-{i}", march.start + 10, site="filler") for i in range(1000)]  # larger than the table
    if connection.vendor == POSTGRESQL:
        assert bulk.dominates(len(b"\n".join(lines)))
    job = import_lines(tmp_path / "dominating.jsonl", lines)
    assert (job.accepted, job.duplicates) == (1001, 1)
    assert sorted(Event.objects.exclude(site="filler").values_list("uid", "ts")) == [
        ("new", march.start + 9), ("other", january.start + 2 * DAY), ("same", january.start + DAY)
    ]  # fmt: skip
    if connection.vendor == POSTGRESQL:
        assert partition_of("same") == january.name and partition_of("new") == march.name
    assert classic() == [
        "filler,messages=0,emails=1000,operators=0,visitors=1", "part-site,messages=0,emails=3,operators=0,visitors=1"
    ]  # fmt: skip


def test_make_partitions_moves_the_default_partitions_rows_of_a_month():
    july, august = Month(2024, 7), Month(2024, 8)
    post_lines([message(f"m{i}", july.start + i * DAY) for i in range(3)] + [message("a1", august.start + 1)])
    before = classic()
    out = io.StringIO()
    call_command("make_partitions", "--months", "1", "--min-rows", "2", stderr=out)
    if connection.vendor != POSTGRESQL:
        assert "not partitioned" in out.getvalue()
        return
    assert f"created {july.name} (3 events moved from the default partition)" in out.getvalue()
    assert july.name in month_partitions() and august.name not in month_partitions()  # 1 row: under --min-rows
    assert {partition_of(f"m{i}") for i in range(3)} == {july.name}
    assert partition_of("a1") == partitions.DEFAULT
    assert Event.objects.count() == 4 and classic() == before
    out = io.StringIO()
    call_command("make_partitions", "--months", "1", "--min-rows", "2", stderr=out)  # idempotent
    assert "0 partitions created" in out.getvalue()
    # A late record of July goes to its partition.
    post_lines([message("m9", july.start + 20 * DAY)])
    assert partition_of("m9") == july.name


def spread_over_months(lines: list[bytes]) -> list[bytes]:
    """The sample records, each site's moved on by 0 to 3 months (the samples span two days)."""
    spread = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and timestamp(line) is not None and timestamp(line) > 1e9:
            shift = sum(str(record.get("site_id")).encode()) % 4
            record["timestamp"] = timestamp(line) + shift * 31 * DAY
            line = json.dumps(record).encode()
        spread.append(line)
    return spread


def test_prune_drops_whole_months_and_the_summary_equals_the_oracle_after_a_later_import(sample_data, tmp_path):
    lines = spread_over_months(chat_lines(sample_data))
    first, rest = lines[::2], lines[1::2]
    months = {Month.of(ts) for line in lines if (ts := timestamp(line)) is not None and ts > 1e9}
    assert months == {Month(2015, 4), Month(2015, 5), Month(2015, 6), Month(2015, 7)}
    cut = Month(2015, 6).start + 10 * DAY  # April and May whole before it; June holds it
    late = [line for line in rest if (ts := timestamp(line)) is not None and ts < cut]
    assert sum(b'"status"' in line for line in late) > 50  # statuses older than the cut arrive after it

    import_lines(tmp_path / "first.jsonl", first)
    call_command("make_partitions", "--min-rows", "1", stderr=io.StringIO())
    stored = Event.objects.count()
    expected_first = oracle_lines(first)
    assert classic() == expected_first
    call_command("prune_events", "--before", str(cut), "--rows", "500", stderr=io.StringIO())

    assert not Event.objects.filter(ts__lt=cut).exists()
    assert Event.objects.count() + PrunedEvent.objects.count() == stored
    assert EventIdentity.objects.count() == stored  # pruned ids stay registered
    if connection.vendor == POSTGRESQL:
        names = month_partitions()
        assert Month(2015, 4).name not in names and Month(2015, 5).name not in names  # dropped whole
        assert Month(2015, 6).name in names and Month(2015, 7).name in names
        assert Event.objects.filter(ts__gte=Month(2015, 6).start).exists()
    assert classic() == expected_first  # pruning changes no line

    import_lines(tmp_path / "rest.jsonl", rest[: len(rest) // 2])  # late records before the cut among them
    post_lines(rest[len(rest) // 2 :])
    assert classic() == oracle_lines(lines)
    call_command("site_summary", "--rebuild", stdout=io.StringIO())
    assert classic() == oracle_lines(lines)
    if connection.vendor == POSTGRESQL:  # the late records of dropped months went to the default partition
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*), max(ts) FROM {partitions.DEFAULT}")
            count, latest = cursor.fetchone()
        assert count > 0 and latest < Month(2015, 6).start


def test_a_month_holding_xmpp_events_is_pruned_by_range(sample_data, tmp_path):
    """Xmpp events are kept whole (events/retention.py): their month is emptied of the
    others by range, not dropped."""
    path = sample_data / "xmpp" / "chatid_sample.json"
    call_command("import_jsonl", str(path), stderr=io.StringIO())
    xmpp = Event.objects.count()
    first = Event.objects.order_by("ts").values_list("ts", flat=True)[0]
    month = Month.of(first)
    ensure(month)
    post_lines([message("chat-1", month.start + 1)])
    call_command("prune_events", "--before", str(month.end), stderr=io.StringIO())
    assert Event.objects.filter(family="xmpp").count() == xmpp and not Event.objects.filter(family="chat").exists()
    assert PrunedEvent.objects.filter(uid="chat-1").exists()
    if connection.vendor == POSTGRESQL:
        assert month.name in month_partitions()


def test_an_erasure_unregisters_the_actors_ids_stored_and_pruned():
    """forget_actor leaves no id of the actor's events in the registry: stored ones and pruned ones."""
    post_lines(
        [message("eve-old", 1_600_000_000, sender="eve"), message("eve-new", 1_700_000_000, sender="eve")]
        + [message("bob-1", 1_600_000_000, sender="bob")]
    )
    call_command("prune_events", "--before", "1650000000", stderr=io.StringIO())
    assert PrunedEvent.objects.filter(uid="eve-old").exists() and Event.objects.filter(uid="eve-new").exists()
    call_command("forget_actor", "eve", stderr=io.StringIO())
    assert sorted(EventIdentity.objects.values_list("uid", flat=True)) == ["bob-1"]
    assert classic() == ["part-site,messages=0,emails=1,operators=0,visitors=1"]


def test_a_cut_in_the_future_prunes_this_month_by_range_and_keeps_its_partition():
    now = time.time()
    post_lines([message("today", now - 60)])
    call_command("prune_events", "--before", "2100-01-01T00:00:00Z", stderr=io.StringIO())
    assert not Event.objects.exists() and PrunedEvent.objects.filter(uid="today").exists()
    if connection.vendor == POSTGRESQL:  # months not over are still written to: not dropped
        assert Month.of(now).name in month_partitions() and Month.of(now).next().name in month_partitions()


def test_make_partitions_and_a_transaction_reading_then_writing_the_event_table_do_not_deadlock():
    """An erasure's transaction reads the actor's events, then deletes them (a prune's reads,
    then moves them) without the table lock: creating a partition meanwhile (which takes
    PostgreSQL's strongest lock on the table) waits for it instead of deadlocking with it."""
    if connection.vendor != POSTGRESQL:
        pytest.skip("SQLite has no partitions")
    july = Month(2024, 7)
    post_lines([message("gone", july.start + DAY, sender="eve"), message("kept", july.start + 2 * DAY)])
    creating_pid = backend_pid()
    read, errors = threading.Event(), []

    def erasure_like() -> None:
        with transaction.atomic():
            assert list(Event.objects.filter(actor="eve").values_list("uid", flat=True)) == ["gone"]
            read.set()
            waits_for_a_lock(creating_pid)  # until the creation waits for a lock
            Event.objects.filter(actor="eve").delete()

    other = start_writer(erasure_like, errors)
    assert read.wait(10)
    try:
        moved = partitions.create(july)
    finally:
        other.join(30)
    assert not errors
    assert moved == 1 and partition_of("kept") == july.name
    assert list(Event.objects.values_list("uid", flat=True)) == ["kept"]


def test_a_prune_dropping_a_month_and_an_erasure_of_its_events_do_not_deadlock():
    """An erasure's transaction reads the actor's events of a site (its xmpp event of June, its
    chat event of July), deletes their stanzas, then the events; a prune dropping July meanwhile
    (its table lock, then the detach's stronger one) must not deadlock with it."""
    if connection.vendor != POSTGRESQL:
        pytest.skip("SQLite has no partitions")
    from events.models import Stanza
    from events.privacy.services import forget_actor
    from events.retention import prune_events

    june, july = Month(2024, 6), Month(2024, 7)
    ensure(june)
    ensure(july)
    xmpp = {
        "id": "eve-x", "timestamp": june.start + DAY, "room_id": "room-1", "channel": "both", "event": "muc-x",
        "nick": "eve", "stanza": "<message type='groupchat'><body>hi</body></message>",
    }  # fmt: skip
    post_lines([json.dumps(xmpp).encode(), message("eve-c", july.start + DAY, "both", "eve")])
    post_lines([message("bob-c", july.start + 2 * DAY, "both", "bob")])
    assert Stanza.objects.count() == 1
    pruning = backend_pid()
    locked, errors = threading.Event(), []
    erasing_pid: list[int] = []

    def hold_the_stanza() -> None:  # the erasure's chunk waits at its stanza, having read its events
        with transaction.atomic():
            Stanza.objects.select_for_update().get()
            locked.set()
            if not waits_for_a_lock(pruning):
                errors.append("the prune never waited")

    holder = start_writer(hold_the_stanza, errors)
    assert locked.wait(10)
    eraser = start_writer(lambda: forget_actor("eve"), errors, erasing_pid)
    assert pid_appears(erasing_pid) and waits_for_a_lock(erasing_pid[0])
    try:
        prune_events(Month(2024, 8).start)
    except Exception as error:  # noqa: BLE001 - reported below
        errors.append(error)
    finally:
        holder.join(30)
        eraser.join(60)
    assert not errors
    # The prune waited for the erasure's chunk: June no longer held an xmpp event, and went whole too.
    assert july.name not in month_partitions() and june.name not in month_partitions()
    assert not Event.objects.exists() and not Stanza.objects.exists()
    assert list(PrunedEvent.objects.values_list("uid", flat=True)) == ["bob-c"]
    assert list(EventIdentity.objects.values_list("uid", flat=True)) == ["bob-c"]


def test_an_event_in_the_last_microsecond_of_a_month_counts_for_its_own_month():
    """The partition bounds put a time just before a month's start in the month before; counting
    the default partition's rows per month must too (to_timestamp rounds to the microsecond)."""
    june, july = Month(2024, 6), Month(2024, 7)
    late_june = math.nextafter(july.start, 0)  # the last time before July a float holds
    assert Month.of(late_june) == june and late_june < july.start
    post_lines([message("late-june", late_june)])
    made = partitions.make_partitions(months_ahead=0, min_rows=1)
    if connection.vendor != POSTGRESQL:
        assert made == []
        return
    assert made == [(june, 1)]
    assert partition_of("late-june") == june.name and july.name not in month_partitions()


def test_two_make_partitions_at_once_make_each_month_once_and_both_succeed():
    """Beat's daily run and an operator's `make_partitions` at the same moment: both find the
    same month missing; the second to get the table's lock finds it made, and is done."""
    if connection.vendor != POSTGRESQL:
        pytest.skip("SQLite has no partitions")
    ahead = partitions.MONTHS_AHEAD + 1
    month = Month.of(time.time())
    for _ in range(ahead):
        month = month.next()
    assert month not in partitions.existing()
    results: list[object] = []  # and errors, which fail the check below

    def run() -> None:
        results.append(partitions.make_partitions(months_ahead=ahead))

    # A long read of the event table: both runs queue for its lock.
    with transaction_held(Event.objects.exists, results):
        runs = [start_writer(run, results) for _ in range(2)]
        lock_requests_wait("relation = 'events_event'::regclass", 2)  # both wait for the table's lock
    for thread in runs:
        thread.join(30)
    assert sorted(results, key=len) == [[], [(month, 0)]]
    assert month in partitions.existing()


def test_two_prunes_at_once_drop_each_month_once_and_both_succeed():
    """A long prune (the first after retention is set) still running when beat's next hourly one
    starts, or an operator's: both list the same months; the second to get the lock finds a
    month dropped, and goes on."""
    if connection.vendor != POSTGRESQL:
        pytest.skip("SQLite has no partitions")
    from events.privacy import blocks
    from events.retention import prune_events

    july = Month(2024, 7)
    ensure(july)
    post_lines([message(f"j{i}", july.start + i * DAY) for i in range(3)])
    results: list[object] = []  # and errors, which fail the check below

    def prune() -> None:
        results.append(prune_events(july.end))

    # A prune's (or an erasure's) transaction under way.
    with transaction_held(blocks.lock_exclusive, results):
        runs = [start_writer(prune, results) for _ in range(2)]
        lock_requests_wait("locktype = 'advisory'", 2)  # both wait for the erasure lock
    for thread in runs:
        thread.join(30)
    assert sorted(results) == [0, 3]
    assert july.name not in month_partitions() and PrunedEvent.objects.count() == 3


def test_readers_go_on_while_make_partitions_waits_for_a_group_being_stored():
    """Creating a month waits for the storing transactions under way; meanwhile readers of the
    event table are not queued behind it (they are only for the creation itself)."""
    if connection.vendor != POSTGRESQL:
        pytest.skip("SQLite has no partitions")
    from ingest.models import RawBatch
    from ingest.records import validate_values
    from ingest.store import store_group

    march = Month(2023, 3)  # in the default partition, and no other test makes its partition
    post_lines([message("before", march.start + DAY)])
    batch = RawBatch.objects.create(source="api", status=RawBatch.Status.PROCESSING)
    chunk = validate_values([json.loads(message("during", time.time() - 30))], time.time())
    creator_pid: list[int] = []
    made: list[tuple[Month, int]] = []
    errors: list[Exception] = []

    def create() -> None:
        made.extend(partitions.make_partitions(months_ahead=0, min_rows=1))

    with transaction_held(lambda: store_group([(batch, chunk)]), errors) as release:
        creating = start_writer(create, errors, creator_pid)
        try:
            assert pid_appears(creator_pid) and waits_for_a_lock(creator_pid[0])
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '2s'")
                assert list(Event.objects.values_list("uid", flat=True)) == ["before"]
        finally:
            release()
            creating.join(30)
    assert not errors
    assert made == [(march, 1)] and sorted(Event.objects.values_list("uid", flat=True)) == ["before", "during"]
