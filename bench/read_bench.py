"""Benchmark: reading the site summary (SPEC §8) through gunicorn, with many events stored.

    DATABASE_URL=postgres://.../bench .venv/bin/python bench/read_bench.py [--requests 500]

Works on an existing, populated database (e.g. the one bench/import_bench.py
filled with 10 M chat lines); it only adds what reading needs: pending
migrations and an analyst user with a token. It counts the stored events,
checks that the API's summary equals `manage.py site_summary`, starts gunicorn
with contrib/deploy/gunicorn.conf.py, and measures latency over --requests
requests per endpoint from one client thread (keep-alive), then throughput from
--concurrency threads. Beside the summaries: /api/health/ (a database query, a
broker round trip and the backlog count) and first pages of /api/events/ for
the busiest and the quietest site, and filters on actor and type with no site.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from urllib.parse import quote

import orjson
import psycopg2
from http_bench import (
    Job,
    Stack,
    analyst_token,
    latency_cells,
    log,
    machine_line,
    manage,
    run_load,
    server_versions,
)


def stored_counts(dsn: str) -> tuple[int, int, int, str]:
    """Events, sites with a summary, stale sites, database size."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM events_event")
        events = cursor.fetchone()[0]
        cursor.execute("SELECT count(*), count(*) FILTER (WHERE stale) FROM reports_sitesummary")
        sites, stale = cursor.fetchone()
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        size = cursor.fetchone()[0]
    conn.close()
    return events, sites, stale, size


def site_middle(dsn: str, site: str) -> float:
    """The middle of a site's time range (epoch seconds), for a time-window query."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT (min(ts) + max(ts)) / 2 FROM events_event WHERE site_id = %s", [site])
        middle = cursor.fetchone()[0]
    conn.close()
    return float(middle or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500, help="requests per endpoint and mode")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--web-workers", type=int, default=None, help="default: gunicorn.conf.py's (2 x cores + 1)")
    parser.add_argument("--web-threads", type=int, default=None, help="default: gunicorn.conf.py's (2)")
    parser.add_argument("--dir", default="/tmp/switchboard-bench/read")
    args = parser.parse_args()
    load_before = os.getloadavg()

    dsn = os.environ.get("DATABASE_URL", "")
    if not dsn.startswith(("postgres://", "postgresql://")):
        raise SystemExit("DATABASE_URL must name the populated PostgreSQL database to read from")
    workdir = Path(args.dir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "web.log").unlink(missing_ok=True)
    env = {**os.environ, "DEBUG": "false"}  # CELERY_BROKER_URL: /api/health/ checks the broker, as in production

    log("migrating (pending migrations only)")
    manage(env, "migrate", "--noinput", "-v0")
    events, sites, stale, size = stored_counts(dsn)
    log(f"{events:,} events, {sites} sites ({stale} stale), database {size}")
    reference = manage(env, "site_summary").splitlines()
    if not reference:
        raise SystemExit("the database holds no site summary: import events first")
    token = analyst_token(env, "bench-reader")
    # The busiest and the quietest site (by chats): single-site answers and event pages at both ends.
    by_chats = sorted(reference, key=lambda line: int(line.split(",messages=")[1].split(",")[0]))
    biggest, smallest = by_chats[-1].split(",")[0], by_chats[0].split(",")[0]

    middle = site_middle(dsn, biggest)
    site = quote(biggest, safe="")
    endpoints = [
        ("summary JSON", "/api/sites/summary/"),
        ("summary txt", "/api/sites/summary/?format=txt"),
        ("one site JSON", f"/api/sites/{site}/summary/"),
        ("health (DB, broker, backlog)", "/api/health/"),
        ("events: one site, first page", f"/api/events/?site={site}"),
        ("events: one site, one hour", f"/api/events/?site={site}&since={middle:.0f}&until={middle + 3600:.0f}"),
        ("events: quietest site, first page", f"/api/events/?site={quote(smallest, safe='')}"),
        # Worst cases of filters indexed after the site: nothing matches, so every site is probed.
        ("events: actor with no events, all sites", "/api/events/?actor=no-such-actor"),
        ("events: type with no events, all sites", "/api/events/?type=no-such-type"),
    ]
    auth = {"Authorization": f"Token {token}"}
    stack = Stack(env, workdir)
    rows: list[str] = []
    try:
        stack.start_web(args.web_workers, args.web_threads)
        status, body = stack.get("/api/sites/summary/?format=txt", auth)
        if status != 200 or body.decode().splitlines() != reference:
            raise SystemExit(f"the API's summary differs from manage.py site_summary ({status}): {body[:200]!r}")
        status, body = stack.get("/api/sites/summary/", auth)
        payload = orjson.loads(body)
        listed = payload if isinstance(payload, list) else payload.get("results", payload.get("sites", []))
        if status != 200 or len(listed) != len(reference):
            raise SystemExit(f"GET /api/sites/summary/ answered {status} with {len(listed)} rows, not {sites}")
        json_bytes = len(body)
        for name, path in endpoints:
            jobs: list[Job] = [("GET", path, None)] * args.requests
            run_load(stack.port, jobs[:50], auth, args.concurrency)  # warm every web worker
            for concurrency in (1, args.concurrency):
                log(f"{name}: {args.requests} requests, {concurrency} client thread(s)")
                load = run_load(stack.port, jobs, auth, concurrency)
                bad = sum(n for s, n in load.statuses().items() if s != 200)
                rows.append(
                    f"| {name} | {concurrency} | {args.requests} | {len(load.calls) / load.wall:,.0f} "
                    f"| {latency_cells(load.latencies_ms())} | {bad} |"
                )
    finally:
        stack.stop()

    report = [
        machine_line(),
        f"servers: {server_versions(dsn, None)}; load average before the run: "
        + " ".join(f"{v:.2f}" for v in load_before),
        f"stored: {events:,} events, {sites} sites ({stale} stale), database {size}; summary JSON {json_bytes:,} bytes",
        f"busiest site: {by_chats[-1]}; quietest: {by_chats[0]}",
        f"web: gunicorn -c contrib/deploy/gunicorn.conf.py (workers={args.web_workers or 'conf default'}, "
        f"threads={args.web_threads or 'conf default'})",
        "",
        "| endpoint | client threads | requests | requests/s | p50 ms | p90 ms | p99 ms | max ms | not 200 |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    text = "\n".join(report)
    (workdir / "read_bench.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
