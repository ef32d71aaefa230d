"""Benchmark: what the metrics add to each request (issue 20), in multiprocess mode.

    .venv/bin/python bench/metrics_bench.py [--calls 200000]

Times, in one process writing to a fresh PROMETHEUS_MULTIPROC_DIR as a gunicorn worker does,
what the fast path adds to an accepted post: the request counter and duration histogram
(`recording.request_answered`) and the received counter (`recording.batch_received`); then
the same with 4 threads, as gunicorn's gthread workers run them; then one scrape's cost
(adding up the files of 5 processes) for comparison.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def per_call_us(calls: int, threads: int) -> float:
    from ingest.monitoring import recording

    def run(n: int) -> None:
        for _ in range(n):
            recording.request_answered("api/events/", 202, 0.0012)
            recording.batch_received("bench-app", 1)

    run(1000)  # the label children and files exist
    workers = [threading.Thread(target=run, args=(calls // threads,)) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:  # before prometheus-client is imported
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="metrics-bench-")
        os.execv(sys.executable, [sys.executable, *sys.argv])
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    one = per_call_us(args.calls, 1)
    four = per_call_us(args.calls, 4)
    # Four more processes' files, as five gunicorn workers leave them, then one scrape's cost.
    code = "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings'); django.setup(); " \
           "from ingest.monitoring import recording; recording.request_answered('api/events/', 202, 0.001)"  # fmt: skip
    for _ in range(4):
        subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
    from ingest.monitoring.exposition import process_registry, render

    render(process_registry())
    started = time.perf_counter()
    for _ in range(20):
        render(process_registry())
    scrape_ms = (time.perf_counter() - started) / 20 * 1e3
    print("| what | per accepted post |")
    print("|---|---|")
    print(f"| request counter + duration histogram + received counter, 1 thread | {one:.2f} µs |")
    print(f"| the same, 4 threads of one process | {four:.2f} µs |")
    print(f"| one scrape of 5 processes' files (process metrics only) | {scrape_ms:.1f} ms |")


if __name__ == "__main__":
    main()
