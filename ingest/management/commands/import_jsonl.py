"""manage.py import_jsonl FILE [FILE...]: bulk-load event files, resumably."""

from __future__ import annotations

import os
import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from ingest.models import ImportJob
from ingest.services import ConcurrentImport, import_file
from reports.site_summary import summary_rows


class Command(BaseCommand):
    help = (
        "Import NDJSON or JSON-array files (optionally gzip). Progress and counts go to "
        "stderr; --summary prints the classic site lines to stdout."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", metavar="FILE")
        parser.add_argument("--summary", action="store_true", help="print the site summary lines")
        parser.add_argument("--chunk-lines", type=int, default=None, help="lines per transaction")

    def handle(self, *args: object, **options: object) -> None:
        files: list[str] = options["files"]  # type: ignore[assignment]
        for path in files:
            if not os.path.isfile(path):
                raise CommandError(f"{path}: no such file")
        for path in files:
            job = self.import_one(path, options["chunk_lines"])  # type: ignore[arg-type]
            self.stderr.write(f"{path}: accepted={job.accepted} duplicates={job.duplicates} rejected={job.rejected}")
        if options["summary"]:
            for row in summary_rows():
                self.stdout.write(row.classic())

    def import_one(self, path: str, chunk_lines: int | None) -> ImportJob:
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
            return import_file(path, chunk_lines=chunk_lines, on_progress=progress)
        except ConcurrentImport as error:
            raise CommandError(str(error)) from error
        finally:
            bar.close()
