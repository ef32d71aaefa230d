"""`make run`: zero configuration (SQLite, a filesystem queue), gunicorn and a
Celery worker, all stopped together by a SIGTERM to make or by a Ctrl-C.

make runs in a session of its own here, so that every process it started can
be found afterwards (run.sh gives gunicorn and the worker process groups of
their own, inside that session).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.live import REPO, free_port, wait_for
from tests.metrics_text import total

pytestmark = pytest.mark.slow


def session_members(sid: int) -> list[str]:
    """Every process of the session, as 'pid command' (Linux /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session ...
        if int(fields[3]) == sid:
            members.append(text.split(")", 1)[0] + ")")
    return members


def start_make_run(tmp_path: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL")}
    # The embedded default, with its files in tmp_path instead of the checkout's var/ and db.sqlite3.
    env |= {"PORT": str(port), "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "QUEUE_DIR": str(tmp_path / "q"),
            "BEAT_SCHEDULE": str(tmp_path / "celerybeat-schedule"),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}  # fmt: skip
    return subprocess.Popen(
        ["make", "run"], cwd=REPO, env=env, start_new_session=True,
        stdout=open(tmp_path / "run.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115 - the child holds it
        # A terminal's Ctrl-C must reach make: undo the SIGINT a parent may ignore.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def post_and_see_processed(port: int, env: dict[str, str]) -> None:
    key = subprocess.run(
        [sys.executable, "manage.py", "create_app", "make-run"], cwd=REPO, env=env, capture_output=True, text=True
    ).stdout.split()[-1]
    event = {"id": "mr1", "type": "message", "from": "v1", "site_id": "mr", "data": {"message": "hi"},
             "timestamp": time.time() - 10}  # fmt: skip

    def post() -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/events/", json.dumps(event).encode(),
            {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Server"] == "gunicorn"
            return json.loads(response.read())

    batch = post()

    def done() -> bool:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/batches/{batch['batch_id']}/", headers={"Authorization": f"Api-Key {key}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["accepted"] == 1

    wait_for(done, 60, "the worker to process the batch")


def worker_counts_scraped(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return total(response.read().decode(), "switchboard_batches_processed_total")


def health_answers(port: int, make: subprocess.Popen, log: Path) -> bool:
    assert make.poll() is None, log.read_text()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health/", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.parametrize(
    "stop",
    [
        pytest.param(lambda make: os.kill(make.pid, signal.SIGTERM), id="SIGTERM to make"),
        pytest.param(lambda make: os.killpg(make.pid, signal.SIGINT), id="Ctrl-C"),
    ],
)
def test_make_run_serves_processes_and_stops_everything(tmp_path, stop):
    port = free_port()
    make = start_make_run(tmp_path, port)
    log = tmp_path / "run.log"
    try:
        wait_for(lambda: health_answers(port, make, log), 120, "make run to serve")
        assert len(session_members(make.pid)) >= 4  # make, run.sh, gunicorn, the worker (and their children)
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
        post_and_see_processed(port, env)
        # One scrape of the web server shows the worker's counts too: they share one directory (var/metrics by default).
        wait_for(lambda: worker_counts_scraped(port) == 1, 30, "the worker's count in /metrics")

        stop(make)
        make.wait(timeout=60)
        wait_for(lambda: session_members(make.pid) == [], 30, "every process of make run to end")
    finally:
        print(log.read_text(errors="replace")[-4000:])  # shown if the test fails
        if session_members(make.pid):
            os.killpg(make.pid, signal.SIGKILL)
            for line in session_members(make.pid):  # other groups of the session (gunicorn, the worker)
                os.kill(int(line.split()[0]), signal.SIGKILL)
    assert "still running" not in log.read_text()  # stopped in order, nothing had to be killed
