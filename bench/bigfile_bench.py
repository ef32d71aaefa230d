"""A real-size run: generate a >= 10 GB chat NDJSON file and import it, measured.

    DATABASE_URL=postgres://... python bench/bigfile_bench.py --lines 58000000 --dir /tmp/bench-10gb

Checks the free disk first and refuses if the file and the estimated database do not
fit; generates the file once (bench/gen_chat.py in independently seeded blocks, one
process per core) and reports how fast; imports it with `import_jsonl --summary` into a
freshly flushed database (bench/import_bench.py measures it), printing a progress line
every `--progress` seconds; then prints the wall time, lines/s, CPU-seconds per million
lines per process group, peak RSS, disk (file, database, tables and indexes, free before
and after), WAL written, and whether the summary equals DuckDB's over the same file.
DuckDB needs about 1.5 bytes of memory per byte of file; it runs with a memory limit
(`--duckdb-memory`, default 75 % of the memory available then) and spills what it can to
the work directory; if it still runs out, the comparison is reported as skipped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import import_bench
from import_bench import MB, PYTHON, REPO, import_file, machine_line, mib
from proc_sampler import Sampler, postmaster_pid
from server_stats import Server

GB = 1e9
# Measured with --sites 1500 --duplicates 0.02 (docs/benchmarks.md): 175.5 bytes of file per
# line, and 720 of database after the import (1.15 M lines: event rows and their indexes,
# SiteActor); 900 leaves room for the WAL kept and the index builds' sort files.
FILE_BYTES_PER_LINE = 176
DATABASE_BYTES_PER_LINE = 900
MARGIN = 5 * GB
BLOCK_LINES = 250_000


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def database_directory(server: Server | None) -> str | None:
    """The server's data directory: asked, or else the postmaster's working directory."""
    if not server:
        return None
    found = server.data_directory()
    postmaster = postmaster_pid(server.url)
    if not found and postmaster:
        try:
            found = os.readlink(f"/proc/{postmaster}/cwd")
        except OSError:
            return None
    return found


def check_disk(data: Path, lines: int, server: Server | None) -> list[tuple[str, Path, int]]:
    """Refuse (exit) if the file still to write and the estimated database do not fit.
    Returns the (what, path, free bytes) of the file system(s) checked."""
    need_file = 0 if data.exists() else lines * FILE_BYTES_PER_LINE
    need_db = lines * DATABASE_BYTES_PER_LINE
    data_dir = database_directory(server)
    places = [("file", data.parent, need_file)]
    if data_dir and os.stat(data_dir).st_dev != os.stat(data.parent).st_dev:
        places.append(("database", Path(data_dir), need_db))
    else:
        places[0] = ("file and database", data.parent, need_file + need_db)
    checked = []
    for what, path, need in places:
        free = free_bytes(path)
        checked.append((what, path, free))
        if free < need + MARGIN:
            raise SystemExit(
                f"refused: the {what} need about {need / GB:,.1f} GB on {path} ({lines:,} lines: "
                f"{FILE_BYTES_PER_LINE} bytes of file and {DATABASE_BYTES_PER_LINE} of database per line, "
                f"plus {MARGIN / GB:.0f} GB to spare) and only {free / GB:,.1f} GB are free"
            )
    return checked


def generate(data: Path, lines: int, args: argparse.Namespace) -> str:
    if data.exists():
        return f"file: {data} ({data.stat().st_size / GB:,.2f} GB), generated earlier"
    partial = data.with_suffix(".part")
    start = time.perf_counter()
    subprocess.run(
        [PYTHON, "bench/gen_chat.py", str(lines), str(partial), f"--sites={args.sites}",
         f"--duplicates={args.duplicates}", f"--block-lines={BLOCK_LINES}", f"--processes={args.processes}"],
        cwd=REPO, check=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    partial.rename(data)  # only a whole file is reused by the next run
    size = data.stat().st_size
    return (
        f"file: {data} ({size / GB:,.2f} GB), generated in {seconds:,.0f} s by {args.processes} processes: "
        f"{lines / seconds:,.0f} lines/s, {size / MB / seconds:,.0f} MB/s"
    )


def progress_monitor(server: Server | None, lines: int, every: float, free_on: Path):
    """A thread printing one line per `every` seconds while the import runs."""

    def start(sampler: Sampler):
        stop = threading.Event()
        began = time.perf_counter()
        lsn = server.wal_lsn() if server else None

        def report() -> None:
            while not stop.wait(every):
                try:
                    print(progress_line(sampler, time.perf_counter() - began), file=sys.stderr, flush=True)
                except Exception as error:  # a progress line must never stop the run
                    print(f"progress: {error}", file=sys.stderr, flush=True)

        def progress_line(sampler: Sampler, elapsed: float) -> str:
            _, tree = sampler.trees["import_jsonl"]
            ours = sum(p.used for p in list(tree.processes.values()))
            parts = []
            if server:
                done = server.import_progress()
                stored = done[0] if done else 0
                parts.append(f"{stored:,} lines committed ({stored / lines:.0%}), {stored / elapsed:,.0f} lines/s")
                parts.append(f"WAL +{server.wal_bytes_since(lsn) / MB:,.0f} MB")
            if sampler.postmaster:
                parts.append(f"CPU s: PostgreSQL {sampler.server_cpu()[0]:,.0f}, import {ours:,.0f}")
            parts.append(f"peak RSS command and workers at once {mib(tree.peak_sum_rss_kib)} MiB")
            parts.append(f"free disk {free_bytes(free_on) / GB:,.1f} GB")
            if server:
                parts.append(f"running: {server.active_statement()}")
            return f"[{elapsed:6,.0f} s] " + "; ".join(parts)

        thread = threading.Thread(target=report, daemon=True)
        thread.start()

        def finish() -> None:
            stop.set()
            thread.join()

        return finish

    return start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=58_000_000, help="lines of the file (58 M: ~10.2 GB)")
    parser.add_argument("--sites", type=int, default=1500)
    parser.add_argument("--duplicates", type=float, default=0.02)
    parser.add_argument("--dir", default="/tmp/switchboard-bigfile", help="where the file and the outputs go")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="generating processes")
    parser.add_argument("--progress", type=float, default=30.0, help="seconds between progress lines")
    parser.add_argument("--duckdb-memory", help="DuckDB's memory limit, e.g. 14GB (default: 75%% of available)")
    parser.add_argument("--no-duckdb", action="store_true", help="skip the DuckDB comparison")
    parser.add_argument("--keep-file", action="store_true", help="keep the generated file for another run")
    args = parser.parse_args()

    env = dict(os.environ)
    server = Server.of(env.get("DATABASE_URL", ""))
    workdir = Path(args.dir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / f"chat-{args.lines}-{args.sites}s-{args.duplicates:g}d-b{BLOCK_LINES}.jsonl"
    free_before = check_disk(data, args.lines, server)

    print(machine_line(), flush=True)
    print(generate(data, args.lines, args), flush=True)
    size = data.stat().st_size
    if server:
        print(f"database: {env['DATABASE_URL'].split('@')[-1]} ({server.durability()})", flush=True)

    monitor = progress_monitor(server, args.lines, args.progress, workdir)
    run = import_file(data, args.lines, env, workdir, [], monitor=monitor)
    wall = run.ours.wall
    print(
        f"import_jsonl: {args.lines:,} lines, {size / GB:,.2f} GB in {wall:,.1f} s: {args.lines / wall:,.0f} lines/s, "
        f"{size / MB / wall:,.1f} MB/s; {import_bench.total_cpu(run) * 1e6 / args.lines:.1f} CPU-s per million lines; "
        f"peak RSS command and workers at once {mib(import_bench.peak_sum_kib(run))} MiB"
    )
    print()
    print(import_bench.group_report(run))
    print()
    print(import_bench.server_report(run))
    print()
    print("| disk | GB |")
    print("|---|---|")
    print(f"| the file | {size / GB:,.2f} |")
    if run.database_bytes is not None:
        print(f"| the database after | {run.database_bytes / GB:,.2f} |")
        print(f"| WAL written | {run.wal_bytes / GB:,.2f} |")
    for what, path, free in free_before:
        print(f"| free on {path} ({what}) before / after | {free / GB:,.1f} / {free_bytes(path) / GB:,.1f} |")
    print()
    print(import_bench.cpu_report(run.sampler, wall))
    print()
    print(compare_with_duckdb(data, env, workdir, args), flush=True)
    if not args.keep_file:
        data.unlink()


def compare_with_duckdb(data: Path, env: dict[str, str], workdir: Path, args: argparse.Namespace) -> str:
    if args.no_duckdb:
        return "DuckDB: skipped (--no-duckdb)"
    limit = args.duckdb_memory or f"{int(mem_available() * 0.75 / 2**20)}MB"
    spill = workdir / "duckdb-spill"
    options = ["--memory-limit", limit, "--temp-directory", str(spill)]
    try:
        peer = import_bench.duckdb_peer(data, env, workdir, options)
    except SystemExit as failed:
        said = str(failed).strip().splitlines() or ["failed"]
        reason = next((line for line in said if "Error" in line), said[-1])  # DuckDB's, not its advice
        return f"DuckDB: comparison skipped, DuckDB did not finish within memory_limit={limit}: {reason}"
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    same = import_bench.same_summary(workdir)
    return (
        f"DuckDB (memory_limit={limit}): {peer.wall:,.1f} s, peak RSS {peer.peak_rss_mib:,.0f} MiB; "
        f"summary {'byte-identical to' if same else 'DIFFERENT from'} import_jsonl's"
    )


if __name__ == "__main__":
    main()
