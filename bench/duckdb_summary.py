"""The peer: DuckDB computing the site summary of SPEC §3 from a chat NDJSON file in memory.

    python bench/duckdb_summary.py FILE [--memory-limit 8GB --temp-directory DIR]

Prints the classic lines. Validation mirrors the chat rules closely enough for
the generated benchmark files (malformed lines are skipped; duplicates by id).
DuckDB holds the file in memory (2.7 GiB for 10 M lines, ~1.5 bytes per byte of
file); `--memory-limit` caps it and `--temp-directory` takes what its operators
can spill, which is little for this query (an 18 MB file of 100,000 lines runs
in 200 MB and fails in 130 MB).
"""

from __future__ import annotations

import argparse

import duckdb

QUERY = """
WITH raw AS (
    SELECT * FROM read_json(?, format = 'newline_delimited', ignore_errors = true,
        columns = {id: 'VARCHAR', type: 'VARCHAR', "from": 'VARCHAR', site_id: 'VARCHAR',
                   timestamp: 'DOUBLE', data: 'JSON'})
), valid AS (
    SELECT id, type, "from" AS actor, site_id AS site, timestamp AS ts,
        json_extract_string(data, '$.status') AS status
    FROM raw
    WHERE id <> '' AND "from" <> '' AND site_id <> '' AND timestamp >= 0
      AND ((type = 'message' AND json_type(data, '$.message') = 'VARCHAR')
        OR (type = 'status' AND json_extract_string(data, '$.status') IN ('online', 'offline')))
), events AS (
    SELECT * FROM valid QUALIFY row_number() OVER (PARTITION BY id) = 1
), changes AS (
    SELECT site, ts, 0 AS k, id, actor,
        (status = 'online')::INT
        - coalesce(lag((status = 'online')::INT) OVER (PARTITION BY site, actor ORDER BY ts, id), 0) AS d
    FROM events WHERE type = 'status'
    UNION ALL
    SELECT site, ts, 1, id, actor, 0 FROM events WHERE type = 'message'
), running AS (
    SELECT site, k, actor, sum(d) OVER (PARTITION BY site ORDER BY ts, k, id ROWS UNBOUNDED PRECEDING) AS online
    FROM changes
)
SELECT site,
    count(*) FILTER (WHERE k = 1 AND online > 0),
    count(*) FILTER (WHERE k = 1 AND online = 0),
    count(DISTINCT actor) FILTER (WHERE k = 0),
    count(DISTINCT actor) FILTER (WHERE k = 1)
FROM running GROUP BY site
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file")
    parser.add_argument("--memory-limit", help="DuckDB's memory_limit, e.g. 8GB (default: 80%% of RAM)")
    parser.add_argument("--temp-directory", help="where DuckDB spills beyond the memory limit")
    args = parser.parse_args()
    db = duckdb.connect()
    if args.memory_limit:
        db.execute(f"SET memory_limit = '{args.memory_limit}'")
    if args.temp_directory:
        db.execute(f"SET temp_directory = '{args.temp_directory}'")
        db.execute("SET preserve_insertion_order = false")  # lets more operators spill
    rows = db.execute(QUERY, [args.file]).fetchall()
    for site, messages, emails, operators, visitors in sorted(rows):
        print(f"{site},messages={messages},emails={emails},operators={operators},visitors={visitors}")


if __name__ == "__main__":
    main()
