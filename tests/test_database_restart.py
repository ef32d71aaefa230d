"""Issue 20 items 3 and 4, end to end: real gunicorn (3 workers), a Celery worker, the broker
(Redis when configured) and PostgreSQL servers of the test's own (tests/pg_servers.py), so
that stopping one affects no other test.

- A PostgreSQL restart mid-stream, with a client posting: while the server is down every
  request answers 503 with Retry-After within 5 s and health says `down`; the client retries,
  the worker backs off; once the server is back everything resumes with no process restarted,
  and the summary is exact.
- Failover: DATABASE_URL lists a primary and its streaming standby with
  `target_session_attrs=read-write`; the primary is lost, the standby promoted with
  `pg_ctl promote`, and the service carries on against it with no process restarted.

These tests start their own servers whichever database the rest of the suite uses (both CI
runs), so they need PostgreSQL's server binaries even for the SQLite run.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from switchboard_client import Client

from tests.live import REPO, LiveStack, broker_env, wait_for
from tests.pg_servers import Cluster, Server

pytestmark = pytest.mark.slow

RETRY_AFTER = "5"
EVENTS = 1999  # samples/chat/small.jsonl: 1,941 events, 58 resent
STORED = 1941


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    own = Cluster()
    yield own
    own.remove()


@pytest.fixture
def service_on(tmp_path: Path) -> Iterator[Callable[[str], Service]]:
    """Switchboard on a database URL; its processes are stopped after the test, whatever happens."""
    started: list[Service] = []

    def start(database_url: str) -> Service:
        started.append(Service(database_url, tmp_path))
        started[-1].start()
        return started[-1]

    yield start
    for service in started:
        service.stack.stop()


class Service:
    """Switchboard on its own database: migrated, with an app key and an analyst token."""

    def __init__(self, database_url: str, tmp_path: Path) -> None:
        env = {**os.environ, "DATABASE_URL": database_url, **broker_env(tmp_path)}
        self.stack = LiveStack(env=env, tmp_path=tmp_path)
        self.manage("migrate", "--noinput")
        self.key = self.manage("create_app", "outage-test").strip()
        self.token = self.manage("create_analyst", "ann").strip()

    def manage(self, *args: str) -> str:
        done = subprocess.run([sys.executable, str(REPO / "manage.py"), *args], cwd=REPO, env=self.stack.env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self) -> None:
        self.stack.start_web(workers=3)
        self.stack.start_worker()
        worker = self.stack.worker
        assert worker
        wait_for(lambda: len(children(worker.pid)) >= 2, 60, "the Celery worker's pool")  # --concurrency=2

    def processes(self) -> dict[str, set[int]]:
        """The pids of gunicorn's master and workers and of the Celery worker and its pool."""
        assert self.stack.web and self.stack.worker
        return {
            "web": {self.stack.web.pid, *children(self.stack.web.pid)},
            "worker": {self.stack.worker.pid, *children(self.stack.worker.pid)},
        }

    def summary(self) -> list[str]:
        response = self.stack.request(
            "GET", "/api/sites/summary/?format=txt", headers={"Authorization": f"Token {self.token}"}
        )
        assert response.status == 200, response.body
        return response.body.decode().splitlines()


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def wait_until_processed(server: Server) -> None:
    """Until every stored batch is done, and they hold all the events posted."""

    def processed() -> bool:
        ((unfinished, records),) = server.query(
            "SELECT count(*) FILTER (WHERE status <> 'done'), coalesce(sum(record_count), 0) FROM ingest_rawbatch"
        )
        return unfinished == 0 and records >= EVENTS

    try:
        wait_for(processed, 120, "every batch processed")
    except AssertionError as error:
        states = server.query("SELECT status, attempts, count(*), min(claimed_at) FROM ingest_rawbatch GROUP BY 1, 2")
        raise AssertionError(f"{error}: (status, attempts, batches, first claim) {states}") from None


def totals(server: Server) -> dict[str, int]:
    ((events, accepted, duplicates, rejected, records),) = server.query(
        "SELECT (SELECT count(*) FROM events_event), sum(accepted), sum(duplicates), sum(rejected), sum(record_count)"
        " FROM ingest_rawbatch"
    )
    return {"events": events, "accepted": accepted, "duplicates": duplicates, "rejected": rejected, "records": records}


def small_events(sample_data: Path) -> list[dict]:
    events = [json.loads(line) for line in (sample_data / "chat" / "small.jsonl").read_bytes().splitlines()]
    random.Random(20).shuffle(events)
    return events


class Feeder:
    """A client app enqueuing events at a steady pace from a thread, as a live source does."""

    def __init__(self, service: Service, events: list[dict], per_second: float) -> None:
        self.errors: list = []
        self.client = Client(service.stack.base_url, service.key, flush_at=25, flush_interval=0.05, backoff=0.2,
                             max_backoff=6.0, max_retries=40, on_error=lambda *e: self.errors.append(e))  # fmt: skip
        self.thread = threading.Thread(target=self._run, args=(events, per_second), daemon=True)
        self.thread.start()

    def _run(self, events: list[dict], per_second: float) -> None:
        started = time.monotonic()
        for n, event in enumerate(events):
            time.sleep(max(0.0, started + n / per_second - time.monotonic()))
            self.client.enqueue(event)

    def finish(self) -> None:
        self.thread.join(timeout=120)
        assert self.client.flush(timeout=120)
        assert self.client.shutdown(10)
        assert (self.client.sent, self.client.failed, self.errors) == (EVENTS, 0, [])


def timed(stack: LiveStack, method: str, path: str, headers: dict[str, str], body: bytes | None = None):
    started = time.monotonic()
    response = stack.request(method, path, body, headers)
    return response, time.monotonic() - started


def assert_exact(service: Service, server: Server, sample_data: Path) -> None:
    assert service.summary() == (sample_data / "chat" / "small.expected").read_text().splitlines()
    got = totals(server)
    resent = got["records"] - EVENTS  # posts stored whose answer was lost, sent again by the client
    assert (got["events"], got["accepted"], got["rejected"]) == (STORED, STORED, 0)
    assert got["duplicates"] == EVENTS - STORED + resent


def test_a_postgresql_restart_mid_stream_is_a_non_event_for_a_client_that_retries(
    cluster, service_on, tmp_path, sample_data
):
    server = cluster.primary()
    service = service_on(server.url())
    stack = service.stack
    before = service.processes()
    feeder = Feeder(service, small_events(sample_data), per_second=150)
    wait_for(lambda: feeder.client.sent >= 400, 60, "a fifth of the stream delivered")

    server.stop("immediate")  # as a crash: every session is cut at once
    down_at = time.monotonic()
    app = {"Authorization": f"Api-Key {service.key}", "Content-Type": "application/json"}
    post, post_seconds = timed(stack, "POST", "/api/events/", app, b'{"id": "during-the-outage"}')
    batch, batch_seconds = timed(stack, "GET", "/api/batches/1/", app)
    summary, summary_seconds = timed(stack, "GET", "/api/sites/summary/", {"Authorization": f"Token {service.token}"})
    # A report is reused for up to 5 s: health says `down` once it is older than the outage.
    # Each gunicorn worker keeps its own report: the answer that said 503 is the one checked.
    answers = []
    wait_for(lambda: answers.append(stack.request("GET", "/api/health/")) or answers[-1].status == 503, 15,
             "health to say down")  # fmt: skip
    health = answers[-1]
    time.sleep(max(0.0, down_at + 8 - time.monotonic()))  # down for 8 s while the client keeps posting
    sent_while_down = feeder.client.sent
    server.start()

    feeder.finish()
    wait_until_processed(server)

    for response, seconds in ((post, post_seconds), (batch, batch_seconds), (summary, summary_seconds)):
        assert (response.status, response.headers.get("Retry-After")) == (503, RETRY_AFTER), response.body
        assert "database is unavailable" in response.json()["detail"]
        assert seconds < 5
    assert health.json() == {"status": "down"}
    assert sent_while_down < EVENTS  # the outage was mid-stream
    assert_exact(service, server, sample_data)
    assert service.processes() == before  # nothing was restarted: not a gunicorn worker, not a pool child
    web, worker = stack.log("web.log"), (tmp_path / "worker.log").read_text()
    assert "Service Unavailable" in web
    for log in (web, worker):
        assert "Internal Server Error" not in log and "Traceback" not in log and "WORKER TIMEOUT" not in log
    assert "the database is unavailable" in worker  # a drain backed off and ran again


def test_failover_to_a_promoted_standby_with_two_hosts_in_database_url(cluster, service_on, tmp_path, sample_data):
    primary = cluster.primary()
    standby = cluster.standby_of(primary, synchronous=True)  # a commit acknowledged is on the standby too
    url = (f"postgres://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/switchboard"
           "?target_session_attrs=read-write")  # fmt: skip
    service = service_on(url)
    before = service.processes()
    feeder = Feeder(service, small_events(sample_data), per_second=200)
    wait_for(lambda: feeder.client.sent >= 400, 60, "a fifth of the stream delivered")

    primary.stop("immediate")  # the primary's machine is lost
    time.sleep(1)
    standby.promote()  # what the operator (or a failover manager) does

    feeder.finish()
    wait_until_processed(standby)
    assert_exact(service, standby, sample_data)
    assert service.processes() == before
    assert standby.query("SELECT pg_is_in_recovery()") == [(False,)]
    for log in (service.stack.log("web.log"), (tmp_path / "worker.log").read_text()):
        assert "Internal Server Error" not in log and "Traceback" not in log


@pytest.fixture(autouse=True)
def _show_logs_on_failure(request, tmp_path):
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for log in sorted(tmp_path.glob("*.log")) + sorted(tmp_path.parent.glob("switchboard-pg-*/*.log")):
            print(f"--- {log.name} ---", log.read_text(errors="replace")[-6000:], sep="\n")
