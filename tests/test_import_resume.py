"""SPEC §7: `import_jsonl` killed at random moments, or cut off by a database
restart, and run again gives the exact summary, no duplicate events, each
rejected line recorded once, and resumes from its checkpoint.

The file comes from bench/gen_chat.py (statuses, resent lines, malformed
lines, out-of-order timestamps); the expected result is the independent
oracle's (tests/chat_oracle.py). That the rerun resumed is read from the
chunks it stored: every chunk is a RawBatch with its byte range, committed
together with the checkpoint, so the ranges of all runs must tile the file
exactly once and the last run's chunks must start at the checkpoint it found.
"""

from __future__ import annotations

import os
import pwd
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import Count

from events.models import Event
from ingest.models import ImportJob, RawBatch, Rejection
from tests import chat_oracle
from tests.live import REPO, LiveStack, wait_for
from tests.test_import_bulk import secondary_indexes
from tests.test_parallel_import import Import, counts_line, run_import

pytestmark = pytest.mark.slow

LINES = 40_000
CHUNK = "--chunk-lines=500"


def generated(tmp_path: Path, seed: int) -> tuple[Path, chat_oracle.Outcome]:
    path = tmp_path / "chat.jsonl"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "gen_chat.py"), str(LINES), str(path), f"--seed={seed}"], check=True
    )
    outcome = chat_oracle.read_ndjson(path.read_bytes(), time.time())
    assert outcome.rejected and outcome.duplicates  # the file exercises both
    return path, outcome


def checkpoint() -> int:
    return ImportJob.objects.values_list("next_offset", flat=True).first() or 0


def wait_for_checkpoint(running: Import, offset: int) -> None:
    """Until the import has committed the chunks up to `offset`; it must still be running then."""
    wait_for(lambda: checkpoint() >= offset or running.proc.poll() is not None, 60, "the checkpoint", 0.01)
    assert running.proc.poll() is None, f"the import ended too soon: {running.stderr}"


def assert_consistent_with_checkpoint() -> None:
    """What is stored is exactly what the checkpoint counts: no half chunk survived."""
    job = ImportJob.objects.first()
    if job is None:
        assert not Event.objects.exists() and not Rejection.objects.exists()
        return
    assert Event.objects.count() == job.accepted
    assert Rejection.objects.count() == job.rejected
    batches = RawBatch.objects.filter(import_job=job)
    assert not batches.exclude(status=RawBatch.Status.DONE).exists()
    assert max(batches.values_list("byte_end", flat=True), default=0) == job.next_offset


def records_after(path: Path, offset: int) -> int:
    return sum(1 for line in path.read_bytes()[offset:].split(b"\n") if line.strip())


def finish_and_check(stack: LiveStack, path: Path, outcome: chat_oracle.Outcome) -> None:
    """Run the import to its end; the result must be the clean one, reached by resuming."""
    resume_at = checkpoint()
    assert resume_at > 0, "nothing to resume from"
    last_batch = RawBatch.objects.order_by("-pk").values_list("pk", flat=True).first() or 0

    code, out, err = run_import(stack, str(path), CHUNK, "--summary")

    assert code == 0, err
    assert out.splitlines() == chat_oracle.summary_lines(outcome.accepted)
    want = {"accepted": len(outcome.accepted), "duplicates": outcome.duplicates, "rejected": outcome.rejected}
    assert counts_line(path, err) == want, err
    assert Event.objects.count() == len(outcome.accepted)
    assert not Event.objects.values("uid").annotate(n=Count("pk")).filter(n__gt=1).exists()
    assert set(Event.objects.values_list("uid", flat=True)) == outcome.ids
    assert sorted(Rejection.objects.values_list("line", flat=True)) == outcome.rejected_lines  # each once
    job = ImportJob.objects.get()
    assert (job.accepted, job.duplicates, job.rejected) == tuple(want.values())
    assert job.next_offset == path.stat().st_size and job.finished_at is not None
    # Imports killed while loading without the event table's secondary indexes (PostgreSQL):
    # the run that finished built them again.
    assert {index.name for index in Event._meta.indexes} <= secondary_indexes()
    assert job.deferred_ddl == []

    # The chunks of all runs tile the file once; the last run began at its checkpoint.
    ranges = list(RawBatch.objects.filter(import_job=job).order_by("byte_start").values_list("byte_start", "byte_end"))
    assert ranges[0][0] == 0 and ranges[-1][1] == path.stat().st_size
    assert all(end == start for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False))
    resumed = RawBatch.objects.filter(import_job=job, pk__gt=last_batch).order_by("byte_start")
    assert [b.byte_start for b in resumed[:1]] == ([resume_at] if resume_at < path.stat().st_size else [])
    read_again = sum(b.accepted + b.duplicates + b.rejected for b in resumed)
    assert read_again == records_after(path, resume_at)  # only the lines after the checkpoint


def test_kill_9_at_random_moments_then_rerun_gives_the_exact_result(live_stack, tmp_path):
    live_stack.env["IMPORT_DEFER_INDEXES_BYTES"] = "0"  # on PostgreSQL: loaded as a dominating file
    rng = random.Random(90210)
    path, outcome = generated(tmp_path, seed=rng.randrange(1 << 30))
    size = path.stat().st_size

    # First at a random moment after the start: during start-up, before or after the first chunk.
    running = Import(live_stack, str(path), CHUNK)
    time.sleep(rng.uniform(0.1, 1.0))
    assert running.proc.poll() is None, "the import ended before the kill"
    running.proc.kill()
    assert running.finish()[0] == -signal.SIGKILL
    assert_consistent_with_checkpoint()
    offsets = [checkpoint()]

    # Then once the checkpoint has passed random points of the file, a few milliseconds into the next chunk.
    for fraction in sorted(rng.uniform(low, low + 0.2) for low in (0.1, 0.35, 0.6)):
        running = Import(live_stack, str(path), CHUNK)
        wait_for_checkpoint(running, max(int(size * fraction), offsets[-1] + 1))
        time.sleep(rng.uniform(0, 0.03))
        assert running.proc.poll() is None, f"the import ended before the kill: {running.stderr}"
        running.proc.kill()
        assert running.finish()[0] == -signal.SIGKILL
        assert_consistent_with_checkpoint()
        offsets.append(checkpoint())
        assert offsets[-2] < offsets[-1] < size  # each run resumed and advanced, none finished

    finish_and_check(live_stack, path, outcome)


# -- the database goes away mid-import -----------------------------------------


def restart_postgresql() -> None:
    """`pg_ctl restart -m fast` of the server contrib/dev/services.sh runs (all sessions are cut)."""
    pg_dir = Path(os.environ.get("SWITCHBOARD_SERVICES_DIR", "/tmp/switchboard-services")) / "pg"
    assert (pg_dir / "data" / "PG_VERSION").exists(), (
        f"no PostgreSQL of contrib/dev/services.sh at {pg_dir}: run the tests with"
        ' `eval "$(contrib/dev/services.sh env)"` to restart its server'
    )
    data = pg_dir / "data"
    pg_ctl = [f"{(pg_dir / 'bin').read_text().strip()}/pg_ctl", "-D", str(data), "-l", str(pg_dir / "postgres.log")]
    pg_ctl += ["-m", "fast", "-w", "-t", "60", "restart"]
    owner = pwd.getpwuid(data.stat().st_uid).pw_name
    if os.geteuid() == 0 and owner != "root":  # PostgreSQL runs as its data directory's owner
        pg_ctl = ["runuser", "-u", owner, "--", *pg_ctl]
    done = subprocess.run(pg_ctl, cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr


def cut_test_database_sessions() -> None:
    """What a restart does to the import, confined to this test's database: every other session ends."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] >= 1  # the import's session


def database_answers() -> bool:
    connection.close()  # the old session died with the server
    try:
        connection.ensure_connection()
    except Exception:
        return False
    return True


def test_a_database_restart_mid_import_then_rerun_gives_the_exact_result(live_stack, tmp_path):
    path, outcome = generated(tmp_path, seed=77)
    live_stack.env["SQLITE_TIMEOUT"] = "3"
    live_stack.env["IMPORT_DEFER_INDEXES_BYTES"] = "0"
    running = Import(live_stack, str(path), CHUNK, "--summary")
    wait_for_checkpoint(running, path.stat().st_size // 4)
    cut_at = checkpoint()

    if connection.vendor == "postgresql":
        if os.environ.get("PYTEST_XDIST_WORKER"):
            cut_test_database_sessions()  # other workers use the server: a restart would fail their tests
        else:
            restart_postgresql()
        code, out, err = running.finish()
        wait_for(database_answers, 30, "PostgreSQL to answer again")
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_database()")
            assert cursor.fetchone()[0] == connection.settings_dict["NAME"]  # the test database is still there
        if code == 0:  # it survived the restart: then it finished with the exact summary
            assert out.splitlines() == chat_oracle.summary_lines(outcome.accepted)
        else:  # cut off mid-import: a database error, no summary
            assert "database error" in err and "run the same command again to resume" in err, err
            assert "Traceback" not in err, err
            assert out == ""
    else:
        # SQLite has no server to restart: another connection holds the database
        # exclusively for longer than the import's busy timeout (SQLITE_TIMEOUT, set short).
        lock = sqlite3.connect(connection.settings_dict["NAME"], timeout=20, isolation_level=None)
        try:
            lock.execute("BEGIN EXCLUSIVE")
            held_at = checkpoint()
            code, out, err = running.finish(timeout=90)
            assert code != 0 and "database is locked" in err and "run the same command again" in err, err
            assert "Traceback" not in err, err
            assert out == ""
            assert checkpoint() == held_at  # nothing was written while the database was unavailable
        finally:
            lock.close()

    assert checkpoint() >= cut_at
    assert_consistent_with_checkpoint()
    finish_and_check(live_stack, path, outcome)
