"""What a benchmark run did to the PostgreSQL server: settings, WAL written, sizes.

Short connections of their own (psycopg2, the benchmark's DATABASE_URL); nothing
here for SQLite, whose callers get None.
"""

from __future__ import annotations

import psycopg2

DURABILITY = ("fsync", "synchronous_commit", "full_page_writes")


def durability_settings(dsn: str) -> dict[str, str]:
    """The server's fsync / synchronous_commit / full_page_writes, so a table says how durable it ran."""
    rows = Server(dsn).rows("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(DURABILITY),))
    shown = dict(rows)
    return {name: shown.get(name, "?") for name in DURABILITY}


def durability_text(settings: dict[str, str]) -> str:
    return ", ".join(f"{name}={value}" for name, value in settings.items())


class Server:
    def __init__(self, database_url: str) -> None:
        self.url = database_url

    @classmethod
    def of(cls, database_url: str) -> Server | None:
        return cls(database_url) if database_url.startswith("postgres") else None

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        conn = psycopg2.connect(self.url)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()
        finally:
            conn.close()

    def durability(self) -> str:
        """`fsync=on, synchronous_commit=on, full_page_writes=on`: how durable the run was."""
        return durability_text(durability_settings(self.url))

    def wal_lsn(self) -> str:
        return self.rows("SELECT pg_current_wal_lsn()::text")[0][0]

    def wal_bytes_since(self, lsn: str) -> int:
        return int(self.rows("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (lsn,))[0][0])

    def database_bytes(self) -> int:
        return int(self.rows("SELECT pg_database_size(current_database())")[0][0])

    def data_directory(self) -> str | None:
        """Where the server keeps its files (superusers and pg_read_all_settings only)."""
        try:
            return self.rows("SHOW data_directory")[0][0]
        except psycopg2.Error:
            return None

    def relation_bytes(self, limit: int = 8) -> list[tuple[str, int, int]]:
        """(table, table bytes with TOAST, index bytes) of the largest tables."""
        return [
            (name, int(table), int(indexes))
            for name, table, indexes in self.rows(
                """SELECT c.relname, pg_table_size(c.oid), pg_indexes_size(c.oid)
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE c.relkind = 'r' AND n.nspname = 'public'
                   ORDER BY pg_total_relation_size(c.oid) DESC LIMIT %s""",
                (limit,),
            )
        ]

    def import_progress(self) -> tuple[int, int] | None:
        """(lines, bytes) the latest import has committed (its durable checkpoint)."""
        found = self.rows("SELECT next_line - 1, next_offset FROM ingest_importjob ORDER BY id DESC LIMIT 1")
        return (int(found[0][0]), int(found[0][1])) if found else None

    def active_statement(self) -> str:
        """The first words of what the import's session is running, or its state."""
        found = self.rows(
            """SELECT state, query FROM pg_stat_activity
               WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND datname = current_database()
               ORDER BY state = 'active' DESC, query_start DESC LIMIT 1"""
        )
        if not found:
            return "no session"
        state, query = found[0]
        return " ".join(query.split())[:60] if state == "active" else state
