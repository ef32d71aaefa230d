"""`manage.py import_jsonl` and `manage.py site_summary` (SPEC §5, command line).

Every shared chat file gives exactly its expected summary and counts, from the
import and again from `site_summary`, and a rerun adds nothing. The same
records as gzip, as a JSON array and as a gzipped JSON array give the same
summary; several files in one command, a missing file and a file of all the
shared lines shuffled with extra resends are checked against the independent
oracle (tests/chat_oracle.py). Tests that need the real stdout or exit status
run the command as a child process; the others call it in-process.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import time
from pathlib import Path

import pytest
from django.core.management import call_command

from events.models import Event
from ingest.models import ImportJob, RawBatch, Rejection
from tests import chat_oracle
from tests.test_parallel_import import CHAT_FILES, counts_line, expected, run_import

COUNTS = ("accepted", "duplicates", "rejected")


def call(*args: str) -> tuple[str, str]:
    """The command in this process; its stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def oracle_text(outcome: chat_oracle.Outcome) -> str:
    return "".join(f"{line}\n" for line in chat_oracle.summary_lines(outcome.accepted))


def oracle_counts(outcome: chat_oracle.Outcome) -> dict[str, int]:
    return {"accepted": len(outcome.accepted), "duplicates": outcome.duplicates, "rejected": outcome.rejected}


# -- the shared files, as child processes --------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", CHAT_FILES)
def test_each_shared_file_gives_its_expected_summary_and_counts(name, sample_data, live_stack, manage):
    path = sample_data / "chat" / f"{name}.jsonl"
    summary, counts = expected(name, sample_data)

    code, out, err = run_import(live_stack, str(path), "--summary")
    assert code == 0, err
    assert out == summary  # stdout carries the summary lines and nothing else
    got = counts_line(path, err)
    assert {k: got[k] for k in counts} == counts, err
    assert Event.objects.count() == got["accepted"]
    assert Rejection.objects.count() == counts["rejected"]

    shown = manage("site_summary")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == summary

    batches = RawBatch.objects.count()
    code, out, err = run_import(live_stack, str(path), "--summary")
    assert code == 0, err
    assert out == summary
    assert counts_line(path, err) == got  # the file's totals, not counted again
    assert Event.objects.count() == got["accepted"]
    assert Rejection.objects.count() == counts["rejected"]
    assert RawBatch.objects.count() == batches  # nothing was read again
    assert manage("site_summary").stdout == summary


@pytest.mark.slow
def test_stdout_is_empty_without_summary(sample_data, live_stack):
    path = sample_data / "chat" / "small.jsonl"
    summary, counts = expected("small", sample_data)

    code, out, err = run_import(live_stack, str(path), "--chunk-lines=300")
    assert code == 0, err
    assert out == ""
    got = counts_line(path, err)
    assert {k: got[k] for k in counts} == counts
    assert Event.objects.count() == got["accepted"] > 0
    assert call("site_summary")[0] == summary


@pytest.mark.slow
def test_a_missing_file_fails_clearly_and_imports_nothing(sample_data, manage, tmp_path):
    present = sample_data / "chat" / "small.jsonl"
    missing = tmp_path / "no-such.jsonl"

    done = manage("import_jsonl", str(present), str(missing), "--summary")
    assert done.returncode != 0
    assert f"{missing}: no such file" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    # Every file is checked before any is imported.
    assert not ImportJob.objects.exists()
    assert not Event.objects.exists()

    directory = manage("import_jsonl", str(tmp_path))
    assert directory.returncode != 0
    assert f"{tmp_path}: no such file" in directory.stderr


# -- other framings and several files, in-process ------------------------------


def parsed_values(path: Path) -> tuple[list[object], int]:
    """The NDJSON file's lines that are JSON (as the oracle parses them), and how many are not."""
    values, left_out = [], 0
    for line in path.read_bytes().removeprefix(chat_oracle.BOM).split(b"\n"):
        if not line.strip():
            continue
        try:
            value = json.loads(line.decode("utf-8"), parse_constant=chat_oracle._no_constants)
            json.dumps(value, allow_nan=False)
        except ValueError:  # not UTF-8, not JSON, or a number JSON cannot carry back
            left_out += 1
            continue
        values.append(value)
    return values, left_out


def json_array_bytes(values: list[object]) -> bytes:
    """A pretty-printed array: elements span several lines, as real exports do."""
    return json.dumps(values, indent=1, ensure_ascii=False).encode() + b"\n"


@pytest.mark.django_db
@pytest.mark.parametrize("variant", ["gzip", "array", "array-gzip"])
@pytest.mark.parametrize("name", ["edge", "mixed"])
def test_gzip_and_json_array_files_give_the_same_summary(name, variant, sample_data, tmp_path):
    source = sample_data / "chat" / f"{name}.jsonl"
    summary, counts = expected(name, sample_data)
    if variant == "gzip":
        path = tmp_path / f"{name}.jsonl.gz"
        path.write_bytes(gzip.compress(source.read_bytes()))
        want = {"accepted": summary_events(summary, source), **counts}
    else:
        values, left_out = parsed_values(source)
        outcome = chat_oracle.read_values(values, time.time())
        assert oracle_text(outcome) == summary  # only rejected lines were left out
        assert outcome.rejected == counts["rejected"] - left_out
        want = oracle_counts(outcome)
        data = json_array_bytes(values)
        path = tmp_path / f"{name}.json"
        if variant == "array-gzip":
            path, data = tmp_path / f"{name}.json.gz", gzip.compress(data)
        path.write_bytes(data)

    out, err = call("import_jsonl", str(path), "--summary", "--chunk-lines=700")
    assert out == summary
    assert counts_line(path, err) == {k: want[k] for k in COUNTS}
    assert Event.objects.count() == want["accepted"]
    assert Rejection.objects.count() == want["rejected"]
    stream = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if variant != "gzip":  # the checkpoint of an array is the end of its last element
        stream = stream.rstrip().removesuffix(b"]").rstrip()
    assert ImportJob.objects.get().next_offset == len(stream)

    again, err = call("import_jsonl", str(path), "--summary")
    assert again == summary
    assert counts_line(path, err) == {k: want[k] for k in COUNTS}
    assert Event.objects.count() == want["accepted"]
    assert Rejection.objects.count() == want["rejected"]


def summary_events(summary: str, source: Path) -> int:
    """Accepted events of a shared file, by the oracle (its summary checked on the way)."""
    outcome = chat_oracle.read_ndjson(source.read_bytes(), time.time())
    assert oracle_text(outcome) == summary
    return len(outcome.accepted)


@pytest.mark.django_db
def test_several_files_in_one_command(sample_data):
    names = ["edge", "external_small", "small", "external_bad"]  # the last resends 9 ids of the second
    paths = [sample_data / "chat" / f"{name}.jsonl" for name in names]

    out, err = call("import_jsonl", *map(str, paths), "--summary")

    now, seen, accepted = time.time(), set(), []
    for path in paths:
        outcome = chat_oracle.read_ndjson(path.read_bytes(), now)
        new = [e for e in outcome.accepted if e.uid not in seen]
        seen |= outcome.ids
        accepted += new
        want = {"accepted": len(new), "duplicates": outcome.duplicates + len(outcome.accepted) - len(new)}
        assert counts_line(path, err) == {**want, "rejected": outcome.rejected}, path
    assert counts_line(paths[-1], err) == {"accepted": 0, "duplicates": 9, "rejected": 1}
    assert out.splitlines() == chat_oracle.summary_lines(accepted)
    assert Event.objects.count() == len(accepted)
    assert ImportJob.objects.count() == len(paths)
    assert call("site_summary")[0] == out


@pytest.mark.django_db
def test_all_shared_lines_shuffled_with_resends_give_the_oracles_summary(sample_data, tmp_path):
    rng = random.Random(5150)
    lines = []
    for name in CHAT_FILES:
        data = (sample_data / "chat" / f"{name}.jsonl").read_bytes().removeprefix(chat_oracle.BOM)
        lines += data.removesuffix(b"\n").split(b"\n")
    lines += rng.sample(lines, 3000)  # resends of valid, invalid and blank lines alike
    rng.shuffle(lines)
    path = tmp_path / "shuffled.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    outcome = chat_oracle.read_ndjson(path.read_bytes(), time.time())

    out, err = call("import_jsonl", str(path), "--summary", "--chunk-lines=997")

    assert out == oracle_text(outcome)
    assert counts_line(path, err) == oracle_counts(outcome)
    assert sorted(Event.objects.values_list("uid", flat=True)) == sorted(outcome.ids)
    assert sorted(Rejection.objects.values_list("line", flat=True)) == outcome.rejected_lines
    assert call("site_summary", "--rebuild")[0] == out
