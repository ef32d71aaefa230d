"""Issue 12 items 5 and 6 on the worker path: a batch is validated before its write
transaction opens (on SQLite, a parse must not hold the one write lock that a concurrent
post needs), and a late status costs the summary upkeep bounded memory however many
messages its window holds (they are counted in the database, not loaded)."""

from __future__ import annotations

import sqlite3
import time
import tracemalloc
import uuid

import orjson
import pytest
from django.db import connection

from events.interaction import register_interaction_type, unregister_interaction_type
from ingest.batches import claim_group, process_group, receive_batch
from ingest.keys import create_application
from ingest.models import RawBatch
from ingest.records import Chunk, validate_into
from ingest.store import store_chunk
from reports.site_summary import rebuild_all_sites, summary_rows


def writer_lock_is_free() -> bool:
    """Whether another connection could start writing now (SQLite's one write lock);
    PostgreSQL has no such lock: there the open transaction is what counts."""
    if connection.vendor != "sqlite":
        return True
    other = sqlite3.connect(connection.settings_dict["NAME"], timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:  # "database is locked"
        return False
    finally:
        other.close()


def test_a_batch_is_validated_before_its_write_transaction(transactional_db):
    """A validator that looks around while it runs: no transaction of ours is open and
    another process could write (main validated inside the transaction: a concurrent
    post on SQLite waited for the lock, or failed with "database is locked")."""
    seen: list[tuple[bool, bool]] = []

    def probe(data: dict) -> None:
        seen.append((connection.in_atomic_block, writer_lock_is_free()))

    register_interaction_type("probe", "look around", probe)
    try:
        app = create_application("validate-first")[0]
        record = {
            "session_id": str(uuid.uuid4()), "category": "probe", "name": "look around",
            "data": {"host": "example.com"}, "timestamp": "2021-01-01 09:00:00",
        }  # fmt: skip
        batch = receive_batch(app, orjson.dumps(record), "application/json", "", 1)
        process_group(claim_group([batch.pk]))
    finally:
        unregister_interaction_type("probe", "look around")
    assert seen == [(False, True)]
    batch.refresh_from_db()
    assert (batch.status, batch.accepted) == ("done", 1)


MESSAGES = 60_000


def test_a_late_status_costs_bounded_memory_however_many_messages_it_moves(db):
    """60,000 e-mails of one site stored; then a status from before all of them arrives,
    turning every one into a chat. The upkeep counts them in SQL: its traced peak stays
    a small fraction of what holding their timestamps would take (main loaded them all)."""
    start = 1_400_000_000.0
    lines = [
        (i, orjson.dumps({"id": f"m{i}", "type": "message", "from": f"v{i % 500}", "site_id": "busy",
                          "data": {"message": "hi"}, "timestamp": start + i}), 0)
        for i in range(1, MESSAGES + 1)
    ]  # fmt: skip
    store_chunk(
        RawBatch.objects.create(source="seed"), validate_into(Chunk(), lines, time.time()), defer_summaries=True
    )
    rebuild_all_sites()
    assert summary_rows()[0].emails == MESSAGES

    app = create_application("late-status")[0]
    status = {"id": "s-late", "type": "status", "from": "op", "site_id": "busy", "data": {"status": "online"},
              "timestamp": start}  # fmt: skip
    batch = receive_batch(app, orjson.dumps(status), "application/json", "", 1)
    claimed = claim_group([batch.pk])
    tracemalloc.start()
    try:
        process_group(claimed)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    row = summary_rows()[0]
    assert (row.messages, row.emails, row.operators) == (MESSAGES, 0, 1)
    # 60,000 timestamps as Python floats in a list take ~2 MiB before any row tuple; the
    # upkeep's peak stays far below it.
    assert peak < 1024 * 1024, f"traced peak {peak} bytes"


pytestmark = pytest.mark.slow
