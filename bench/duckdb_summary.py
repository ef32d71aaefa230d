"""The peer: DuckDB computing the site summary of SPEC §3 from a chat NDJSON file in memory.

    python bench/duckdb_summary.py FILE

Prints the classic lines. Validation mirrors the chat rules closely enough for
the generated benchmark files (malformed lines are skipped; duplicates by id).
"""

from __future__ import annotations

import sys

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
    rows = duckdb.connect().execute(QUERY, [sys.argv[1]]).fetchall()
    for site, messages, emails, operators, visitors in sorted(rows):
        print(f"{site},messages={messages},emails={emails},operators={operators},visitors={visitors}")


if __name__ == "__main__":
    main()
