"""Live-ingestion modes of bench/http_bench.py (issue 10's figures):

    http_bench.py wrk       [--seconds 30] [--connections 8]   saturation with wrk, worker running
    http_bench.py sustained [--rate 1000] [--seconds 60]        open loop at a fixed rate
    http_bench.py burst     [--events 2500] [--clients 8]       closed loop as fast as possible
    http_bench.py drain     [--single 3000] [--batches 30]      backlog posted with the worker stopped
    http_bench.py saturate  [--seconds 15] [--connections 8]    wrk at saturation: does the worker keep up?

Each mode recreates the benchmark database, starts gunicorn (contrib/deploy/gunicorn.conf.py)
and one Celery worker, and reports: accepted rate, latency percentiles, and freshness, the
seconds from the last 202 to every batch processed and to GET /api/sites/summary/ equal to
DuckDB's summary of what was posted (wrk: of what was stored, as wrk's in-flight requests at
its end are not known to the client).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import psycopg2
from http_bench import (
    REPO,
    CpuGroups,
    Poller,
    Stack,
    api_summary,
    batch_stats,
    chunks,
    cpu_row,
    cpu_used,
    expected_summary,
    generate_lines,
    log,
    machine_line,
    measure_freshness,
    percentile,
    postmaster_pid,
    posts,
    prepare,
    run_load,
    server_versions,
)
from http_load import WrkResult, live_events, open_loop, run_wrk

MODES = ("wrk", "sustained", "burst", "drain", "saturate")
SEED_004_HIGH = 447  # req/s: seed 004's service at its best (docs/benchmarks.md section 2)


def latency_line(latencies: list[float]) -> str:
    latencies = sorted(latencies)
    return " | ".join(f"{percentile(latencies, q):.1f}" for q in (50, 90, 99)) + f" | {latencies[-1]:.1f}"


def stored_lines(dsn: str, path: Path) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cursor, path.open("w") as out:
        cursor.execute("SELECT raw FROM events_event")
        out.writelines(row[0] + "\n" for row in cursor)
    conn.close()


def main(mode: str, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog=f"http_bench.py {mode}", description=__doc__)
    seconds = 15 if mode == "saturate" else 30
    parser.add_argument("--seconds", type=int, default=seconds, help="wrk, saturate, sustained: duration")
    parser.add_argument("--profile", action="store_true", help="saturate: py-spy record of the worker's processes")
    parser.add_argument(
        "--direct", type=float, default=0, help="saturate: no wrk; this many one-event batches/s put straight into"
        " the outbox by --feeders processes (the worker's capacity without gunicorn)"
    )  # fmt: skip
    parser.add_argument("--feeders", type=int, default=2, help="saturate --direct: inserting processes")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections / open-loop connections")
    parser.add_argument("--rate", type=float, default=1000, help="sustained: requests per second")
    parser.add_argument("--events", type=int, default=2500, help="burst: single-event requests")
    parser.add_argument("--clients", type=int, default=8, help="burst, drain: client threads")
    parser.add_argument("--single", type=int, default=3000, help="drain: one-event batches")
    parser.add_argument("--batches", type=int, default=30, help="drain: 1,000-event batches")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--web-workers", type=int, default=5)
    parser.add_argument("--web-threads", type=int, default=2)
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--db", default="bench_live")
    parser.add_argument("--redis-db", type=int, default=11)
    parser.add_argument("--dir", default="/tmp/switchboard-bench/live")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    env, dsn, redis_url, key, token, workdir = prepare(args, "bench-live")
    stack = Stack(env, workdir)
    auth = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}
    report = [
        machine_line(),
        f"servers: {server_versions(dsn, redis_url)} (PostgreSQL durable defaults: fsync on unless the server says"
        " otherwise); load average before: " + " ".join(f"{v:.2f}" for v in os.getloadavg()),
        f"web: gunicorn -c contrib/deploy/gunicorn.conf.py, {args.web_workers} workers x {args.web_threads} threads;"
        f" worker: one celery worker --concurrency={args.worker_concurrency}",
        "",
    ]
    try:
        stack.start_web(args.web_workers, args.web_threads)
        stack.start_worker(args.worker_concurrency)
        poller = Poller(dsn)
        groups = CpuGroups(stack.sessions(), args.db, postmaster_pid(dsn))
        with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
            cursor.execute("SHOW fsync")
            fsync = cursor.fetchone()[0]
            cursor.execute("SHOW synchronous_commit")
            report[1] += f"; fsync={fsync}, synchronous_commit={cursor.fetchone()[0]}"
        conn.close()
        # Warm up every web worker's connections outside the measurement (rejected records: no events).
        run_load(stack.port, posts([b'{"type": "warm-up"}'] * 40), auth, 8)
        wait_done(poller)
        if mode == "drain":
            stack.stop_worker()
        if mode == "wrk":
            report += wrk_mode(args, stack, poller, groups, dsn, key, token, workdir)
        elif mode == "saturate":
            report += saturate_mode(args, stack, poller, groups, dsn, key, token, workdir)
        elif mode == "sustained":
            report += sustained_mode(args, stack, poller, groups, auth, token, workdir)
        elif mode == "burst":
            report += burst_mode(args, stack, poller, groups, auth, token, workdir)
        else:
            report += drain_mode(args, stack, poller, dsn, auth, token, workdir, groups.postmaster)
    finally:
        stack.stop()
    text = "\n".join(report)
    (workdir / f"{mode}.md").write_text(text + "\n")
    print(text)


def wait_done(poller: Poller, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while poller.unfinished_batches():
        if time.monotonic() > deadline:
            raise SystemExit("batches still unfinished")
        time.sleep(0.05)


def freshness_rows(stack, poller, token, expected, last_accepted, timeout=600) -> list[str]:
    fresh = measure_freshness(stack, poller, token, expected, last_accepted, timeout)
    return [
        "",
        "| unfinished batches at the last 202 | last 202 -> every batch processed, s | last 202 -> exact summary, s |",
        "|---|---|---|",
        f"| {fresh.backlog_at_last_202:,} | {fresh.done_after:.2f} | {fresh.fresh_after:.2f} |",
    ]


def drain_after_load(before, groups, poller):
    """Right after a load ends: the CPU it used, the batches still waiting, and the seconds until
    the worker has processed every one of them."""
    last = time.perf_counter()
    cpu = cpu_used(before, groups.snapshot())
    backlog = poller.unfinished_batches()
    wait_done(poller)
    return cpu, backlog, time.perf_counter() - last


def wrk_mode(args, stack, poller, groups, dsn, key, token, workdir) -> list[str]:
    log(f"wrk: {args.connections} connections, {args.seconds} s")
    before = groups.snapshot()
    result = run_wrk(stack.port, key, f"wrk{time.time_ns()}", workdir, args.seconds, args.connections, 2)
    cpu, backlog, done_after = drain_after_load(before, groups, poller)
    stored, summary_ok = check_stored(stack, dsn, token, workdir)
    pct = result.percentiles_ms
    return [
        "| wrk connections | s | requests | requests/s | p50 ms | p90 ms | p99 ms | p99.9 ms | not 2xx |"
        " events stored (sent) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {args.connections} | {result.seconds:.1f} | {result.requests:,} | {result.rate:,.0f} | {pct[50]:.1f} "
        f"| {pct[90]:.1f} | {pct[99]:.1f} | {pct[99.9]:.1f} | {result.non_2xx} | {stored:,} ({result.sent:,}) |",
        "",
        f"unfinished batches when wrk stopped: {backlog:,}; every batch processed {done_after:.2f} s later; "
        f"summary equal to DuckDB's over the stored events: {'yes' if summary_ok else 'NO'}",
        "",
        "| CPU core-seconds | wall s | client | gunicorn | worker | postgres | everything else | machine busy |",
        "|---|---|---|---|---|---|---|---|",
        cpu_row("wrk", result.seconds, cpu),
    ]


def check_stored(stack, dsn, token, workdir) -> tuple[int, bool]:
    """Events stored, and whether the API's summary equals DuckDB's over them (wrk's requests
    in flight when it stops are unknown to the client, so the oracle reads what was stored)."""
    path = workdir / "stored.jsonl"
    stored_lines(dsn, path)
    summary_ok = api_summary(stack, token) == expected_summary(path)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM events_event")
        stored = cursor.fetchone()[0]
    conn.close()
    return stored, summary_ok


def database_now(dsn: str) -> object:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        now = cursor.fetchone()[0]
    conn.close()
    return now


def drain_record(dsn: str, since: object) -> tuple[int, int, float, float]:
    """Of the batches received since `since`: (batches, groups, last 202 -> last batch processed in
    seconds, largest claim age). The server's clock on both ends: `created_at` is stamped just
    before the 202 goes out and `processed_at` at the group's commit; a group's batches share
    `claimed_at`, so its distinct values count the claims."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(DISTINCT claimed_at),"
            " extract(epoch FROM max(processed_at) - max(created_at)),"
            " extract(epoch FROM max(claimed_at - created_at))"
            " FROM ingest_rawbatch WHERE created_at >= %s",
            [since],
        )
        batches, claims, after, wait = cursor.fetchone()
    conn.close()
    return int(batches), int(claims), float(after or 0), float(wait or 0)


def start_profile(stack, workdir: Path, seconds: int):  # -> subprocess.Popen | None
    """py-spy (raw collapsed stacks, idle frames left out) of the worker and its pool processes."""
    import shutil
    import subprocess
    import sys

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = workdir / "worker.pyspy.txt"
    log(f"py-spy: recording the worker into {out}")
    return subprocess.Popen(
        [spy, "record", "--pid", str(stack.worker.pid), "--subprocesses", "--format", "raw", "--rate", "200",
         "--duration", str(seconds), "--nonblocking", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=open(workdir / "py-spy.log", "wb"),  # noqa: SIM115
    )  # fmt: skip


def feed_outbox(stack, rate: float, seconds: int, feeders: int) -> WrkResult:
    """`bench/outbox_feed.py` in `feeders` processes at `rate` batches/s in all (no latencies)."""
    import subprocess
    import sys

    procs = [
        subprocess.Popen(
            [sys.executable, "bench/outbox_feed.py", "bench-live", str(rate / feeders), str(seconds), str(100 + i)],
            cwd=REPO,
            env=stack.env,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(feeders)
    ]
    outputs = [proc.communicate()[0].split() for proc in procs]
    if any(proc.returncode for proc in procs):
        raise SystemExit("bench/outbox_feed.py failed")
    inserted = sum(int(out[0]) for out in outputs)
    return WrkResult(inserted, inserted, 0, max(float(out[1]) for out in outputs), {}, "")


def saturate_mode(args, stack, poller, groups, dsn, key, token, workdir) -> list[str]:
    """wrk at saturation with the worker running: does the drain keep up? (issue 21)"""
    load = f"{args.direct:,.0f} batches/s into the outbox" if args.direct else f"wrk, {args.connections} connections"
    log(f"saturate: {load}, {args.seconds} s, the worker draining meanwhile")
    since = database_now(dsn)
    spy = start_profile(stack, workdir, args.seconds + 8) if args.profile else None
    before = groups.snapshot()
    if args.direct:
        result = feed_outbox(stack, args.direct, args.seconds, args.feeders)
    else:
        result = run_wrk(stack.port, key, f"sat{time.time_ns()}", workdir, args.seconds, args.connections, 2)
    cpu, backlog, done_after = drain_after_load(before, groups, poller)
    cpu_all = cpu_used(before, groups.snapshot())
    if spy:
        spy.wait()
    batches, claims, after, wait = drain_record(dsn, since)
    stored, summary_ok = check_stored(stack, dsn, token, workdir)
    pct = result.percentiles_ms
    target = 2.5 * SEED_004_HIGH
    met = after <= 5 and result.rate >= target and summary_ok and not result.non_2xx and not args.direct
    return [
        "| load | s | requests/s | p50 ms | p99 ms | not 2xx | batches | claims (groups) | batches per"
        " claim | backlog at wrk's end | last 202 -> every batch processed, s | events stored (sent) |"
        " summary = DuckDB's over the stored |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {load} | {result.seconds:.1f} | {result.rate:,.0f} | {pct.get(50, 0):.1f} | {pct.get(99, 0):.1f} "
        f"| {result.non_2xx} | {batches:,} | {claims:,} | {batches / max(claims, 1):,.1f} | {backlog:,} "
        f"| **{after:.2f}** | {stored:,} ({result.sent:,}) | {'yes' if summary_ok else 'NO'} |",
        "",
        f"last 202 -> every batch processed: {after:.2f} s by the server's clock (created_at of the last batch ->"
        f" processed_at of the last), {done_after:.2f} s by the client's poll after wrk stopped; longest wait"
        f" from receipt to claim {wait:.2f} s. Target: <= 5 s at >= {target:,.0f} req/s (2.5x seed 004's"
        f" {SEED_004_HIGH}) through the web tier: {'met' if met else 'NOT met'}.",
        f"worker CPU per batch, load and drain: {1000 * cpu_all['worker'] / max(batches, 1):.2f} ms;"
        f" PostgreSQL (all sessions): {1000 * cpu_all['postgres'] / max(batches, 1):.2f} ms;"
        f" gunicorn per request: {1000 * cpu['gunicorn'] / max(result.requests, 1):.2f} ms",
        "",
        "| CPU core-seconds | wall s | client | gunicorn | worker | postgres | everything else | machine busy |",
        "|---|---|---|---|---|---|---|---|",
        cpu_row("wrk", result.seconds, cpu),
        cpu_row("wrk + drain", result.seconds + done_after, cpu_all),
    ]


def sustained_mode(args, stack, poller, groups, auth, token, workdir) -> list[str]:
    count = int(args.rate * args.seconds)
    bodies = live_events(count, args.seed, time.time(), args.rate)
    posted = workdir / "posted.jsonl"
    posted.write_bytes(b"".join(b + b"\n" for b in bodies))
    expected = expected_summary(posted)
    connections = max(args.connections, 64)
    log(f"sustained: {args.rate:,.0f} requests/s for {args.seconds} s, open loop over {connections} connections")
    before = groups.snapshot()
    calls = open_loop(stack.port, auth, bodies, args.rate, connections)
    cpu = cpu_used(before, groups.snapshot())
    accepted = [c for c in calls if c.status == 202]
    wall = max(c.end for c in calls) - min(c.scheduled for c in calls)
    others = sorted({c.status for c in calls} - {202})
    rows = [
        "| offered req/s | s | requests | accepted/s | p50 ms | p90 ms | p99 ms | max ms | not 202 |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {args.rate:,.0f} | {wall:.1f} | {len(calls):,} | {len(accepted) / wall:,.0f} "
        f"| {latency_line([c.latency_ms for c in calls])} | {', '.join(map(str, others)) or 'none'} |",
    ]
    rows += freshness_rows(stack, poller, token, expected, max(c.end for c in accepted))
    return rows + [
        "",
        "| CPU core-seconds | wall s | client | gunicorn | worker | postgres | everything else | machine busy |",
        "|---|---|---|---|---|---|---|---|",
        cpu_row("sustained", wall, cpu),
    ]


def burst_mode(args, stack, poller, groups, auth, token, workdir) -> list[str]:
    bodies = live_events(args.events, args.seed, time.time(), 1000)
    posted = workdir / "posted.jsonl"
    posted.write_bytes(b"".join(b + b"\n" for b in bodies))
    expected = expected_summary(posted)
    log(f"burst: {args.events:,} single events from {args.clients} client threads")
    before = groups.snapshot()
    load = run_load(stack.port, posts(bodies), auth, args.clients)
    cpu = cpu_used(before, groups.snapshot())
    statuses = load.statuses()
    rows = [
        "| events | client threads | s | requests/s | p50 ms | p90 ms | p99 ms | max ms | not 202 |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {args.events:,} | {args.clients} | {load.wall:.2f} | {len(load.calls) / load.wall:,.0f} "
        f"| {latency_line(load.latencies_ms())} | {sum(n for s, n in statuses.items() if s != 202)} |",
    ]
    rows += freshness_rows(stack, poller, token, expected, load.last_accepted)
    return rows + [
        "",
        "| CPU core-seconds | wall s | client | gunicorn | worker | postgres | everything else | machine busy |",
        "|---|---|---|---|---|---|---|---|",
        cpu_row("burst", load.wall, cpu),
    ]


def drain_mode(args, stack, poller, dsn, auth, token, workdir, postmaster) -> list[str]:
    """One-event batches (statuses mixed in), then 1,000-event batches, each posted with the worker stopped."""
    singles = live_events(args.single, args.seed, time.time(), 1000)
    batch_lines = generate_lines(args.batches * args.batch_size, workdir, args.seed)
    posted = workdir / "posted.jsonl"
    posted.write_bytes(b"")
    rows = [
        "| backlog | batches | events | worker start -> all done, s | first claim -> last done, s | batches/s"
        " | events/s | summary exact |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cpu_rows = []
    kinds = [
        ("one event per batch (1 status per 10 messages, 50 sites)", singles, posts(singles), auth),
        (f"{args.batch_size:,} events per batch (bench/gen_chat.py, 250 sites)", batch_lines,
         posts(chunks(batch_lines, args.batch_size)), {**auth, "Content-Type": "application/x-ndjson"}),
    ]  # fmt: skip
    for name, lines, jobs, headers in kinds:
        with posted.open("ab") as f:
            f.writelines(line + b"\n" for line in lines)
        expected = expected_summary(posted)
        log(f"drain: posting {len(jobs):,} batches with the worker stopped")
        load = run_load(stack.port, jobs, headers, args.clients)
        assert load.statuses() == {202: len(jobs)}, load.statuses()
        stack.start_worker(args.worker_concurrency)
        start = time.perf_counter()
        groups = CpuGroups(stack.sessions(), args.db, postmaster)
        before = groups.snapshot()
        wait_done(poller)
        done = time.perf_counter() - start
        cpu_rows.append(cpu_row(name.split(" (")[0], done, cpu_used(before, groups.snapshot())))
        exact = measure_freshness(stack, poller, token, expected, start, 60)
        stats = batch_stats(dsn, load.batch_ids())
        stack.stop_worker()
        rows.append(
            f"| {name} | {stats.batches:,} | {stats.records:,} | {done:.2f} | {stats.span:.2f} "
            f"| {stats.batches / stats.span:,.0f} | {stats.records / stats.span:,.0f} "
            f"| yes ({exact.fresh_after:.2f} s) |"
        )
    return rows + [
        "",
        "| CPU core-seconds, worker start -> all done | wall s | client | gunicorn | worker | postgres"
        " | everything else | machine busy |",
        "|---|---|---|---|---|---|---|---|",
        *cpu_rows,
    ]
