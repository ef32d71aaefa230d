"""switchboard-send, the client's command, against a live server: NDJSON (gzip,
BOM, CRLF, bad lines), a JSON array, the rejections named by file line, and a
non-zero exit when something is not delivered."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from switchboard_client.files import EventFile

from ingest.models import Rejection
from tests.test_worker_e2e import summary_text

pytestmark = pytest.mark.slow
SEND = str(Path(sys.executable).parent / "switchboard-send")


def test_array_files_are_cut_into_their_elements_as_written(tmp_path, sample_data):
    source = sample_data / "xmpp" / "chatid_sample.json"
    elements = [raw for _, raw in EventFile(source).records()]

    assert len(elements) == 340
    assert [json.loads(raw) for raw in elements] == json.loads(source.read_bytes())
    data = source.read_bytes()
    assert all(raw in data for raw in elements)  # each element's own bytes, not re-serialized


def test_files_are_sent_and_rejections_named_by_line(live_stack, app_key, analyst_token, sample_data, tmp_path):
    live_stack.start_web()
    live_stack.start_worker()
    edge = tmp_path / "edge.jsonl.gz"
    edge.write_bytes(gzip.compress((sample_data / "chat" / "edge.jsonl").read_bytes()))
    xmpp = sample_data / "xmpp" / "chatid_sample.json"

    sent = subprocess.run(
        [SEND, str(edge), str(xmpp), "--url", live_stack.base_url, "--key", app_key, "--wait", "--batch-events", "7"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip

    assert sent.returncode == 0, sent.stderr
    counts = dict(part.split("=") for part in (sample_data / "chat" / "edge.counts").read_text().split())
    edge_records = sum(1 for line in (sample_data / "chat" / "edge.jsonl").read_bytes().splitlines() if line.strip())
    accepted = edge_records - int(counts["rejected"]) - int(counts["duplicates"]) + 340
    assert sent.stderr.splitlines()[-1] == (
        f"sent {edge_records + 340} records in {-(-edge_records // 7) + -(-340 // 7)} batches "
        f"(accepted={accepted} duplicates={counts['duplicates']} rejected={counts['rejected']})"
    )
    assert summary_text(live_stack, analyst_token).splitlines() == (
        (sample_data / "chat" / "edge.expected").read_text().splitlines()
    )
    # Each rejection named is the line of the file that holds the rejected record.
    lines = gzip.decompress(edge.read_bytes()).removeprefix(b"\xef\xbb\xbf").split(b"\n")
    named = [line.split(": ", 1)[1] for line in sent.stderr.splitlines() if line.startswith("rejected: ")]
    assert len(named) == 10 and "... and 3 more rejections" in sent.stderr
    rejected_raw = {r.raw[:200] for r in Rejection.objects.all()}
    for where in named:
        line = lines[int(where.split(":")[1]) - 1].rstrip(b"\r")
        assert line.decode(errors="backslashreplace")[:200] in rejected_raw, where


def test_a_refused_key_exits_non_zero_with_the_reason(live_stack, sample_data):
    live_stack.start_web()
    sent = subprocess.run(
        [SEND, str(sample_data / "chat" / "small.jsonl"), "--url", live_stack.base_url, "--key", "sb_00000000_x"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert sent.returncode == 1
    assert "refused: 401: Unknown or revoked API key" in sent.stderr
    assert sent.stderr.splitlines()[-1] == "sent 0 records in 0 batches"
