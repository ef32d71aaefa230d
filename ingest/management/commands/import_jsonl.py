"""manage.py import_jsonl FILE [FILE...]: bulk-load event files, resumably."""

from __future__ import annotations

import os
import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import Error as DatabaseError  # InterfaceError (connection gone) included
from tqdm import tqdm

from config.hostile import text_argument
from ingest.imports import parallel, ranges
from ingest.imports.identity import ConcurrentImport
from ingest.imports.sequential import import_file
from ingest.imports.tasks import enqueue_ranges
from ingest.models import ImportJob
from reports.site_summary import summary_rows


class Command(BaseCommand):
    help = (
        "Import NDJSON or JSON-array files (optionally gzip). Progress and counts go to "
        "stderr; --summary prints the classic site lines to stdout."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        # A path that is not UTF-8 is refused: it is stored with the file's batches and import job.
        parser.add_argument("files", nargs="+", metavar="FILE", type=text_argument)
        parser.add_argument("--summary", action="store_true", help="print the site summary lines")
        parser.add_argument("--chunk-lines", type=int, default=None, help="lines per transaction")
        parser.add_argument(
            "--workers",
            type=int,
            default=None,
            help="processes validating the next chunks while this one stores (default IMPORT_WORKERS, 1; 0: none)",
        )
        parser.add_argument(
            "--parallel",
            action="store_true",
            help="split NDJSON files into byte ranges that the Celery workers import (needs running "
            "workers that read FILE at the same path); gzip and JSON-array files are imported here",
        )
        parser.add_argument(
            "--chunk-bytes",
            type=int,
            default=ranges.DEFAULT_CHUNK_BYTES,
            help="bytes per range with --parallel (default 64 MiB)",
        )
        parser.add_argument(
            "--stall-seconds",
            type=float,
            default=60,
            help="with --parallel: warn and enqueue ranges again when none advances for this long",
        )

    def handle(self, *args: object, **options: object) -> None:
        files: list[str] = options["files"]  # type: ignore[assignment]
        for path in files:
            if not os.path.isfile(path):
                raise CommandError(f"{path}: no such file")
        if options["chunk_bytes"] < 1:  # type: ignore[operator]
            raise CommandError("--chunk-bytes must be positive")
        plans = self.plan_parallel(files, options) if options["parallel"] else {}
        for path in files:
            if path in plans:
                job = self.wait_parallel(path, plans[path], options)
            else:
                if not options["parallel"] and (left := parallel.unfinished_ranges(path)):
                    raise CommandError(f"{path}: a parallel import has {left} ranges left; rerun it with --parallel")
                job = self.import_one(path, options["chunk_lines"], options["workers"])  # type: ignore[arg-type]
            self.stderr.write(f"{path}: accepted={job.accepted} duplicates={job.duplicates} rejected={job.rejected}")
        if options["summary"]:
            for row in summary_rows():
                self.stdout.write(row.classic())

    def import_one(self, path: str, chunk_lines: int | None, workers: int | None) -> ImportJob:
        bar = tqdm(
            total=os.path.getsize(path),
            unit="B",
            unit_scale=True,
            desc=os.path.basename(path),
            file=sys.stderr,
            disable=not sys.stderr.isatty(),
        )

        def progress(job: ImportJob) -> None:
            bar.n = min(job.next_offset, bar.total)  # gzip offsets count decompressed bytes
            bar.set_postfix(accepted=job.accepted, duplicates=job.duplicates, rejected=job.rejected)

        try:
            return import_file(
                path,
                chunk_lines=chunk_lines,
                workers=workers,
                on_progress=progress,
                on_notice=lambda message: (
                    tqdm.write(message, file=sys.stderr) if not bar.disable else self.stderr.write(message)
                ),
            )
        except ConcurrentImport as error:
            raise CommandError(str(error)) from error
        except DatabaseError as error:  # a restart, a lost connection, a lock held too long
            raise CommandError(
                f"{path}: database error ({str(error).strip()}); run the same command again to resume"
                " from the last checkpoint"
            ) from error
        finally:
            bar.close()

    def plan_parallel(self, files: list[str], options: dict) -> dict[str, ranges.Plan]:
        """Plan and enqueue every splittable file first, so the workers start at once."""
        plans = {}
        for path in files:
            if reason := ranges.cannot_split(path):
                self.stderr.write(f"{path}: importing sequentially: {reason}")
                continue
            try:
                plan = ranges.plan_import(path, options["chunk_bytes"])
            except ConcurrentImport as error:
                raise CommandError(str(error)) from error
            sent = enqueue_ranges(plan.unfinished, options["chunk_lines"])
            self.stderr.write(
                f"{path}: {plan.ranges} ranges ({plan.planned} new), {len(plan.unfinished)} to import,"
                f" {sent} enqueued; waiting for workers"
            )
            plans[path] = plan
        return plans

    def wait_parallel(self, path: str, plan: ranges.Plan, options: dict) -> ImportJob:
        name = os.path.basename(path)
        bar = tqdm(unit="B", unit_scale=True, desc=name, file=sys.stderr, disable=not sys.stderr.isatty())

        def say(message: str) -> None:
            if bar.disable:
                self.stderr.write(message)
            else:
                tqdm.write(message, file=sys.stderr)  # above the bar

        def progress(p: parallel.Progress) -> None:
            bar.total, bar.n = p.total_bytes, p.done_bytes
            bar.set_description(name if p.started or p.done == p.ranges else f"{name} (waiting for workers)")
            bar.set_postfix(
                ranges=f"{p.done}/{p.ranges}", accepted=p.accepted, duplicates=p.duplicates, rejected=p.rejected
            )

        def stall(s: parallel.Stall) -> None:
            queued = f", {s.queue_depth} messages queued" if s.queue_depth else ""
            again = f"; {s.requeued} ranges enqueued again" if s.requeued else ""
            if s.workers_seen:
                say(f"{path}: no range advanced in {s.seconds:.0f} s (a worker stopped?){queued}{again}")
            else:
                say(
                    f"{path}: waiting for workers: no range taken in {s.seconds:.0f} s{queued}{again}; start"
                    " `celery -A config worker` where the database, the broker and this file are reachable"
                )

        try:
            parallel.wait_for_ranges(
                plan.job,
                stall_seconds=options["stall_seconds"],
                chunk_lines=options["chunk_lines"],
                on_progress=progress,
                on_stall=stall,
            )
        finally:
            bar.close()
        return parallel.finish_import(plan.job)
