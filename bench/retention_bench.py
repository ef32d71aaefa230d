"""Benchmark: retention at scale (issue 19): prune a month, forget an actor, read before and after.

    eval "$(SWITCHBOARD_PG_DURABLE=1 contrib/dev/services.sh start)"
    .venv/bin/python bench/retention_bench.py [--events 10000000] [--months 13] [--requests 300]

Generates a chat file of --events lines (bench/gen_chat.py: statuses of 8
operators, 20,000 visitors, resent and malformed lines) spread evenly over
--months calendar months from --start, loads it with `import_jsonl` into a
fresh database (`--db`) on DATABASE_URL's server, starts gunicorn
(contrib/deploy/gunicorn.conf.py) and measures, through the read API:

  before    p50/p99 of the site summary (JSON, text, one site) and of one site's
            event page (first page, and a keyset page in the middle of its range)
  prune     `prune_events --before` the start of the second month: wall time, WAL
            written, the strongest lock the command held on events_event (and its
            partitions, if any) and for how long (pg_locks sampled every
            --lock-interval from a second connection), and the same reads issued
            back to back by one client all through it: count, latency, errors
  forget    `forget_actor` of the operator with the most events, then of the
            visitor with the most: the same figures
  after     the latencies again

The text summary after the prune must equal the one before it byte for byte
(pruning keeps the summaries exact); the forgets change it, so they come after
that comparison. Refuses a server running with fsync off (`--allow-fsync-off`
to measure one anyway). Prints Markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import subprocess
import threading
import time
from calendar import monthrange
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg2
from gen_chat import generate
from http_bench import (
    PYTHON,
    REPO,
    Stack,
    analyst_token,
    log,
    machine_line,
    manage,
    percentile,
    recreate_database,
    run_load,
    server_versions,
    with_database,
)
from read_bench import site_middle
from server_stats import durability_settings, durability_text

# The measured commands' connections carry this application_name (libpq reads PGAPPNAME),
# so the lock sampler tells their locks from the readers'.
COMMAND_APP = "retention-bench-command"
# PostgreSQL's table lock modes, weakest first.
LOCK_MODES = (
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
)


# --- time ------------------------------------------------------------------------


def month_start(text: str, months_later: int = 0) -> datetime:
    """The first instant (UTC) of the month `text` (YYYY-MM) names, plus `months_later` months."""
    year, month = (int(part) for part in text.split("-"))
    index = year * 12 + month - 1 + months_later
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def days_in(start: datetime, months: int) -> int:
    total, index = 0, start.year * 12 + start.month - 1
    for i in range(months):
        total += monthrange((index + i) // 12, (index + i) % 12 + 1)[1]
    return total


# --- the database ----------------------------------------------------------------


def query(dsn: str, sql: str, params: list | dict | None = None) -> list[tuple]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    conn.close()
    return rows


def event_relations(dsn: str) -> set[int]:
    """events_event and, once it is partitioned, every partition of it (oids, taken before a
    step so that a partition the step detaches still counts)."""
    rows = query(
        dsn,
        "SELECT 'events_event'::regclass::oid UNION SELECT relid::oid FROM pg_partition_tree('events_event')",
    )
    return {oid for (oid,) in rows}


def busiest_actor(dsn: str, kind: str) -> tuple[str, int]:
    """The actor with the most stored events of this kind (status: an operator; message: a visitor),
    and its events, stored and pruned: what forget_actor erases."""
    sql = "SELECT actor FROM events_event WHERE kind = %s GROUP BY actor ORDER BY count(*) DESC, 1 LIMIT 1"
    ((actor,),) = query(dsn, sql, [kind])
    events = 0
    for table in ("events_event", *pruned_table(dsn)):
        events += query(dsn, f"SELECT count(*) FROM {table} WHERE actor = %s", [actor])[0][0]
    return actor, events


def pruned_table(dsn: str) -> list[str]:
    """The table of pruned events' kept fields (events/retention.py), if this code has one."""
    return [name for (name,) in query(dsn, "SELECT to_regclass('events_prunedevent')::text") if name]


def deep_cursor(dsn: str, site: str) -> str:
    """A keyset cursor (reports/pagination.py's encoding) at the middle of the site's time range."""
    middle = site_middle(dsn, site)
    sql = "SELECT ts, id FROM events_event WHERE site_id = %s AND ts >= %s ORDER BY ts, id LIMIT 1"
    ts, pk = query(dsn, sql, [site, middle])[0]
    return base64.b64encode(urlencode({"p": f"{ts!r}_{pk}"}).encode()).decode()


def stored(dsn: str) -> str:
    ((events, size),) = query(
        dsn, "SELECT count(*), pg_size_pretty(pg_database_size(current_database())) FROM events_event"
    )
    pruned = sum(query(dsn, f"SELECT count(*) FROM {table}")[0][0] for table in pruned_table(dsn))
    return f"{events:,} events stored, {pruned:,} pruned (kept for the summaries), database {size}"


# --- what happens during a step --------------------------------------------------


@dataclass
class Locks:
    """What the step's command held on the event table(s), sampled from a second connection."""

    samples: int = 0
    strongest: str = ""
    held: float = 0.0  # seconds the strongest mode was seen held (sum of the sample intervals)
    longest: float = 0.0  # its longest unbroken stretch
    waiting_samples: int = 0  # samples in which another session waited for a lock
    others: dict[str, str] = field(default_factory=dict)  # other tables: strongest mode the command held


class LockSampler(threading.Thread):
    SQL = (
        "SELECT l.relation::oid, c.relname, c.relkind, l.mode, l.granted, a.application_name"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " LEFT JOIN pg_class c ON c.oid = l.relation"
        " WHERE l.pid <> pg_backend_pid() AND a.datname = current_database()"
    )

    def __init__(self, dsn: str, relations: set[int], interval: float) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True
        self.relations, self.interval = relations, interval
        self.stop_event = threading.Event()
        self.timeline: list[tuple[float, str]] = []  # (sampled at, strongest mode on the event tables or "")
        self.locks = Locks()

    def run(self) -> None:
        with self.conn.cursor() as cursor:
            while not self.stop_event.is_set():
                at = time.perf_counter()
                cursor.execute(self.SQL)
                self.record(at, cursor.fetchall())
                self.stop_event.wait(max(0.0, self.interval - (time.perf_counter() - at)))
        self.conn.close()

    def record(self, at: float, rows: list[tuple]) -> None:
        on_events, waiting = -1, False
        for oid, relname, relkind, mode, granted, app in rows:
            rank = LOCK_MODES.index(mode) if mode in LOCK_MODES else -1
            if app != COMMAND_APP:
                waiting |= not granted
            elif granted and oid in self.relations:
                on_events = max(on_events, rank)
            elif granted and relkind in ("r", "p") and rank >= 0 and not relname.startswith("pg_"):
                before = self.locks.others.get(relname)
                if before is None or LOCK_MODES.index(before) < rank:
                    self.locks.others[relname] = mode
        self.timeline.append((at, LOCK_MODES[on_events] if on_events >= 0 else ""))
        self.locks.samples += 1
        self.locks.waiting_samples += waiting

    def finish(self) -> Locks:
        self.stop_event.set()
        self.join()
        locks = self.locks
        ranks = [LOCK_MODES.index(mode) for _, mode in self.timeline if mode]
        if not ranks:
            return locks
        locks.strongest = LOCK_MODES[max(ranks)]
        stretch_start = None
        ends = [at for at, _ in self.timeline[1:]] + [self.timeline[-1][0] + self.interval]
        for (at, mode), end in zip(self.timeline, ends, strict=True):
            if mode == locks.strongest:
                locks.held += end - at
                stretch_start = at if stretch_start is None else stretch_start
                locks.longest = max(locks.longest, end - stretch_start)
            else:
                stretch_start = None
        return locks


@dataclass
class Reads:
    latencies: list[float] = field(default_factory=list)  # ms, sorted once done
    errors: int = 0


class Reader(threading.Thread):
    """One client issuing the read paths back to back over a keep-alive connection until stopped."""

    def __init__(self, port: int, headers: dict[str, str], paths: list[str]) -> None:
        super().__init__(daemon=True)
        self.port, self.headers, self.paths = port, headers, paths
        self.stop_event = threading.Event()
        self.reads = Reads()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        turn = 0
        while not self.stop_event.is_set():
            path = self.paths[turn % len(self.paths)]
            turn += 1
            start = time.perf_counter()
            try:
                conn.request("GET", path, headers=self.headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()  # the next request reconnects
                ok = False
            self.reads.latencies.append((time.perf_counter() - start) * 1000)
            self.reads.errors += not ok
        conn.close()

    def finish(self) -> Reads:
        self.stop_event.set()
        self.join()
        self.reads.latencies.sort()
        return self.reads


@dataclass
class Step:
    name: str
    events: int  # the events the step is about (loaded, older than the cut, the actor's)
    wall: float
    wal_bytes: int
    output: str  # the command's last line
    locks: Locks | None = None
    reads: Reads | None = None

    def row(self) -> str:
        cells = [self.name, f"{self.events:,}", f"{self.wall:.1f}", f"{self.wal_bytes / 2**20:,.1f}"]
        if self.locks:
            held = f"{self.locks.held:.1f} ({self.locks.longest:.2f})" if self.locks.strongest else ""
            cells += [self.locks.strongest or "none seen", held, str(self.locks.waiting_samples)]
        else:
            cells += ["", "", ""]
        if self.reads and self.reads.latencies:
            ms = self.reads.latencies
            cells += [f"{len(ms):,}", *(f"{percentile(ms, q):.1f}" for q in (50, 99)), f"{ms[-1]:.0f}"]
            cells.append(str(self.reads.errors))
        else:
            cells += ["", "", "", "", ""]
        return "| " + " | ".join(cells) + " |"


STEP_HEADER = (
    "| step | events | wall s | WAL MiB | strongest lock on the event table | held s (longest) "
    "| samples with a lock wait | reads during | p50 ms | p99 ms | max ms | read errors |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


@dataclass
class Bench:
    env: dict[str, str]
    dsn: str
    workdir: Path
    lock_interval: float
    stack: Stack | None = None
    headers: dict[str, str] = field(default_factory=dict)
    read_paths: list[str] = field(default_factory=list)

    def wal_lsn(self) -> str:
        return query(self.dsn, "SELECT pg_current_wal_lsn()::text")[0][0]

    def run(self, name: str, events: int, *args: str) -> Step:
        """Run `manage.py args` as one step: wall time, WAL, and (once gunicorn runs) locks and reads."""
        log(f"{name}: manage.py {' '.join(args)}")
        lsn = self.wal_lsn()
        sampler = reader = None
        if self.stack:
            sampler = LockSampler(self.dsn, event_relations(self.dsn), self.lock_interval)
            reader = Reader(self.stack.port, self.headers, self.read_paths)
            sampler.start()
            reader.start()
            time.sleep(self.lock_interval)  # both running before the command starts
        start = time.perf_counter()
        done = subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=REPO,
            env={**self.env, "PGAPPNAME": COMMAND_APP},
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        locks = sampler.finish() if sampler else None
        reads = reader.finish() if reader else None
        wal = int(query(self.dsn, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", [lsn])[0][0])
        (self.workdir / f"{args[0]}-{int(time.time())}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stderr}")
        last = (done.stderr.strip().splitlines() or [""])[-1]
        log(f"{name}: {wall:.1f} s; {last}")
        return Step(name, events, wall, wal, last, locks, reads)

    def latencies(self, endpoints: list[tuple[str, str]], requests: int) -> dict[str, tuple[float, float, int]]:
        """p50, p99 (ms) and answers other than 200 of `requests` sequential requests per endpoint."""
        measured = {}
        for name, path in endpoints:
            run_load(self.stack.port, [("GET", path, None)] * 20, self.headers, 1)  # warm up
            load = run_load(self.stack.port, [("GET", path, None)] * requests, self.headers, 1)
            ms = load.latencies_ms()
            bad = sum(n for status, n in load.statuses().items() if status != 200)
            measured[name] = (percentile(ms, 50), percentile(ms, 99), bad)
        return measured

    def summary_text(self) -> bytes:
        status, body = self.stack.get("/api/sites/summary/?format=txt", self.headers)
        if status != 200:
            raise SystemExit(f"GET /api/sites/summary/?format=txt answered {status}: {body[:200]!r}")
        return body


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + (" (with uncommitted changes)" if git("status", "--porcelain") else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000, help="lines of the generated file")
    parser.add_argument("--months", type=int, default=13, help="calendar months the file spans (at least 2)")
    parser.add_argument("--start", default="2024-01", help="first month of the file, YYYY-MM")
    parser.add_argument("--sites", type=int, default=250)
    parser.add_argument("--duplicates", type=float, default=0.02, help="fraction of resent lines")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--requests", type=int, default=300, help="requests per endpoint, before and after")
    parser.add_argument("--lock-interval", type=float, default=0.05, help="seconds between pg_locks samples")
    parser.add_argument("--db", default="retention_bench", help="database created afresh on DATABASE_URL's server")
    parser.add_argument("--dir", default="/tmp/switchboard-bench/retention")
    parser.add_argument("--allow-fsync-off", action="store_true", help="measure a server with fsync=off anyway")
    args = parser.parse_args()
    if args.months < 2:
        raise SystemExit("--months must be at least 2: the oldest month is pruned, the others stay")
    began = time.perf_counter()
    phases: dict[str, float] = {}

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("DATABASE_URL must name a PostgreSQL server (the benchmark creates --db on it)")
    durable = durability_settings(url)
    if durable["fsync"] != "on":
        if not args.allow_fsync_off:
            raise SystemExit(
                f"the server runs with {durability_text(durable)}: its figures would not hold on a durable "
                "server; start one with SWITCHBOARD_PG_DURABLE=1 contrib/dev/services.sh start "
                "(or pass --allow-fsync-off)"
            )
        log(f"warning: the server runs with {durability_text(durable)}: WAL and commit costs are understated")
    workdir = Path(args.dir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "web.log").unlink(missing_ok=True)

    first, cut = month_start(args.start), month_start(args.start, 1)
    span = days_in(first, args.months) * 86_400
    shape = f"{args.events}-{args.start}-{args.months}m-{args.sites}s-{args.duplicates:g}d-{args.seed}"
    data = workdir / f"chat-{shape}.jsonl"
    if not data.exists():
        log(f"generating {data} ({args.events:,} lines over {args.months} months from {args.start})")
        t = time.perf_counter()
        partial = data.with_suffix(".partial")
        seconds_per_line = span / args.events
        generate(args.events, str(partial), args.seed, args.sites, args.duplicates, first.timestamp(), seconds_per_line)
        partial.rename(data)
        phases["generate"] = time.perf_counter() - t

    recreate_database(url, args.db)
    dsn = with_database(url, args.db)
    # The analyst throttle lifted: the benchmark measures latency, not the per-token limit.
    env = {**os.environ, "DATABASE_URL": dsn, "DEBUG": "false", "ANALYST_THROTTLE_RATE": "1000000/min"}
    manage(env, "migrate", "--noinput", "-v0")
    t = time.perf_counter()
    manage(env, "shell", "-c", "pass")
    phases["manage.py start-up (in every step's wall time)"] = time.perf_counter() - t
    bench = Bench(env, dsn, workdir, args.lock_interval)
    loaded = bench.run("import_jsonl", args.events, "import_jsonl", str(data))
    loaded.events = query(dsn, "SELECT count(*) FROM events_event")[0][0]
    steps = [loaded]
    # An import of history lands in the default partition (the months are not made ahead for
    # the past); the daily beat task moves each month of it into its own partition: run it now,
    # so that prune has whole months to drop, and measure what it costs.
    steps.append(bench.run("make_partitions (the imported months out of the default partition)",
                           loaded.events, "make_partitions"))  # fmt: skip
    stored_before = stored(dsn)
    log(stored_before)

    (stale,) = query(dsn, "SELECT count(*) FROM reports_sitesummary WHERE stale")[0]
    if stale:
        raise SystemExit(f"{stale} site summaries are stale after the import: nothing to compare")
    bench.headers = {"Authorization": f"Token {analyst_token(env, 'bench-retention')}"}
    ((site, _),) = query(
        dsn, "SELECT site_id, count(*) FROM events_event WHERE kind = 'message' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1"
    )
    quoted = quote(site, safe="")
    middle = deep_cursor(dsn, site)
    endpoints = [
        ("`/api/sites/summary/` JSON", "/api/sites/summary/"),
        ("`/api/sites/summary/?format=txt`", "/api/sites/summary/?format=txt"),
        ("`/api/sites/{id}/summary/`, busiest site", f"/api/sites/{quoted}/summary/"),
        ("`/api/events/?site=…`, first page", f"/api/events/?site={quoted}"),
        ("`/api/events/?site=…&cursor=…`, a page mid-range", f"/api/events/?site={quoted}&cursor={middle}"),
    ]  # fmt: skip
    bench.read_paths = [path for _, path in endpoints]

    bench.stack = Stack(env, workdir)
    try:
        bench.stack.start_web(None, None)
        for name, path in endpoints:
            status, body = bench.stack.get(path, bench.headers)
            if status != 200:
                raise SystemExit(f"{name}: {path} answered {status}: {body[:300]!r}")
        log(f"before: {args.requests} requests per endpoint")
        t = time.perf_counter()
        before = bench.latencies(endpoints, args.requests)
        phases["latencies before"] = time.perf_counter() - t
        summary_before = bench.summary_text()

        (older,) = query(dsn, "SELECT count(*) FROM events_event WHERE ts < %s", [cut.timestamp()])[0]
        steps.append(
            bench.run(f"prune the oldest month (before {cut:%Y-%m-%d})", older, "prune_events",
                      "--before", str(int(cut.timestamp())))
        )  # fmt: skip
        summary_pruned = bench.summary_text()
        (left,) = query(dsn, "SELECT count(*) FROM events_event WHERE ts < %s", [cut.timestamp()])[0]
        stored_pruned = stored(dsn)

        forgotten = []
        for role, kind in (("an operator", "status"), ("a visitor", "message")):
            actor, count = busiest_actor(dsn, kind)
            steps.append(bench.run(f"forget {role} (`{actor}`)", count, "forget_actor", actor))
            (still,) = query(dsn, "SELECT count(*) FROM events_event WHERE actor = %s", [actor])[0]
            forgotten.append(f"{actor}: {still} events left")
        summary_forgotten = bench.summary_text()

        log(f"after: {args.requests} requests per endpoint")
        t = time.perf_counter()
        after = bench.latencies(endpoints, args.requests)
        phases["latencies after"] = time.perf_counter() - t
    finally:
        bench.stack.stop()
    for step in steps:
        phases[step.name] = step.wall
    phases["whole run"] = time.perf_counter() - began

    changed = len(set(summary_pruned.splitlines()) - set(summary_forgotten.splitlines()))
    report = [
        machine_line(),
        f"servers: {server_versions(dsn, None)} ({durability_text(durable)}); commit {git_commit()}",
        f"file: {args.events:,} lines ({data.stat().st_size / 1e6:,.0f} MB, bench/gen_chat.py: {args.sites} sites, "
        f"{args.duplicates:g} resent, seed {args.seed}), {args.months} months from {first:%Y-%m-%d}",
        f"after the import: {stored_before}",
        f"after the prune: {stored_pruned}; {left} events older than the cut left",
        f"summary (text) after the prune equals the one before it, byte for byte: "
        f"{'yes' if summary_pruned == summary_before else 'NO'}",
        f"after the forgets: {'; '.join(forgotten)}; {changed} site lines of the summary changed",
        f"reads during a step: one client, back to back, cycling over the {len(endpoints)} endpoints below; "
        f"locks: pg_locks every {args.lock_interval * 1000:.0f} ms",
        "",
        STEP_HEADER,
        *(step.row() for step in steps),
        "",
        f"| read ({args.requests} requests, one client) | before p50 ms | before p99 ms "
        "| after p50 ms | after p99 ms |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {before[name][0]:.1f} | {before[name][1]:.1f} | {after[name][0]:.1f} | {after[name][1]:.1f} |"
            for name, _ in endpoints
        ),
        "",
        "phases (s): " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in phases.items()),
    ]
    others = {step.name: step.locks.others for step in steps if step.locks and step.locks.others}
    for name, tables in others.items():
        report.append(f"{name}: other tables locked: " + ", ".join(f"{t} {m}" for t, m in sorted(tables.items())))
    not_ok = {name: (before[name][2], after[name][2]) for name, _ in endpoints if before[name][2] or after[name][2]}
    if not_ok:
        report.append(f"answers other than 200 (before, after): {not_ok}")
    text = "\n".join(report)
    (workdir / "retention_bench.md").write_text(text + "\n")
    print(text)
    if summary_pruned != summary_before:
        raise SystemExit("the prune changed the site summary")


if __name__ == "__main__":
    main()
