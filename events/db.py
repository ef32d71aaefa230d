"""SQL both backends (SQLite, PostgreSQL) understand, for the write paths."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import islice

from django.db import connection

ROWS_PER_STATEMENT = 500


def chunked(rows: Sequence[Sequence[object]], size: int) -> Iterator[Sequence[Sequence[object]]]:
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk


def insert_ignoring_conflicts(
    table: str, columns: Sequence[str], rows: Sequence[Sequence[object]], conflict: str, returning: str = ""
) -> list[tuple]:
    """Multi-row INSERT ... ON CONFLICT DO NOTHING [RETURNING]: the rows that were new."""
    if not rows:
        return []
    names = ", ".join(columns)
    one_row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    inserted: list[tuple] = []
    with connection.cursor() as cursor:
        for chunk in chunked(rows, ROWS_PER_STATEMENT):
            cursor.execute(
                f"INSERT INTO {table} ({names}) VALUES {', '.join([one_row] * len(chunk))}"
                f" ON CONFLICT ({conflict}) DO NOTHING" + (f" RETURNING {returning}" if returning else ""),
                [value for row in chunk for value in row],
            )
            if returning:
                inserted.extend(cursor.fetchall())
    return inserted


def is_postgresql() -> bool:
    return connection.vendor == "postgresql"


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
