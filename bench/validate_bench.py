"""Benchmark: the import's validating pass alone (`ingest.imports.loader.prepare`), in this process.

    python bench/gen_chat.py 200000 /tmp/chat.jsonl --sites 1500 --duplicates 0.02
    python bench/validate_bench.py /tmp/chat.jsonl

Frames the file into chunks as an import does (IMPORT_CHUNK_LINES lines each), then
times `prepare` of every chunk (validation, in-chunk duplicates, the PostgreSQL COPY
text) with no database, and prints CPU microseconds per line, best of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from itertools import islice
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="an NDJSON file (bench/gen_chat.py writes one)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    parser.add_argument("--sqlite", action="store_true", help="prepare SQLite rows instead of COPY text")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings

    from ingest.framing import iter_ndjson
    from ingest.imports.loader import prepare

    size = settings.SWITCHBOARD["IMPORT_CHUNK_LINES"]
    with open(args.path, "rb") as stream:
        records = iter_ndjson(stream)
        chunks = list(iter(lambda: list(islice(records, size)), []))
    lines = sum(map(len, chunks))
    # As in an import's worker process (ingest/imports/loader.py `_start_worker`): no collector
    # passes while it validates, one collection between chunks' runs.
    gc.freeze()
    gc.disable()
    best_cpu = best_wall = float("inf")
    for _ in range(args.repeat):
        now = time.time()
        cpu, wall = time.process_time(), time.perf_counter()
        events = sum(prepare(chunk, now, not args.sqlite).events for chunk in chunks)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
        gc.collect()
    print(
        f"{lines} lines, {events} events, chunks of {size}: "
        f"{best_cpu / lines * 1e6:.2f} µs CPU per line ({best_cpu:.2f} CPU-s), "
        f"{best_wall / lines * 1e6:.2f} µs wall per line, best of {args.repeat}"
    )


if __name__ == "__main__":
    main()
