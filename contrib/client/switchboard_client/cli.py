"""switchboard-send: post event files to Switchboard.

    switchboard-send FILE [FILE...] --url URL --key KEY [--wait]

Files are NDJSON or one JSON array, gzip-compressed or not; records go as
written, in batches (NDJSON bodies, or array bodies for array files), gzip,
retried on 429, 5xx and connection errors; a batch the server finds too large
(413) is split in halves and sent again, down to one record. A progress bar
shows on a terminal. Sending again is harmless: the server counts resent
events as duplicates (so a client's spool file can be sent as it is).

Exit status: 0 when every record was delivered (and, with --wait, processed);
1 when something was not (the reason on stderr); 2 for wrong usage.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import zlib
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from switchboard_client import __version__
from switchboard_client.batching import bodies
from switchboard_client.files import ARRAY, MAX_RECORD_BYTES, BrokenFile, EventFile
from switchboard_client.transport import Rejected, RetriesExhausted, Transport, halves_of_too_large, records_limit

SHOWN_REJECTIONS = 10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="switchboard-send",
        description="Post event files (NDJSON or JSON arrays, optionally gzip) to Switchboard.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--url", default=os.environ.get("SWITCHBOARD_URL"), help="default: $SWITCHBOARD_URL")
    parser.add_argument(
        "--key", default=os.environ.get("SWITCHBOARD_API_KEY"), help="client app key; default: $SWITCHBOARD_API_KEY"
    )
    parser.add_argument("--batch-events", type=int, default=5000, help="records per request (default 5000)")
    parser.add_argument(
        "--batch-bytes", type=int, default=4_000_000, help="bytes per request before gzip (default 4000000)"
    )
    parser.add_argument("--retries", type=int, default=10, help="retries of a failed request (default 10)")
    parser.add_argument("--wait", action="store_true", help="wait until the server has processed every batch")
    parser.add_argument("--wait-timeout", type=float, default=600, help="seconds --wait waits at most (default 600)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args = parser.parse_args(argv)
    if not args.url or not args.key:
        parser.error("--url and --key are required (or SWITCHBOARD_URL and SWITCHBOARD_API_KEY)")
    if args.batch_events < 1 or args.batch_bytes < 1:
        parser.error("--batch-events and --batch-bytes must be at least 1")
    return args


def ndjson_body(numbers: list[int], lines: list[bytes]) -> bytes:
    """Lines with the file's blank lines between them kept, so that the server's line
    numbers in the body run on from the first line's number in the file."""
    gaps = [b"\n" * (after - before) for before, after in zip(numbers, numbers[1:], strict=False)]
    return b"".join(line + gap for line, gap in zip(lines, [*gaps, b"\n"], strict=True))


class Progress:
    """One status line on a terminal, redrawn at most five times a second."""

    def __init__(self, out: TextIO, enabled: bool) -> None:
        self.out, self.enabled, self.drawn = out, enabled, 0.0

    def show(self, file: EventFile, records: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.drawn < 0.2):
            return
        self.drawn = now
        size = max(file.size, 1)
        done = size if final else min(file.position, size)
        filled = 30 * done // size
        self.out.write(
            f"\r{file.path.name[:30]:30} [{'#' * filled}{'.' * (30 - filled)}] {100 * done // size:3d}%"
            f"  {done / 1e6:,.1f}/{size / 1e6:,.1f} MB  {records:,} records"
        )
        if final:
            self.out.write("\n")
        self.out.flush()


class Sender:
    def __init__(self, args: argparse.Namespace, err: TextIO) -> None:
        self.args, self.err = args, err
        self.transport = Transport(args.url, args.key, max_retries=args.retries)
        self.progress = Progress(err, not args.quiet and err.isatty())
        # Per batch sent: its id, file and first record number (to name rejected lines).
        self.batch_ids, self.batch_files, self.batch_starts = array("q"), array("l"), array("q")
        self.records = self.failures = 0
        self.records_limit: int | None = None  # records per body the server said it takes (a 413)

    def send_file(self, index: int, path: Path) -> bool:
        """Send one file's records; False if sending must stop (the server cannot be reached)."""
        try:
            file = EventFile(path)
        except (OSError, EOFError, zlib.error) as error:  # missing, unreadable, a broken gzip header
            self.fail(f"{path}: {getattr(error, 'strerror', None) or error}")
            return True
        try:
            for numbers, group in self.batches(file):
                if not self.post(file, index, numbers, group):
                    return False
                self.progress.show(file, self.records)
            self.progress.show(file, self.records, final=True)
        except (BrokenFile, OSError, EOFError, zlib.error) as error:  # a broken array or gzip stream
            self.fail(f"{path}: {error} (the records before it were sent)")
        finally:
            file.close()
            for number in file.too_long:
                self.fail(f"{path}:{number}: record over {MAX_RECORD_BYTES} bytes, not sent")
        return True

    def batches(self, file: EventFile) -> Iterator[tuple[list[int], list[bytes]]]:
        numbered = file.records()
        pending: list[int] = []

        def lines() -> Iterator[bytes]:
            for number, raw in numbered:
                pending.append(number)
                yield raw

        def most() -> int:
            return min(self.args.batch_events, self.records_limit or self.args.batch_events)

        for group in bodies(lines(), most, self.args.batch_bytes):
            numbers, pending[:] = pending[: len(group)], pending[len(group) :]
            yield numbers, group

    def post(self, file: EventFile, index: int, numbers: list[int], group: list[bytes]) -> bool:
        """Post one batch, split in halves while the server finds it too large (413);
        False if sending must stop."""
        parts = [list(zip(numbers, group, strict=True))]
        while parts:
            part = parts.pop()
            numbers, group = [number for number, _ in part], [line for _, line in part]
            try:
                answer = self.post_body(file, numbers, group)
            except Rejected as error:
                if halves := halves_of_too_large(error, part):
                    parts += reversed(halves)
                    self.records_limit = records_limit(error) or self.records_limit
                    continue
                self.fail(f"{file.path}:{numbers[0]}-{numbers[-1]}: refused: {error}")
                if error.status != 413:
                    return False  # other refusals (a key, a redirect) recur for every batch
                continue  # one record over the limit: the others go on
            except RetriesExhausted as error:
                self.fail(
                    f"{file.path}:{numbers[0]}-{numbers[-1]}: {error}; stopping"
                    " (sending again is harmless: duplicates are counted once)"
                )
                return False
            self.records += len(group)
            self.batch_ids.append(answer["batch_id"])
            self.batch_files.append(index)
            self.batch_starts.append(numbers[0])
        return True

    def post_body(self, file: EventFile, numbers: list[int], group: list[bytes]) -> dict:
        if file.framing == ARRAY:
            return self.transport.post_events(b"[" + b",".join(group) + b"]", "application/json")
        return self.transport.post_events(ndjson_body(numbers, group), "application/x-ndjson")

    def fail(self, message: str) -> None:
        self.failures += 1
        self.err.write(f"switchboard-send: {message}\n")

    def batch_status(self, batch_id: int) -> dict:
        """A batch's status document; {"status": "unknown"} once the failure is told."""
        try:
            return self.transport.request("GET", f"/api/batches/{batch_id}/")
        except (Rejected, RetriesExhausted) as error:
            self.fail(f"batch {batch_id}: cannot read its status: {error}")
            return {"status": "unknown"}

    def wait(self) -> dict[str, int]:
        """Poll every batch until processed; totals, with the first rejections named."""
        totals = {"accepted": 0, "duplicates": 0, "rejected": 0}
        shown = 0
        deadline = time.monotonic() + self.args.wait_timeout
        for batch_id, file_index, start in zip(self.batch_ids, self.batch_files, self.batch_starts, strict=True):
            while (status := self.batch_status(batch_id))["status"] not in ("done", "failed"):
                if status["status"] == "unknown":
                    return totals
                if time.monotonic() > deadline:
                    self.fail(f"batch {batch_id} still {status['status']} after {self.args.wait_timeout:g}s")
                    return totals
                time.sleep(0.5)
            if status["status"] == "failed":
                self.fail(f"batch {batch_id} failed on the server: {status.get('last_error') or 'see the admin'}")
            for key in totals:
                totals[key] += status.get(key) or 0
            for rejection in status.get("rejections", []):
                if shown < SHOWN_REJECTIONS:
                    # NDJSON lines run on from the batch's first; array elements likewise.
                    number = start + rejection["line"] - 1
                    self.err.write(f"rejected: {self.args.files[file_index]}:{number}: {rejection['reason']}\n")
                shown += 1
        if shown > SHOWN_REJECTIONS:
            self.err.write(f"... and {shown - SHOWN_REJECTIONS} more rejections\n")
        return totals


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sender = Sender(args, sys.stderr)
    try:
        for index, path in enumerate(args.files):
            if not sender.send_file(index, path):
                break
    except KeyboardInterrupt:
        sender.fail("interrupted (sending again is harmless: duplicates are counted once)")
        return 1
    summary = f"sent {sender.records} records in {len(sender.batch_ids)} batches"
    if args.wait and sender.batch_ids:
        totals = sender.wait()
        summary += " ({})".format(" ".join(f"{key}={value}" for key, value in totals.items()))
    sys.stderr.write(summary + "\n")
    return 1 if sender.failures else 0


if __name__ == "__main__":
    sys.exit(main())
