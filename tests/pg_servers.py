"""PostgreSQL servers of a test's own, on loopback: stopped, restarted, replicated and
promoted without touching the server that other tests share (contrib/dev/services.sh).

The binaries are found as contrib/dev/services.sh finds them (SWITCHBOARD_PG_BIN, else the
newest /usr/lib/postgresql/*/bin, else initdb on PATH); `contrib/dev/services.sh install`
installs them. As root, the servers run as SWITCHBOARD_SERVICE_USER, else `postgres`, else
`switchboard-ci` (PostgreSQL refuses root), in a directory of their own under the system's
temporary folder.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from tests.live import free_port

DATABASE = "switchboard"


def pg_bin() -> Path:
    candidates = [os.environ["SWITCHBOARD_PG_BIN"]] if os.environ.get("SWITCHBOARD_PG_BIN") else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]), reverse=True)
    if initdb := shutil.which("initdb"):
        candidates.append(str(Path(initdb).resolve().parent))
    for directory in candidates:
        if all((Path(directory) / name).exists() for name in ("initdb", "pg_ctl", "postgres", "pg_basebackup")):
            return Path(directory)
    raise AssertionError("no PostgreSQL server binaries: install them with `contrib/dev/services.sh install`")


def server_user() -> str | None:
    """Whom the servers run as: None (ourselves) unless we are root; then the user
    contrib/dev/services.sh would pick."""
    if os.geteuid() != 0:
        return None
    for user in (os.environ.get("SWITCHBOARD_SERVICE_USER"), "postgres", "switchboard-ci"):
        if user:
            try:
                return pwd.getpwnam(user).pw_name
            except KeyError:
                continue
    raise AssertionError("as root, PostgreSQL needs another user to run as: set SWITCHBOARD_SERVICE_USER")


class Cluster:
    """A folder holding the servers' data directories, owned by the user they run as."""

    def __init__(self) -> None:
        self.bin = pg_bin()
        self.user = server_user()
        self.root = Path(tempfile.mkdtemp(prefix="switchboard-pg-"))
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.servers: list[Server] = []

    def run(self, program: str, *args: str, timeout: float = 60, check: bool = True) -> int:
        """Run a PostgreSQL program as the servers' user; its exit status."""
        command = [str(self.bin / program), *args]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(
            command, cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0 or not check, f"{program} {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.returncode

    def primary(self, name: str = "primary") -> Server:
        """A new server, started, with an empty database DATABASE."""
        server = Server(self, self.root / name, free_port())
        self.run("initdb", "-D", str(server.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C",
                 "--no-sync")  # fmt: skip
        with open(server.data / "postgresql.conf", "a") as conf:
            # Loopback only, no socket file. wal_level=replica (the default) and initdb's
            # pg_hba.conf let a standby stream from it. No fsync: the tests stop the server, never
            # the machine. synchronous_commit stays on: with it off, a stop in immediate mode (a
            # crash) would lose commits already acknowledged, which no client can be expected to retry.
            conf.write("listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")
            conf.write("fsync = off\nfull_page_writes = off\n")
        self.servers.append(server)
        server.start()
        server.execute(f"CREATE DATABASE {DATABASE}")
        return server

    def standby_of(self, primary: Server, name: str = "standby", synchronous: bool = True) -> Server:
        """A streaming replica of `primary` (pg_basebackup -R), started. `synchronous`: from then
        on a commit on the primary waits until the standby has it, so that a failover loses
        nothing acknowledged."""
        server = Server(self, self.root / name, free_port())
        self.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres", "-D",
                 str(server.data), "-R", "-X", "stream", "--checkpoint=fast", "--no-sync")  # fmt: skip
        self.servers.append(server)
        server.start()
        if synchronous:  # set on the primary only now: its commits would wait for a standby yet to come
            primary.execute("ALTER SYSTEM SET synchronous_standby_names = '*'", "SELECT pg_reload_conf()")
        return server

    def remove(self) -> None:
        for server in self.servers:
            if server.running():
                server.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Server:
    cluster: Cluster
    data: Path
    port: int

    @property
    def log(self) -> Path:
        return self.data.parent / f"{self.data.name}.log"

    def url(self, database: str = DATABASE) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = DATABASE):  # -> psycopg2 connection
        return psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=database, connect_timeout=5)

    def pg_ctl(self, *args: str, check: bool = True) -> int:
        return self.cluster.run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", *args, timeout=90, check=check)

    def start(self) -> None:
        self.pg_ctl("-l", str(self.log), "-o", f"-p {self.port}", "start")

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "stop")

    def promote(self) -> None:
        self.pg_ctl("promote")

    def running(self) -> bool:
        return self.pg_ctl("status", check=False) == 0

    def execute(self, *statements: str) -> None:
        """Statements run one by one outside any transaction, as the superuser."""
        conn = self.connect("postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                for sql in statements:
                    cursor.execute(sql)
        finally:
            conn.close()

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()
        finally:
            conn.close()
