"""Benchmark: `import_jsonl --summary` into the configured database vs DuckDB in memory.

    DATABASE_URL=postgres://... python bench/import_bench.py --lines 10000000

Generates the chat file once (bench/gen_chat.py), imports it into a freshly
migrated database, runs the DuckDB peer on the same file, checks that both
print the same summary, and prints a Markdown table row with wall time and
peak RSS of each (children measured with wait4's rusage).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from http_bench import durability_settings, durability_text
from proc_sampler import Sampler, TreeUse, postmaster_pid

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def run_measured(
    cmd: list[str], env: dict[str, str], stdout_path: Path, sampler: Sampler | None = None
) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS MiB) of that process tree's biggest process."""
    start = time.perf_counter()
    with open(stdout_path, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.PIPE)
        if sampler:
            sampler.watch("import_jsonl", proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{stderr}")
    sys.stderr.write(stderr)
    return wall, usage.ru_maxrss / 1024


def durability(env: dict[str, str]) -> str:
    """The server's durability settings, in brackets, or "" for SQLite."""
    if not env.get("DATABASE_URL", "").startswith("postgres"):
        return ""
    return f"({durability_text(durability_settings(env['DATABASE_URL']))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--sites", type=int, default=250, help="sites of the generated file")
    parser.add_argument("--duplicates", type=float, default=0.03, help="fraction of resent lines")
    parser.add_argument("--dir", default="/tmp/switchboard-bench")
    parser.add_argument("--chunk-lines", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None, help="validation processes of a sequential import")
    parser.add_argument("--parallel", type=int, default=0, metavar="N", help="import with N worker processes")
    parser.add_argument("--chunk-bytes", type=int, default=None, help="with --parallel: bytes per range")
    args = parser.parse_args()

    workdir = Path(args.dir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / f"chat-{args.lines}-{args.sites}s-{args.duplicates:g}d.jsonl"
    if not data.exists():
        generate = [PYTHON, "bench/gen_chat.py", str(args.lines), str(data), f"--sites={args.sites}"]
        subprocess.run([*generate, f"--duplicates={args.duplicates}"], cwd=REPO, check=True)
    env = dict(os.environ)
    database = env.get("DATABASE_URL", "sqlite (default)")

    # Migrate first: a database left by an older checkout may lack tables that flush empties.
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True)
    subprocess.run([PYTHON, "manage.py", "flush", "--noinput"], cwd=REPO, env=env, check=True)
    ours = [PYTHON, "manage.py", "import_jsonl", str(data), "--summary"]
    if args.chunk_lines:
        ours += ["--chunk-lines", str(args.chunk_lines)]
    if args.workers is not None:
        ours += ["--workers", str(args.workers)]
    worker = None
    sampler = Sampler(postmaster_pid(env.get("DATABASE_URL", "")))
    if args.parallel:
        ours.append("--parallel")
        if args.chunk_bytes:
            ours += ["--chunk-bytes", str(args.chunk_bytes)]
        subprocess.run([PYTHON, "-m", "celery", "-A", "config", "purge", "-f"], cwd=REPO, env=env, check=True)
        worker_cmd = [PYTHON, "-m", "celery", "-A", "config", "worker", "--concurrency", str(args.parallel),
                      "--loglevel", "WARNING", "--without-gossip", "--without-mingle"]  # fmt: skip
        worker = subprocess.Popen(worker_cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        sampler.watch("celery worker", worker.pid)
    sampler.start()
    try:
        our_wall, our_rss = run_measured(ours, env, workdir / "ours.txt", sampler)
    finally:
        sampler.stop()
        if worker:
            worker.terminate()  # warm shutdown: the ranges are all done by now
            _, _, usage = os.wait4(worker.pid, 0)
            our_rss = max(our_rss, usage.ru_maxrss / 1024)
    peer_wall, peer_rss = run_measured([PYTHON, "bench/duckdb_summary.py", str(data)], env, workdir / "duckdb.txt")

    same = (workdir / "ours.txt").read_bytes() == (workdir / "duckdb.txt").read_bytes()
    size_mb = data.stat().st_size / 1e6
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"database: {database.split('@')[-1]} {durability(env)}")
    if args.parallel:
        print(f"import_jsonl --parallel with a Celery worker of concurrency {args.parallel}")
    elif args.workers is not None:
        print(f"import_jsonl --workers {args.workers}")
    print("| lines | file MB | import_jsonl s | lines/s | peak RSS MiB | DuckDB s | DuckDB RSS MiB | ratio | same |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.lines:,} | {size_mb:,.0f} | {our_wall:.1f} | {args.lines / our_wall:,.0f} | {our_rss:.0f} "
        f"| {peer_wall:.1f} | {peer_rss:.0f} | {our_wall / peer_wall:.1f}x | {'yes' if same else 'NO'} |"
    )
    print()
    print(cpu_report(sampler, our_wall))
    if not same:
        raise SystemExit("the summaries differ")


def cpu_report(sampler: Sampler, wall: float) -> str:
    """Where the import's CPU went: each process of the watched trees and the database server."""
    lines = ["| process | CPU s | share of one core | peak RSS MiB |", "|---|---|---|---|"]
    total = 0.0

    def row(name: str, cpu: float, rss_kib: int | None) -> str:
        rss = "" if rss_kib is None else f"{rss_kib / 1024:.0f}"
        return f"| {name[:70]} | {cpu:.1f} | {cpu / wall:.0%} | {rss} |"

    for label, (root, use) in sampler.trees.items():
        tree: TreeUse = use
        for pid, proc in tree.processes.items():
            role = "main process" if pid == root else "child process"
            lines.append(row(f"{label} {role}: {proc.name.split(' ', 1)[-1]}", proc.used, proc.peak_rss_kib))
            total += proc.used
        lines.append(row(f"{label}: every process at once (peak of the sum)", 0.0, tree.peak_sum_rss_kib))
    if sampler.postmaster:
        server, parts = sampler.server_cpu()
        for name, cpu in parts:
            lines.append(row(f"PostgreSQL: {name}", cpu, None))
        lines.append(row("PostgreSQL: all its processes (ended ones included)", server, None))
        total += server
    cores = os.cpu_count() or 1
    lines.append(row(f"everything above: {total / wall / cores:.0%} of {cores} cores", total, None))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
