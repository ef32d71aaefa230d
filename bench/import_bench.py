"""Benchmark: `import_jsonl --summary` into the configured database vs DuckDB in memory.

    DATABASE_URL=postgres://... python bench/import_bench.py --lines 10000000

Generates the chat file once (bench/gen_chat.py), imports it into a freshly
migrated database, runs the DuckDB peer on the same file, checks that both
print the same summary, and prints Markdown tables: wall time, CPU-seconds per
million lines of every process (the command, its validating workers and the
PostgreSQL server, ended backends included), peak RSS (each process and all at
once), and on PostgreSQL the WAL written and the database's size after.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proc_sampler import Sampler, TreeUse, exited_cpu, postmaster_pid
from server_stats import Server

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MB = 1e6
MIB = 1024 * 1024


@dataclass
class Measured:
    """One finished command: wall seconds, its tree's largest RSS, and its CPU seconds split
    into the process's own and its reaped children's (the import's validating workers)."""

    wall: float
    peak_rss_mib: float
    own_cpu: float
    children_cpu: float

    @property
    def cpu(self) -> float:
        return self.own_cpu + self.children_cpu


def run_measured(
    cmd: list[str], env: dict[str, str], stdout_path: Path, sampler: Sampler | None = None, label: str = "import_jsonl"
) -> Measured:
    """Run a command to its end and measure it (stderr is kept beside stdout and echoed)."""
    start = time.perf_counter()
    stderr_path = stdout_path.with_suffix(".err")
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=err)
        if sampler:
            sampler.watch(label, proc.pid)
        # Wait without reaping: the zombie's /proc/PID/stat still splits its CPU from its children's.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        split = exited_cpu(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    stderr = stderr_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{stderr}")
    sys.stderr.write(stderr)
    total = usage.ru_utime + usage.ru_stime
    own, children = split if split else (total, 0.0)
    return Measured(wall, usage.ru_maxrss / 1024, own, children)


@dataclass
class ImportRun:
    lines: int
    ours: Measured
    sampler: Sampler
    celery: Measured | None = None
    settings: str = ""
    wal_bytes: int | None = None
    database_bytes: int | None = None
    relations: list[tuple[str, int, int]] | None = None


def import_file(
    data: Path,
    lines: int,
    env: dict[str, str],
    workdir: Path,
    options: list[str],
    parallel: int = 0,
    monitor: Callable[[Sampler], Callable[[], None]] | None = None,
) -> ImportRun:
    """Import `data` with `import_jsonl --summary` into a freshly flushed database, measured.

    `monitor` is started with the sampler once the command runs and returns its stop function
    (the real-size run's progress lines)."""
    server = Server.of(env.get("DATABASE_URL", ""))
    # Migrate first: a database left by an older checkout may lack tables that flush empties.
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True)
    subprocess.run([PYTHON, "manage.py", "flush", "--noinput"], cwd=REPO, env=env, check=True)
    ours = [PYTHON, "manage.py", "import_jsonl", str(data), "--summary", *options]
    worker = None
    if parallel:
        ours.append("--parallel")
        subprocess.run([PYTHON, "-m", "celery", "-A", "config", "purge", "-f"], cwd=REPO, env=env, check=True)
        worker_cmd = [PYTHON, "-m", "celery", "-A", "config", "worker", "--concurrency", str(parallel),
                      "--loglevel", "WARNING", "--without-gossip", "--without-mingle"]  # fmt: skip
    lsn = server.wal_lsn() if server else None
    sampler = Sampler(postmaster_pid(env.get("DATABASE_URL", "")))
    if parallel:
        worker = subprocess.Popen(worker_cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        sampler.watch("celery worker", worker.pid)
    sampler.start()
    stop_monitor = monitor(sampler) if monitor else None
    celery = None
    try:
        measured = run_measured(ours, env, workdir / "ours.txt", sampler)
    finally:
        if stop_monitor:
            stop_monitor()
        if worker:
            worker.terminate()  # warm shutdown: the ranges are all done by now
            os.waitid(os.P_PID, worker.pid, os.WEXITED | os.WNOWAIT)
            own, children = exited_cpu(worker.pid) or (0.0, 0.0)
            _, _, usage = os.wait4(worker.pid, 0)
            celery = Measured(0.0, usage.ru_maxrss / 1024, own, children)
        sampler.stop()
    run = ImportRun(lines, measured, sampler, celery)
    if server and lsn:
        run.settings = server.durability()
        run.wal_bytes = server.wal_bytes_since(lsn)
        run.database_bytes = server.database_bytes()
        run.relations = server.relation_bytes()
    return run


def duckdb_peer(data: Path, env: dict[str, str], workdir: Path, options: list[str] = ()) -> Measured:
    return run_measured([PYTHON, "bench/duckdb_summary.py", str(data), *options], env, workdir / "duckdb.txt")


def same_summary(workdir: Path) -> bool:
    return (workdir / "ours.txt").read_bytes() == (workdir / "duckdb.txt").read_bytes()


def machine_line() -> str:
    return f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"


def mib(kib: int | None) -> str:
    return "" if not kib else f"{kib / 1024:,.0f}"


def groups(run: ImportRun) -> list[tuple[str, float, str]]:
    """(process group, CPU seconds, peak RSS MiB) of the run: PostgreSQL, the command, its
    validating workers, the Celery worker of `--parallel`."""
    root, tree = run.sampler.trees["import_jsonl"]
    command = tree.processes.get(root)
    children = [p.peak_rss_kib for pid, p in tree.processes.items() if pid != root]
    found = []
    if run.sampler.postmaster:
        found.append(("PostgreSQL (every process, ended backends included)", run.sampler.server_cpu()[0], ""))
    found.append(("import_jsonl command", run.ours.own_cpu, mib(command.peak_rss_kib if command else None)))
    found.append(("validating workers (forked by the command)", run.ours.children_cpu, mib(max(children, default=0))))
    if run.celery:
        rss = f"{run.celery.peak_rss_mib:,.0f}"
        found.append(("Celery worker (`--parallel`), its pool included", run.celery.cpu, rss))
    return found


def group_report(run: ImportRun) -> str:
    """CPU seconds per process group, in all and per million lines, and their share of the cores."""
    wall, per_million = run.ours.wall, 1e6 / run.lines
    cores = os.cpu_count() or 1
    lines = [
        "| process group | CPU s | CPU s per million lines | share of one core | peak RSS MiB |",
        "|---|---|---|---|---|",
    ]
    total = 0.0
    for name, cpu, rss in groups(run):
        lines.append(f"| {name} | {cpu:.1f} | {cpu * per_million:.2f} | {cpu / wall:.0%} | {rss} |")
        total += cpu
    lines.append(
        f"| **total** ({total / wall / cores:.0%} of {cores} cores) | {total:.1f} | **{total * per_million:.2f}** "
        f"| {total / wall:.0%} | {mib(peak_sum_kib(run))} (the import's processes at once) |"
    )
    return "\n".join(lines)


def peak_sum_kib(run: ImportRun) -> int:
    """The import's processes at once: the command and its workers, and `--parallel`'s Celery
    worker with its pool (each tree's peak, summed: an upper bound when there are two)."""
    return sum(tree.peak_sum_rss_kib for _, tree in run.sampler.trees.values())


def total_cpu(run: ImportRun) -> float:
    return sum(cpu for _, cpu, _ in groups(run))


def server_report(run: ImportRun) -> str:
    if run.wal_bytes is None:
        return "database: not PostgreSQL, no WAL or sizes"
    lines = [
        f"PostgreSQL after the import: WAL written {run.wal_bytes / MB:,.0f} MB "
        f"({run.wal_bytes / run.lines:,.0f} bytes per line), database {run.database_bytes / MB:,.0f} MB",
        "",
        "| table | table MB | indexes MB |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {table / MB:,.0f} | {indexes / MB:,.0f} |" for name, table, indexes in run.relations or []]
    return "\n".join(lines)


def cpu_report(sampler: Sampler, wall: float) -> str:
    """Where the import's CPU went: each process of the watched trees and the database server
    (as sampled, a fifth of a second apart: a process's last moments may be missed)."""
    lines = ["| process | CPU s | share of one core | peak RSS MiB |", "|---|---|---|---|"]

    def row(name: str, cpu: float, rss_kib: int | None) -> str:
        return f"| {name[:70]} | {cpu:.1f} | {cpu / wall:.0%} | {mib(rss_kib)} |"

    for label, (root, use) in sampler.trees.items():
        tree: TreeUse = use
        for pid, proc in tree.processes.items():
            role = "main process" if pid == root else "child process"
            lines.append(row(f"{label} {role}: {proc.name.split(' ', 1)[-1]}", proc.used, proc.peak_rss_kib))
    if sampler.postmaster:
        for name, cpu in sampler.server_cpu()[1]:
            lines.append(row(f"PostgreSQL: {name}", cpu, None))
    return "\n".join(lines)


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
    options = []
    if args.chunk_lines:
        options += ["--chunk-lines", str(args.chunk_lines)]
    if args.workers is not None:
        options += ["--workers", str(args.workers)]
    if args.parallel and args.chunk_bytes:
        options += ["--chunk-bytes", str(args.chunk_bytes)]

    run = import_file(data, args.lines, env, workdir, options, args.parallel)
    peer = duckdb_peer(data, env, workdir)
    same = same_summary(workdir)

    wall, size_mb = run.ours.wall, data.stat().st_size / MB
    print(machine_line())
    print(f"database: {database.split('@')[-1]} {f'({run.settings})' if run.settings else ''}")
    if args.parallel:
        print(f"import_jsonl --parallel with a Celery worker of concurrency {args.parallel}")
    elif args.workers is not None:
        print(f"import_jsonl --workers {args.workers}")
    print(
        "| lines | file MB | import_jsonl s | lines/s | CPU s per M lines | peak RSS MiB (all at once) "
        "| WAL MB | database MB | DuckDB s | DuckDB RSS MiB | ratio | same |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    wal = "" if run.wal_bytes is None else f"{run.wal_bytes / MB:,.0f}"
    db = "" if run.database_bytes is None else f"{run.database_bytes / MB:,.0f}"
    print(
        f"| {args.lines:,} | {size_mb:,.0f} | {wall:.1f} | {args.lines / wall:,.0f} "
        f"| {total_cpu(run) * 1e6 / args.lines:.1f} | {mib(peak_sum_kib(run))} | {wal} | {db} "
        f"| {peer.wall:.1f} | {peer.peak_rss_mib:,.0f} | {wall / peer.wall:.1f}x | {'yes' if same else 'NO'} |"
    )
    print()
    print(group_report(run))
    print()
    print(server_report(run))
    print()
    print(cpu_report(run.sampler, wall))
    if not same:
        raise SystemExit("the summaries differ")


if __name__ == "__main__":
    main()
