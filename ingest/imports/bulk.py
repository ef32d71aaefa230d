"""Loading a file that dominates the event table as pg_restore does: indexes built after.

Maintaining the event table's secondary indexes row by row costs a durable
PostgreSQL most of an import's time (each row updates five b-trees, and
after every checkpoint each page it touches is written to the WAL whole),
while building them once after the load costs a few sorts. So when a file
is at least as large as the table already is, the import drops them (and
any foreign key the table has, checked once at the end instead of once per
row; today's schema declares none, see events 0005), loads, and builds
them again. Their definitions are kept with the job, so an import killed
meanwhile leaves them to be built by the next import's end or
by the sweeper (`restore_deferred`); the id registry (events/identity.py) stays, and with it
exact de-duplication, for the import and for API workers alike.

Meanwhile, readers get the same answers, slower: event queries scan the
table, and workers' summary upkeep of live posts slows down; the final
builds block writes to the event table (workers wait; posts are still
accepted) for their duration.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.db import connection, transaction

from events.db import alongside, is_postgresql, settle
from events.models import Event
from ingest.models import ImportJob
from reports import maintenance, site_summary

TABLE = Event._meta.db_table
# Index builds may use this much memory per session (PostgreSQL's default is 64 MB).
MAINTENANCE_WORK_MEM = "512MB"


def dominates(remaining_bytes: int) -> bool:
    """Whether loading this many more bytes of records grows the event table at least twofold."""
    if not is_postgresql() or remaining_bytes < settings.SWITCHBOARD["IMPORT_DEFER_INDEXES_BYTES"]:
        return False
    with connection.cursor() as cursor:  # all its partitions (events/partitions.py)
        cursor.execute("SELECT COALESCE(SUM(pg_relation_size(relid)), 0) FROM pg_partition_tree(%s)", [TABLE])
        table_bytes = cursor.fetchone()[0]
    return remaining_bytes >= table_bytes


def _declared_foreign_keys() -> set[str]:
    """Columns of the event table whose foreign key the models still want in the database."""
    return {f.column for f in Event._meta.concrete_fields if f.is_relation and f.db_constraint}


def _still_declared(definition: str) -> bool:
    """Whether a deferred foreign key is still part of the schema: one saved by an import
    killed before a migration dropped the constraint (events 0005) is not built again."""
    match = re.match(r"FOREIGN KEY \((\w+)\)", definition)
    return bool(match) and match.group(1) in _declared_foreign_keys()


def _deferrable(cursor) -> list[tuple[str, str, str]]:  # noqa: ANN001 - a database cursor
    """(kind, name, definition) of the event table's secondary indexes and site foreign key."""
    cursor.execute(
        "SELECT 'index', c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = %s::regclass AND NOT i.indisunique AND NOT i.indisprimary"
        " UNION ALL SELECT 'constraint', conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = %s::regclass AND contype = 'f'"
        " ORDER BY 1, 2",
        [TABLE, TABLE],
    )
    return [tuple(row) for row in cursor.fetchall()]


def defer_indexes(job: ImportJob) -> None:
    """Drop the event table's secondary indexes and foreign keys, keeping their definitions with `job`."""
    with transaction.atomic(), connection.cursor() as cursor:
        locked = ImportJob.objects.select_for_update().get(pk=job.pk)
        dropped = _deferrable(cursor)
        for kind, name, _ in dropped:
            if kind == "index":
                cursor.execute(f'DROP INDEX IF EXISTS "{name}"')
            else:
                cursor.execute(f'ALTER TABLE {TABLE} DROP CONSTRAINT IF EXISTS "{name}"')
        locked.deferred_ddl = [list(d) for d in dropped] + [d for d in locked.deferred_ddl if tuple(d) not in dropped]
        locked.save(update_fields=["deferred_ddl"])
        job.deferred_ddl = locked.deferred_ddl


def restore_deferred() -> int:
    """Build the indexes and foreign keys that imports deferred; returns how many were built.

    Another import still loading without them then goes on with them, slower but exact.
    """
    jobs = ImportJob.objects.exclude(deferred_ddl=[])
    wanted: dict[str, tuple[str, str]] = {}
    for job in jobs:
        for kind, name, definition in job.deferred_ddl:
            wanted[name] = (kind, definition)
    if not wanted or not is_postgresql():
        return 0
    built = 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'")
        present = {name for _, name, _ in _deferrable(cursor)}
        for name, (kind, definition) in sorted(wanted.items()):
            if name in present or (kind != "index" and not _still_declared(definition)):
                continue
            if kind == "index":  # on a partitioned table, built on every partition (not `ON ONLY` it)
                cursor.execute(definition.replace(" ON ONLY ", " ON ", 1))
            else:  # checked once, with one join, instead of once per stored row
                cursor.execute(f'ALTER TABLE {TABLE} ADD CONSTRAINT "{name}" {definition}')
            built += 1
        jobs.update(deferred_ddl=[])
    settle(TABLE)  # every partition: statistics, and the new rows all-visible for the rebuild's index-only scans
    return built


def finish_load(dominating: bool) -> None:
    """The end of an import: the indexes imports deferred built, then the summaries it left stale rebuilt.

    After a dominating load on PostgreSQL, the stale sites' actors are added (one scan of
    the new events, then the actor table's index builds: no event index needed) on a
    second connection while this one builds the event table's indexes, which keep little
    more than one core busy (their parallel workers only sort: 4.85 CPU-s in 4.26 s for
    one index of 1.95 M rows). One after the other they took 19 s of a 2 M-line import's
    37 (docs/benchmarks.md). The actors' transaction locks only the actor table and reads
    the events, which an index build lets it do.
    """
    if not (dominating and is_postgresql()):
        restore_deferred()  # before the rebuild, which reads through them
        maintenance.rebuild_stale(bulk=dominating)
        return
    sites = site_summary.stale_site_ids()
    with alongside(lambda: site_summary.add_actors_of_sites(sites), name="import-actors"):
        restore_deferred()
    maintenance.rebuild_stale(bulk=True, actors_added=sites)
