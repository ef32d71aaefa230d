"""CPU seconds and memory of process trees and of the PostgreSQL server, sampled from /proc.

`wait4`'s rusage gives a finished child's CPU and the largest RSS of its tree, but not
which process spent what, nor the memory of the tree at once, nor the database server's
share. The benchmark samples /proc a few times a second instead (Linux only):

- per process of each watched tree: its last CPU time and its peak RSS;
- the tree's peak RSS summed over its processes at one sample;
- the PostgreSQL server's CPU over the run, per backend and for its background processes
  (walwriter, checkpointer, ...), counting backends that ended (the postmaster's cutime).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def _stat(pid: int) -> tuple[str, float, float, int] | None:
    """(name, own CPU s, reaped children's CPU s, RSS KiB) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    own = (int(fields[11]) + int(fields[12])) / TICKS
    reaped = (int(fields[13]) + int(fields[14])) / TICKS
    return cmdline, own, reaped, int(fields[21]) * PAGE_KIB


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    except OSError:
        pass
    return found


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


@dataclass
class ProcessUse:
    name: str
    cpu: float = 0.0
    cpu_at_start: float = 0.0
    peak_rss_kib: int = 0
    alive: bool = True

    @property
    def used(self) -> float:
        return self.cpu - self.cpu_at_start


@dataclass
class TreeUse:
    processes: dict[int, ProcessUse] = field(default_factory=dict)
    peak_sum_rss_kib: int = 0


class Sampler:
    """Samples the trees of `roots` (added while running with `watch`) and the PostgreSQL
    server whose postmaster is `postmaster` (if any) until `stop`."""

    def __init__(self, postmaster: int | None, interval: float = 0.2) -> None:
        self.postmaster = postmaster
        self.interval = interval
        self.trees: dict[str, tuple[int, TreeUse]] = {}
        self.server = TreeUse()
        self.server_reaped_at_start = 0.0
        self.server_reaped = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        if postmaster:
            self._sample_server(first=True)

    def watch(self, label: str, pid: int) -> None:
        self.trees[label] = (pid, TreeUse())

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.postmaster:
            self._sample_server()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for root, use in list(self.trees.values()):
                total = 0
                for pid in _tree(root):
                    stat = _stat(pid)
                    if stat is None:
                        continue
                    name, own, _, rss = stat
                    proc = use.processes.setdefault(pid, ProcessUse(name))
                    proc.cpu, proc.peak_rss_kib = own, max(proc.peak_rss_kib, rss)
                    total += rss
                use.peak_sum_rss_kib = max(use.peak_sum_rss_kib, total)
            if self.postmaster:
                self._sample_server()

    def _sample_server(self, first: bool = False) -> None:
        stat = _stat(self.postmaster)
        if stat is None:
            return
        _, own, reaped, rss = stat
        if first:
            self.server_reaped_at_start = reaped
        self.server_reaped = reaped
        for proc in self.server.processes.values():
            proc.alive = False
        for pid in [self.postmaster, *_children(self.postmaster)]:
            s = _stat(pid)
            if s is None:
                continue
            name, cpu, _, rss = s
            if pid not in self.server.processes:
                # A process already running at the start counts from there; a new one from 0.
                self.server.processes[pid] = ProcessUse(name, cpu, cpu if first else 0.0)
            proc = self.server.processes[pid]
            proc.name = proc.name or name  # a backend's title changes; an ending one's is empty
            proc.cpu, proc.peak_rss_kib, proc.alive = cpu, max(proc.peak_rss_kib, rss), True

    def server_cpu(self) -> tuple[float, list[tuple[str, float]]]:
        """The server's CPU seconds over the run: the total (ended backends included) and the
        processes that used a second or more, largest first."""
        # An ended backend's CPU is in the postmaster's reaped children's time.
        live = sum(p.used for p in self.server.processes.values() if p.alive)
        total = live + (self.server_reaped - self.server_reaped_at_start)
        parts = sorted(((p.name, p.used) for p in self.server.processes.values() if p.used >= 1.0), key=lambda x: -x[1])
        return total, parts


def postmaster_pid(database_url: str) -> int | None:
    """The PostgreSQL server's postmaster, if it runs on this machine (a backend's parent)."""
    if not database_url.startswith("postgres"):
        return None
    import psycopg2

    with psycopg2.connect(database_url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    conn.close()
    try:
        ppid = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None  # another machine
    return ppid


def exited_cpu(pid: int) -> tuple[float, float] | None:
    """(own CPU s, reaped children's CPU s) of an exited, not yet reaped child (a zombie keeps
    both in /proc): the command's own share, and its validating workers' that it joined."""
    stat = _stat(pid)
    return None if stat is None else (stat[1], stat[2])
