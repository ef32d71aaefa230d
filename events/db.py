"""SQL both backends (SQLite, PostgreSQL) understand, for the write paths."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from typing import IO

from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.models import BooleanField, Q
from django.db.models.expressions import RawSQL

ROWS_PER_STATEMENT = 500
UNIQUE_VIOLATION = "23505"  # PostgreSQL's SQLSTATE


def chunked(rows: Sequence[Sequence[object]], size: int) -> Iterator[Sequence[Sequence[object]]]:
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk


def insert_ignoring_conflicts(
    table: str, columns: Sequence[str], rows: Sequence[Sequence[object]], conflict: str, returning: str = ""
) -> list[tuple]:
    """Multi-row INSERT [... ON CONFLICT DO NOTHING] [RETURNING]: the rows that were new.

    Without `conflict` a plain INSERT (the event table: its ids were claimed first, events/identity.py)."""
    if not rows:
        return []
    names = ", ".join(columns)
    one_row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    inserted: list[tuple] = []
    with connection.cursor() as cursor:
        for chunk in chunked(rows, ROWS_PER_STATEMENT):
            cursor.execute(
                f"INSERT INTO {table} ({names}) VALUES {', '.join([one_row] * len(chunk))}"
                + (f" ON CONFLICT ({conflict}) DO NOTHING" if conflict else "")
                + (f" RETURNING {returning}" if returning else ""),
                [value for row in chunk for value in row],
            )
            if returning:
                inserted.extend(cursor.fetchall())
    return inserted


def pk_among(model: type, ids: Sequence[int]) -> Q | RawSQL:
    """A filter on `model`'s primary key for a list of ids. On PostgreSQL one array parameter
    (`= ANY`): Django's `__in` prepares every id in Python and sends one placeholder each,
    a measurable share of a worker's CPU for groups of hundreds of one-event batches."""
    if not is_postgresql():
        return Q(pk__in=ids)
    quote = connection.ops.quote_name
    column = f"{quote(model._meta.db_table)}.{quote(model._meta.pk.column)}"
    return RawSQL(f"{column} = ANY(%s)", [list(ids)], output_field=BooleanField())


@contextmanager
def alongside(work: Callable[[], object], name: str) -> Iterator[None]:
    """Run `work` in a thread, on a database connection of its own (Django's are per
    thread), while the block runs on this one; its exception is raised after the block,
    unless the block raised one of its own. The thread's connection is closed when it ends,
    so an unfinished transaction of it is rolled back."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as error:  # noqa: BLE001 - raised in the caller's thread
            failed.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=run, name=name, daemon=True)  # a killed import does not wait for it
    thread.start()
    try:
        yield
    finally:
        thread.join()
    if failed:
        raise failed[0]


def is_postgresql() -> bool:
    return connection.vendor == "postgresql"


def settle(table: str) -> None:
    """PostgreSQL, after a bulk load into `table`: `VACUUM (ANALYZE)` it, which also marks
    its pages all-visible, so that index-only scans of the new rows read no heap page (the
    rebuild's counting: 5.0 -> 0.3 CPU-s for 1.95 M events). Autovacuum would do the same
    soon after (an insert-triggered vacuum); done now, before the readers, and only once.
    Inside a caller's transaction, where VACUUM cannot run, only ANALYZE."""
    with connection.cursor() as cursor:
        cursor.execute(f"{'ANALYZE' if connection.in_atomic_block else 'VACUUM (ANALYZE)'} {table}")


def copy_unless_raced(cursor, sql: str, data: IO) -> bool:  # noqa: ANN001 - a database cursor
    """Run a `COPY ... FROM STDIN` under a savepoint; False if a unique index refused it.

    A COPY of rows whose ids were just found not stored is refused that way only when
    another writer stored one of them meanwhile: the caller reads the stored ids again
    (or inserts ON CONFLICT). Any other refusal (a constraint, a value the column cannot
    hold) raises, for the caller to set the refused record aside.
    """
    try:
        with transaction.atomic(), connection.wrap_database_errors:  # psycopg2's errors as Django's
            cursor.cursor.copy_expert(sql, data)
    except IntegrityError as error:
        if getattr(error.__cause__, "pgcode", None) != UNIQUE_VIOLATION:
            raise
        return False
    return True


def copy_text(value: object) -> str:
    """One field in PostgreSQL COPY text format."""
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


def update_rows(model: type, fields: Sequence[str], objects: Sequence[object]) -> None:
    """Save `fields` of many model instances with one `UPDATE ... FROM` per ROWS_PER_STATEMENT
    rows: Django's bulk_update builds a CASE per field and row, whose Python and SQL cost grows
    with both (seconds for a few hundred rows). PostgreSQL gets one array per column
    (`unnest`: one statement text whatever the rows, nothing to parse per value); SQLite
    a `VALUES` list."""
    if not objects:
        return
    db = connections[DEFAULT_DB_ALIAS]  # not the proxy: it costs a thread-local lookup per value prepared
    meta = model._meta
    pk = meta.pk
    columns = [pk, *(meta.get_field(name) for name in fields)]
    quote = db.ops.quote_name
    table = quote(meta.db_table)
    assignments = ", ".join(f"{quote(f.column)} = v.{quote(f.column)}" for f in columns[1:])
    names = ", ".join(quote(f.column) for f in columns)
    match = f" WHERE {table}.{quote(pk.column)} = v.{quote(pk.column)}"
    postgresql = db.vendor == "postgresql"
    arrays = ", ".join(f"CAST(%s AS {f.cast_db_type(db)}[])" for f in columns)
    row_sql = "(" + ", ".join(["%s"] * len(columns)) + ")"
    for chunk in chunked(objects, ROWS_PER_STATEMENT):
        values = [[f.get_db_prep_save(getattr(obj, f.attname), db) for f in columns] for obj in chunk]
        with db.cursor() as cursor:
            if postgresql:
                sql = f"UPDATE {table} SET {assignments} FROM unnest({arrays}) AS v({names})"
                cursor.execute(sql + match, [list(column) for column in zip(*values, strict=True)])
            else:
                rows = ", ".join([row_sql] * len(chunk))
                sql = f"WITH v({names}) AS (VALUES {rows}) UPDATE {table} SET {assignments} FROM v"
                cursor.execute(sql + match, [value for row in values for value in row])
