"""`import_jsonl --parallel` end to end: the command plans byte ranges, a real
Celery worker process imports them from a real broker (Redis when configured,
else the filesystem queue).

SPEC §6 (bulk imports split into chunks that workers process in parallel) and
§7: exact summaries and counts with many small ranges, true line numbers on
rejections and events, a rerun adds nothing, a worker killed with SIGKILL
mid-range counts nothing twice, and files that cannot be split (gzip, JSON
arrays) fall back to the sequential import.
"""

from __future__ import annotations

import gzip
import io
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db.models import F
from django.utils import timezone

from events.models import Event
from ingest.framing import BOM, iter_ndjson
from ingest.imports.parallel import finish_import
from ingest.imports.ranges import plan_import, stale_ranges
from ingest.models import ImportJob, ImportRange, RawBatch, Rejection
from ingest.records import Chunk, validate_into
from reports.site_summary import summary_rows
from tests.live import REPO, LiveStack, wait_for

pytestmark = pytest.mark.slow

CHAT_FILES = ["small", "mixed", "edge", "external_small", "external_bad"]


class Import:
    """`manage.py import_jsonl` as a child process; stderr is collected as it comes."""

    def __init__(self, stack: LiveStack, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "manage.py"), "import_jsonl", *args],
            cwd=REPO, env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.err_lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.err_lines.extend(self.proc.stderr), daemon=True)
        self._reader.start()

    @property
    def stderr(self) -> str:
        return "".join(self.err_lines)

    def finish(self, timeout: float = 90) -> tuple[int, str, str]:
        out = self.proc.stdout.read()
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code, out, self.stderr


def run_import(stack: LiveStack, *args: str) -> tuple[int, str, str]:
    return Import(stack, *args).finish()


def expected(name: str, sample_data: Path) -> tuple[str, dict[str, int]]:
    text = (sample_data / "chat" / f"{name}.counts").read_text().split()
    counts = {k: int(v) for k, v in (item.split("=") for item in text)}
    return (sample_data / "chat" / f"{name}.expected").read_text(), counts


def counts_line(path: Path, stderr: str) -> dict[str, int]:
    line = next(line for line in stderr.splitlines() if line.startswith(f"{path}: accepted="))
    return {k: int(v) for k, v in (item.split("=") for item in line.split(": ", 1)[1].split())}


def reference_rejected_lines(path: Path) -> list[int]:
    """The file's rejected line numbers as one sequential pass sees them."""
    with open(path, "rb") as f:
        records = iter_ndjson(f, max_record=settings.SWITCHBOARD["MAX_RECORD_BYTES"])
        return sorted(r.line for r in validate_into(Chunk(), records, time.time()).rejections)


def assert_true_lines(path: Path) -> None:
    """Every rejection and every event points at its true line of the file."""
    assert sorted(Rejection.objects.values_list("line", flat=True)) == reference_rejected_lines(path)
    lines = path.read_bytes().removeprefix(BOM).split(b"\n")
    for uid, line in Event.objects.values_list("uid", "line"):
        assert orjson.loads(lines[line - 1])["id"] == uid, (uid, line)


def ranges() -> list[ImportRange]:
    return list(ImportRange.objects.order_by("byte_start"))


@pytest.mark.parametrize("name", CHAT_FILES)
def test_parallel_import_gives_the_expected_summary_and_a_rerun_adds_nothing(name, live_stack, sample_data):
    path = sample_data / "chat" / f"{name}.jsonl"
    summary, counts = expected(name, sample_data)
    live_stack.start_worker()
    chunk_bytes = max(200, path.stat().st_size // 8)  # about eight ranges, sub-chunks of 500 lines
    code, out, err = run_import(live_stack, str(path), "--parallel", f"--chunk-bytes={chunk_bytes}",
                                "--chunk-lines=500", "--summary")  # fmt: skip

    assert code == 0, err
    assert out == summary
    got = counts_line(path, err)
    assert {k: got[k] for k in counts} == counts, err
    planned = ranges()
    assert len(planned) >= 5 and all(r.status == ImportRange.Status.DONE for r in planned)
    assert [r.byte_start for r in planned[1:]] == [r.byte_end for r in planned[:-1]]
    assert planned[-1].byte_end == path.stat().st_size
    assert Event.objects.count() == got["accepted"] == sum(r.accepted for r in planned)
    assert_true_lines(path)
    job = ImportJob.objects.get()
    assert (job.accepted, job.rejected, job.next_offset) == (got["accepted"], counts["rejected"], path.stat().st_size)
    # Each chunk a worker stored has its provenance batch, done; together they tile the file.
    chunks = list(RawBatch.objects.order_by("byte_start").values_list("byte_start", "byte_end", "status"))
    assert len(chunks) >= len(planned) and {status for _, _, status in chunks} == {RawBatch.Status.DONE}
    assert [start for start, _, _ in chunks[1:]] == [end for _, end, _ in chunks[:-1]]
    assert (chunks[0][0], chunks[-1][1]) == (0, path.stat().st_size)

    code, out, err = run_import(live_stack, str(path), "--parallel", "--summary")
    assert code == 0, err
    assert out == summary
    assert f"{len(planned)} ranges (0 new), 0 to import" in err
    assert Event.objects.count() == got["accepted"]
    assert Rejection.objects.count() == counts["rejected"]
    assert len(ranges()) == len(planned)


@pytest.mark.django_db
def test_process_pending_imports_the_ranges_no_worker_took(sample_data, capsys):
    """With the broker down the ranges stay pending: the sweeper sees them stale, and
    `process_pending` imports them in its own process (nothing else has to be running)."""
    path = sample_data / "chat" / "small.jsonl"
    summary, counts = expected("small", sample_data)
    plan = plan_import(str(path), chunk_bytes=path.stat().st_size // 4)
    assert plan.planned >= 4 and len(plan.unfinished) == plan.planned
    assert not stale_ranges().exists()  # just planned: still within the grace period
    ImportRange.objects.update(created_at=timezone.now() - timedelta(hours=1))
    assert sorted(stale_ranges().values_list("pk", flat=True)) == plan.unfinished
    assert not RawBatch.objects.exists()  # ranges are no batches: the outbox holds none of them

    call_command("process_pending")

    assert f"{plan.planned} of {plan.planned} unfinished import ranges imported" in capsys.readouterr().err
    job = finish_import(plan.job)
    assert (job.duplicates, job.rejected) == (counts["duplicates"], counts["rejected"])
    assert job.accepted == Event.objects.count() > 0
    assert "".join(row.classic() + "\n" for row in summary_rows()) == summary
    assert not stale_ranges().exists()


def test_waits_for_workers_and_says_so(live_stack, sample_data):
    path = sample_data / "chat" / "small.jsonl"
    summary, counts = expected("small", sample_data)
    running = Import(live_stack, str(path), "--parallel", "--chunk-bytes=50000", "--stall-seconds=1", "--summary")
    wait_for(lambda: "waiting for workers: no range taken" in running.stderr, 30, "the no-worker warning")

    # Meanwhile a sequential import of the same file is refused: it would count the ranges twice.
    sequential = run_import(live_stack, str(path))
    assert sequential[0] == 1 and "rerun it with --parallel" in sequential[2], sequential

    live_stack.start_worker()
    code, out, err = running.finish()
    assert code == 0, err
    assert out == summary
    assert counts_line(path, err)["duplicates"] == counts["duplicates"]
    assert_true_lines(path)


def test_a_worker_killed_mid_range_counts_nothing_twice(live_stack, sample_data):
    path = sample_data / "chat" / "mixed.jsonl"
    summary, counts = expected("mixed", sample_data)
    live_stack.start_worker()
    running = Import(live_stack, str(path), "--parallel", "--chunk-bytes=400000", "--chunk-lines=100",
                     "--stall-seconds=2", "--summary")  # fmt: skip

    def mid_range() -> bool:  # begun, and far from done: it cannot finish before the kill lands
        halfway = (F("byte_start") + F("byte_end")) / 2
        return ImportRange.objects.filter(
            status=ImportRange.Status.PROCESSING, next_offset__gt=F("byte_start"), next_offset__lt=halfway
        ).exists()

    wait_for(mid_range, 60, "a range imported part way", 0.02)
    live_stack.stop_worker(signal.SIGKILL)
    interrupted = [r for r in ranges() if r.status == ImportRange.Status.PROCESSING and r.next_offset > r.byte_start]
    assert interrupted and all(r.next_offset < r.byte_end for r in interrupted)

    live_stack.start_worker()
    code, out, err = running.finish()
    assert code == 0, err
    assert out == summary
    got = counts_line(path, err)
    assert {k: got[k] for k in counts} == counts, err
    assert Event.objects.count() == got["accepted"] == sum(r.accepted for r in ranges())
    assert_true_lines(path)  # each rejection once, on its true line
    resumed = ImportRange.objects.get(pk=interrupted[0].pk)
    assert resumed.status == ImportRange.Status.DONE and resumed.attempts >= 2
    assert resumed.record_count == records_in(path, resumed)


def records_in(path: Path, batch: ImportRange) -> int:
    """Non-blank records of a range, read on their own."""
    with open(path, "rb") as f:
        f.seek(batch.byte_start)
        data = io.BytesIO(f.read(batch.byte_end - batch.byte_start))
    return sum(1 for _, raw, _ in iter_ndjson(data, offset=batch.byte_start) if type(raw) is not bytes or raw.strip())


def test_gzip_and_json_array_files_fall_back_to_the_sequential_import(live_stack, sample_data, tmp_path):
    summary, counts = expected("small", sample_data)
    compressed = tmp_path / "small.jsonl.gz"
    compressed.write_bytes(gzip.compress((sample_data / "chat" / "small.jsonl").read_bytes()))
    array = sample_data / "xmpp" / "chatid_sample.json"

    code, out, err = run_import(live_stack, str(compressed), str(array), "--parallel", "--summary")
    assert code == 0, err
    assert out == summary
    assert f"{compressed}: importing sequentially: a gzip file cannot be split" in err
    assert f"{array}: importing sequentially: a JSON-array file cannot be split" in err
    assert counts_line(compressed, err)["duplicates"] == counts["duplicates"]
    assert counts_line(array, err)["accepted"] == 340
    assert not ranges()
