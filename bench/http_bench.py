"""Benchmark: HTTP ingestion (SPEC §8) through gunicorn, a Celery worker, PostgreSQL and Redis.

    eval "$(contrib/dev/services.sh start)"
    .venv/bin/python bench/http_bench.py [--single 3000] [--batches 100] [--batch-size 1000]

Creates a fresh database (`--db`, default bench_http) on the PostgreSQL server
of DATABASE_URL and uses a Redis database number of its own (`--redis-db`), so
the shared databases are not touched. Starts gunicorn with
contrib/deploy/gunicorn.conf.py and one Celery worker, creates an app key and an
analyst token, then measures, with the worker running unless said otherwise:

  single        one event per request (application/json) from C client threads
  batched       NDJSON bodies of --batch-size events
  batched gzip  the same, gzip-compressed (what contrib/client sends)
  fresh         seconds from the last 202 to every batch done, and to
                GET /api/sites/summary/?format=txt equal to DuckDB's summary of
                every line posted so far (bench/duckdb_summary.py)
  worker stopped  single events and batches posted with the worker stopped (the
                web tier alone), then the worker started: batches/s and events/s
                from its first claim to its last batch done, per kind of batch

The client is on the same machine (threads, keep-alive http.client), so client,
web server, worker, PostgreSQL and Redis share its cores; the CPU table says who
used them. The per-app throttle is lifted (APP_THROTTLE_RATE) to measure capacity.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import itertools
import os
import platform
import queue
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg2

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the machine ---------------------------------------------------------------


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def ram_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024**2
    return 0.0


def machine_line() -> str:
    return (
        f"machine: {cpu_model()}, {os.cpu_count()} cores, {ram_gib():.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def server_versions(dsn: str, redis_url: str | None) -> str:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0].split()[0]
    text = f"PostgreSQL {pg}"
    if redis_url:
        import redis

        text += f", Redis {redis.Redis.from_url(redis_url).info('server')['redis_version']}"
    return text


# --- CPU accounting --------------------------------------------------------------


def proc_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def reaped_ticks(pid: int) -> int:
    """cutime + cstime: CPU of the children a process has reaped (a postmaster: exited backends)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[13]) + int(fields[14])


def postmaster_pid(dsn: str) -> int | None:
    """The postmaster of a local server (the parent of our backend), if this machine can see it."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    conn.close()
    try:
        return int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def machine_busy_ticks() -> int:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4]  # all but idle and iowait


@dataclass
class CpuGroups:
    """Which processes belong to which part of the system, found at each snapshot.

    PostgreSQL is its backends for the benchmark's database plus, through the
    postmaster's children times, every backend that exited in between (a Celery
    worker reconnects for each task), whichever database it served: run against
    a server of its own for a clean count.
    """

    sessions: dict[str, int]  # group name -> session id (the Popen pid of a session leader)
    pg_database: str
    postmaster: int | None = None

    def snapshot(self) -> tuple[dict[int, tuple[str, int]], int, float]:
        pids: dict[int, tuple[str, int]] = {}
        by_session = {sid: name for name, sid in self.sessions.items()}
        marker = f" {self.pg_database} ".encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                sid = os.getsid(pid)
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if sid in by_session:
                pids[pid] = (by_session[sid], proc_ticks(pid))
            elif cmdline.startswith(b"postgres: ") and marker in cmdline:
                pids[pid] = ("postgres", proc_ticks(pid))
        if self.postmaster:
            pids[-self.postmaster] = ("postgres", reaped_ticks(self.postmaster))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return pids, machine_busy_ticks(), usage.ru_utime + usage.ru_stime


def cpu_used(before: tuple, after: tuple) -> dict[str, float]:
    """Core-seconds per group between two snapshots (processes that exited in between are missed)."""
    used: Counter[str] = Counter()
    for pid, (group, ticks) in after[0].items():
        used[group] += (ticks - before[0].get(pid, (group, 0))[1]) / TICKS
    used["client"] = after[2] - before[2]
    used["machine"] = (after[1] - before[1]) / TICKS
    return dict(used)


# --- processes -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([PYTHON, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def app_key(env: dict[str, str], name: str) -> str:
    return manage(env, "create_app", name).strip()


def analyst_token(env: dict[str, str], username: str) -> str:
    """A token for a view-only analyst (created on the first run, given a new token on later ones)."""
    check = f"from django.contrib.auth.models import User; print(User.objects.filter(username={username!r}).exists())"
    exists = manage(env, "shell", "-c", check).strip() == "True"
    return manage(env, "create_analyst", username, *(["--new-token"] if exists else [])).strip()


@dataclass
class Stack:
    """gunicorn and a Celery worker as real processes, each in a session of its own."""

    env: dict[str, str]
    logdir: Path
    port: int = field(default_factory=free_port)
    web: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None

    def _spawn(self, args: list[str], log_name: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        out = open(self.logdir / log_name, "ab")  # noqa: SIM115 - the child holds it
        env = {**self.env, **(extra_env or {})}
        return subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=out, start_new_session=True)

    def start_web(self, workers: int | None, threads: int | None) -> None:
        extra = {"BIND": f"127.0.0.1:{self.port}"}
        if workers:
            extra["WEB_CONCURRENCY"] = str(workers)
        if threads:
            extra["WEB_THREADS"] = str(threads)
        args = [PYTHON, "-m", "gunicorn", "-c", "contrib/deploy/gunicorn.conf.py", "config.wsgi"]
        self.web = self._spawn(args, "web.log", extra)
        deadline = time.monotonic() + 60
        while True:
            if self.web.poll() is not None:
                raise SystemExit(f"gunicorn exited; see {self.logdir / 'web.log'}")
            try:
                if self.get("/api/health/")[0] in (200, 503):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("gunicorn did not answer within 60 s")
            time.sleep(0.2)
        self.wait_web_booted(workers)

    def wait_web_booted(self, workers: int | None, timeout: float = 60) -> None:
        """Until every gunicorn worker has imported the application (its CPU use settles):
        one worker answers first, and the others' boot (~1 s of CPU each) would otherwise
        be measured as serving cost and compete with the first requests."""
        expected = workers or 2 * (os.cpu_count() or 1) + 1
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            children_file = Path(f"/proc/{self.web.pid}/task/{self.web.pid}/children")
            children = [int(pid) for pid in children_file.read_text().split()]
            busy = sum(proc_ticks(pid) for pid in children)
            if len(children) >= expected and 0 <= busy - last < TICKS // 20:  # < 50 ms of CPU in 0.5 s
                return
            last = busy
            time.sleep(0.5)
        raise SystemExit(f"gunicorn's workers were still starting after {timeout:.0f} s")

    def start_worker(self, concurrency: int) -> None:
        self.worker = self._spawn(
            [PYTHON, "-m", "celery", "-A", "config", "worker", "--loglevel=warning", f"--concurrency={concurrency}",
             "--without-gossip", "--without-mingle", "-n", f"bench-{self.port}@%h"],
            "worker.log",
        )  # fmt: skip

    def stop_worker(self) -> None:
        if self.worker and self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGTERM)
            self.worker.wait(timeout=120)
        self.worker = None

    def stop(self) -> None:
        self.stop_worker()
        if self.web and self.web.poll() is None:
            os.killpg(self.web.pid, signal.SIGTERM)
            self.web.wait(timeout=60)
        self.web = None

    def sessions(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in (("gunicorn", self.web), ("worker", self.worker)) if proc}

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


# --- load ------------------------------------------------------------------------


@dataclass
class Load:
    """Requests sent by `run_load`: one (start, end, status, body) per request, perf_counter times."""

    calls: list[tuple[float, float, int, bytes]]
    reconnects: int
    concurrency: int

    @property
    def wall(self) -> float:
        return max(c[1] for c in self.calls) - min(c[0] for c in self.calls)

    @property
    def last_accepted(self) -> float:
        return max(c[1] for c in self.calls if c[2] == 202)

    def latencies_ms(self) -> list[float]:
        return sorted((end - start) * 1000 for start, end, _, _ in self.calls)

    def statuses(self) -> Counter[int]:
        return Counter(c[2] for c in self.calls)

    def batch_ids(self) -> list[int]:
        return [orjson.loads(body)["batch_id"] for _, _, status, body in self.calls if status == 202]


Job = tuple[str, str, bytes | None]  # method, path, body


def client_thread(port: int, jobs: queue.SimpleQueue, headers: dict[str, str], calls: list, reconnects: list) -> None:
    """Send requests from `jobs` over one keep-alive connection, reconnecting when the server closes it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    while True:
        try:
            method, path, body = jobs.get_nowait()
        except queue.Empty:
            break
        for attempt in (1, 2):
            try:
                start = time.perf_counter()
                conn.request(method, path, body, headers)
                resp = conn.getresponse()
                data = resp.read()
                calls.append((start, time.perf_counter(), resp.status, data))
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # An idle keep-alive connection closed by the server: the request was not read.
                conn.close()
                reconnects.append(1)
                if attempt == 2:
                    raise
    conn.close()


def run_load(port: int, jobs_list: Iterable[Job], headers: dict[str, str], concurrency: int) -> Load:
    jobs: queue.SimpleQueue = queue.SimpleQueue()
    for job in jobs_list:
        jobs.put(job)
    calls: list = []
    reconnects: list = []
    threads = [
        threading.Thread(target=client_thread, args=(port, jobs, headers, calls, reconnects))
        for _ in range(concurrency)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Load(calls, len(reconnects), concurrency)


def posts(bodies: Iterable[bytes]) -> list[Job]:
    return [("POST", "/api/events/", body) for body in bodies]


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    index = max(0, min(len(sorted_values) - 1, -(-len(sorted_values) * q // 100) - 1))
    return sorted_values[int(index)]


def latency_cells(latencies: list[float]) -> str:
    return " | ".join(f"{percentile(latencies, q):.1f}" for q in (50, 90, 99)) + f" | {latencies[-1]:.1f}"


# --- the database and freshness --------------------------------------------------


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def recreate_database(url: str, name: str) -> None:
    conn = psycopg2.connect(with_database(url, "postgres"))
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


class Poller:
    """One autocommit connection to poll the batch table with, cheaply."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True

    def unfinished_batches(self) -> int:
        with self.conn.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM ingest_rawbatch WHERE status <> 'done'")
            return cursor.fetchone()[0]


@dataclass(frozen=True)
class BatchStats:
    batches: int
    records: int
    accepted: int
    duplicates: int
    rejected: int
    span: float  # first claim to last batch done, seconds


def batch_stats(dsn: str, batch_ids: list[int]) -> BatchStats:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), sum(record_count), sum(accepted), sum(duplicates), sum(rejected),"
            " extract(epoch FROM max(processed_at) - min(claimed_at))"
            " FROM ingest_rawbatch WHERE id = ANY(%s)",
            [batch_ids],
        )
        row = cursor.fetchone()
    conn.close()
    return BatchStats(*(int(v or 0) for v in row[:5]), float(row[5] or 0))


def expected_summary(lines_file: Path) -> list[str]:
    out = subprocess.run(
        [PYTHON, "bench/duckdb_summary.py", str(lines_file)], cwd=REPO, capture_output=True, check=True
    ).stdout
    return out.decode().splitlines()


def wait_until(condition: Callable[[], bool], timeout: float, interval: float, what: str) -> float:
    """perf_counter time at which `condition` first held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return time.perf_counter()


@dataclass(frozen=True)
class Freshness:
    backlog_at_last_202: int
    done_after: float
    fresh_after: float


def measure_freshness(
    stack: Stack, poller: Poller, token: str, expected: list[str], last_accepted: float, timeout: float
) -> Freshness:
    """Seconds from the last 202 until every batch is done, and until the API's summary is exact."""
    backlog = poller.unfinished_batches()
    done = wait_until(lambda: poller.unfinished_batches() == 0, timeout, 0.05, "every batch to be done")
    last: list[list[str]] = [[]]

    def fresh() -> bool:
        last[0] = api_summary(stack, token)
        return last[0] == expected

    try:
        fresh_at = wait_until(fresh, 30, 0.1, "the summary to count every event")
    except TimeoutError:
        diff = [line for line in last[0] if line not in expected][:3]
        raise SystemExit(
            f"the API summary differs from DuckDB's (e.g. {diff}; {len(last[0])} vs {len(expected)} lines)"
        ) from None
    return Freshness(backlog, done - last_accepted, fresh_at - last_accepted)


def api_summary(stack: Stack, token: str) -> list[str]:
    """The classic lines from GET /api/sites/summary/?format=txt."""
    status, body = stack.get("/api/sites/summary/?format=txt", {"Authorization": f"Token {token}"})
    if status != 200:
        raise SystemExit(f"GET /api/sites/summary/?format=txt answered {status}: {body[:300]!r}")
    return body.decode().splitlines()


# --- the benchmark -----------------------------------------------------------------


def chunks(lines: list[bytes], size: int) -> list[bytes]:
    return [b"\n".join(lines[i : i + size]) + b"\n" for i in range(0, len(lines), size)]


def generate_lines(total: int, workdir: Path, seed: int) -> list[bytes]:
    from gen_chat import generate  # bench/ is on sys.path when this runs as a script

    path = workdir / f"http-source-{total}-{seed}.jsonl"
    if not path.exists():
        generate(total, str(path), seed)
    return path.read_bytes().splitlines()


def is_event_object(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


@dataclass
class Row:
    phase: str
    load: Load
    events: int
    cpu: dict[str, float]


def load_row(row: Row) -> str:
    load = row.load
    statuses = load.statuses()
    others = ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()) if s != 202) or "none"
    requests = len(load.calls)
    return (
        f"| {row.phase} | {load.concurrency} | {requests:,} | {row.events:,} | {load.wall:.2f} "
        f"| {requests / load.wall:,.0f} | {row.events / load.wall:,.0f} | {latency_cells(load.latencies_ms())} "
        f"| {others} |"
    )


def cpu_row(phase: str, wall: float, cpu: dict[str, float]) -> str:
    ours = sum(v for k, v in cpu.items() if k != "machine")
    other = max(0.0, cpu["machine"] - ours)
    cells = " | ".join(f"{cpu.get(k, 0.0):.1f}" for k in ("client", "gunicorn", "worker", "postgres"))
    cores = os.cpu_count() or 1
    busy = f"{100 * cpu['machine'] / (wall * cores):.0f}%" if wall > 0.05 else "-"
    return f"| {phase} | {wall:.1f} | {cells} | {other:.1f} | {busy} |"


def prepare(args: argparse.Namespace, app_name: str) -> tuple[dict[str, str], str, str, str, str, Path]:
    """A fresh database (`args.db`) and Redis database (`args.redis_db`) for a run, migrated,
    with an app key and an analyst token: (env, dsn, redis_url, key, token, workdir)."""
    source_url = os.environ.get("DATABASE_URL", "")
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not source_url.startswith(("postgres://", "postgresql://")) or not broker.startswith("redis://"):
        raise SystemExit('needs PostgreSQL and Redis: eval "$(contrib/dev/services.sh start)" first')
    if args.db == urlsplit(source_url).path.lstrip("/") or args.db.startswith("test_"):
        raise SystemExit(f"refusing to recreate {args.db!r}: pick a database of the benchmark's own")
    workdir = Path(args.dir)
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("web.log", "worker.log"):
        (workdir / name).unlink(missing_ok=True)
    dsn = with_database(source_url, args.db)
    redis_url = urlunsplit(urlsplit(broker)._replace(path=f"/{args.redis_db}"))
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "CELERY_BROKER_URL": redis_url,
        "REDIS_URL": redis_url,
        "APP_THROTTLE_RATE": "100000000/min",
        "DEBUG": "false",
    }
    log(f"database {args.db}: recreating and migrating")
    recreate_database(source_url, args.db)
    manage(env, "migrate", "--noinput", "-v0")
    return env, dsn, redis_url, app_key(env, app_name), analyst_token(env, "bench-analyst"), workdir


def phases_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--single", type=int, default=3000, help="single-event requests")
    parser.add_argument("--single-concurrency", type=int, default=8)
    parser.add_argument("--batches", type=int, default=100, help="batched requests (plain and gzip each)")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--batch-concurrency", type=int, default=4)
    parser.add_argument("--drain-batches", type=int, default=100, help="batches for the worker-alone drain")
    parser.add_argument("--web-workers", type=int, default=None, help="default: gunicorn.conf.py's (2 x cores + 1)")
    parser.add_argument("--web-threads", type=int, default=None, help="default: gunicorn.conf.py's (2)")
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--db", default="bench_http", help="database to (re)create on DATABASE_URL's server")
    parser.add_argument("--redis-db", type=int, default=11)
    parser.add_argument("--dir", default="/tmp/switchboard-bench/http")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()

    env, dsn, redis_url, key, token, workdir = prepare(args, "bench-http")

    batched_events = args.batches * args.batch_size
    drain_events = args.drain_batches * args.batch_size
    spare = args.single // 50 + 100  # single posts skip the malformed lines
    source = iter(generate_lines(2 * (args.single + spare) + 2 * batched_events + drain_events, workdir, args.seed))

    def take(n: int) -> list[bytes]:
        return list(itertools.islice(source, n))

    def take_objects(n: int) -> list[bytes]:
        """The next `n` lines that are JSON objects: one event per request (application/json)."""
        return list(itertools.islice(filter(is_event_object, source), n))

    single_lines = take_objects(args.single)
    batched_lines = take(batched_events)
    gzip_lines = take(batched_events)
    queued_single_lines = take_objects(args.single)
    drain_lines = take(drain_events)
    posted = workdir / "posted.jsonl"
    posted.write_bytes(b"")

    def add_posted(new_lines: list[bytes]) -> list[str]:
        with posted.open("ab") as f:
            f.writelines(line + b"\n" for line in new_lines)
        return expected_summary(posted)

    stack = Stack(env, workdir)
    auth = {"Authorization": f"Api-Key {key}"}
    rows: list[Row] = []
    cpu_rows: list[str] = []
    fresh_rows: list[str] = []
    try:
        stack.start_web(args.web_workers, args.web_threads)
        stack.start_worker(args.worker_concurrency)
        poller = Poller(dsn)
        postmaster = postmaster_pid(dsn)
        groups = CpuGroups(stack.sessions(), args.db, postmaster)
        # Warm up every web worker's connections (database, broker) outside the measurement.
        warm = [orjson.dumps({"type": "warm-up", "n": i}) for i in range(40)]
        run_load(stack.port, posts(warm), {**auth, "Content-Type": "application/json"}, 8)

        phases = [
            ("single", single_lines, [*single_lines], {"Content-Type": "application/json"}, args.single_concurrency),
            ("batched", batched_lines, chunks(batched_lines, args.batch_size),
             {"Content-Type": "application/x-ndjson"}, args.batch_concurrency),
            ("batched gzip", gzip_lines, [gzip.compress(b, 6) for b in chunks(gzip_lines, args.batch_size)],
             {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}, args.batch_concurrency),
        ]  # fmt: skip
        for phase, phase_lines, bodies, headers, concurrency in phases:
            expected = add_posted(phase_lines)
            log(f"{phase}: {len(bodies):,} requests, {len(phase_lines):,} events, {concurrency} client threads")
            before = groups.snapshot()
            load = run_load(stack.port, posts(bodies), {**auth, **headers}, concurrency)
            cpu = cpu_used(before, groups.snapshot())
            rows.append(Row(phase, load, len(phase_lines), cpu))
            cpu_rows.append(cpu_row(f"{phase} (posting)", load.wall, cpu))
            before = groups.snapshot()
            fresh = measure_freshness(stack, poller, token, expected, load.last_accepted, 600)
            cpu_rows.append(
                cpu_row(f"{phase} (worker catching up)", fresh.done_after, cpu_used(before, groups.snapshot()))
            )
            stats = batch_stats(dsn, load.batch_ids())
            fresh_rows.append(
                f"| {phase} | {fresh.backlog_at_last_202:,} | {fresh.done_after:.2f} | {fresh.fresh_after:.2f} "
                f"| {stats.accepted:,} / {stats.duplicates:,} / {stats.rejected:,} |"
            )

        log("worker stopped: single events and batches pile up, then the worker drains them")
        stack.stop_worker()
        expected = add_posted(queued_single_lines + drain_lines)
        queued = [
            ("single, worker stopped", queued_single_lines, posts(queued_single_lines),
             {**auth, "Content-Type": "application/json"}, args.single_concurrency),
            ("batched, worker stopped", drain_lines, posts(chunks(drain_lines, args.batch_size)),
             {**auth, "Content-Type": "application/x-ndjson"}, args.batch_concurrency),
        ]  # fmt: skip
        drained: list[tuple[str, BatchStats]] = []
        loads = []
        for phase, phase_lines, jobs, headers, concurrency in queued:
            before = groups.snapshot()
            load = run_load(stack.port, jobs, headers, concurrency)
            cpu = cpu_used(before, groups.snapshot())
            rows.append(Row(phase, load, len(phase_lines), cpu))
            cpu_rows.append(cpu_row(f"{phase} (posting)", load.wall, cpu))
            loads.append(load)
        stack.start_worker(args.worker_concurrency)
        groups = CpuGroups(stack.sessions(), args.db, postmaster)
        before = groups.snapshot()
        start = time.perf_counter()
        fresh = measure_freshness(stack, poller, token, expected, start, 900)
        cpu_rows.append(cpu_row("worker alone, draining both", fresh.done_after, cpu_used(before, groups.snapshot())))
        fresh_rows.append(
            f"| worker started on that backlog (times from its start) | {fresh.backlog_at_last_202:,} "
            f"| {fresh.done_after:.2f} | {fresh.fresh_after:.2f} | |"
        )
        drained.append(("1 event per batch", batch_stats(dsn, loads[0].batch_ids())))
        drained.append((f"{args.batch_size:,} events per batch", batch_stats(dsn, loads[1].batch_ids())))
    finally:
        stack.stop()

    report = [
        machine_line(),
        f"servers: {server_versions(dsn, redis_url)}; load average before the run: "
        + " ".join(f"{v:.2f}" for v in load_before),
        f"web: gunicorn -c contrib/deploy/gunicorn.conf.py (workers={args.web_workers or 'conf default'}, "
        f"threads={args.web_threads or 'conf default'}); worker: celery --concurrency={args.worker_concurrency}",
        "",
        "| phase | client threads | requests | events | s | requests/s | events/s | p50 ms | p90 ms | p99 ms "
        "| max ms | not 202 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(load_row(row) for row in rows),
        "",
        "| after | unfinished batches at last 202 | last 202 -> all batches done, s "
        "| last 202 -> exact summary from the API, s | accepted / duplicate / rejected |",
        "|---|---|---|---|---|",
        *fresh_rows,
        "",
        "| worker alone, draining a backlog | batches | events | first claim -> last done, s | batches/s | events/s |",
        "|---|---|---|---|---|---|",
        *(
            f"| {name} | {st.batches:,} | {st.records:,} | {st.span:.2f} | {st.batches / st.span:,.1f} "
            f"| {st.records / st.span:,.0f} |"
            for name, st in drained
        ),
        "",
        "| CPU core-seconds | wall s | client | gunicorn | worker | postgres | everything else | machine busy |",
        "|---|---|---|---|---|---|---|---|",
        *cpu_rows,
    ]
    text = "\n".join(report)
    (workdir / "http_bench.md").write_text(text + "\n")
    print(text)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in live_modes.MODES:
        live_modes.main(sys.argv[1], sys.argv[2:])
    else:
        phases_main(sys.argv[1:])


if __name__ == "__main__":
    import http_live as live_modes  # bench/ is on sys.path when this runs as a script

    main()
