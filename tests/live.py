"""A live Switchboard for end-to-end tests: gunicorn and a Celery worker as real
processes, sharing the test database and a real broker (Redis when configured,
else a filesystem queue, as in the embedded default)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# A Redis database of its own per xdist worker, flushed per test, so that no stale
# message reaches a worker, and no worker of a concurrent test takes this test's wake-ups.
E2E_REDIS_DB = 13 + int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broker_env(tmp_path: Path) -> dict[str, str]:
    """Broker settings for the child processes: Redis if CELERY_BROKER_URL names one, else files."""
    url = os.environ.get("CELERY_BROKER_URL", "")
    if url.startswith("redis://"):
        import redis

        base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
        url = f"{base}/{E2E_REDIS_DB}"
        redis.Redis.from_url(url).flushdb()
        return {"CELERY_BROKER_URL": url}
    queue = tmp_path / "queue"
    queue.mkdir()
    return {"CELERY_BROKER_URL": "filesystem://", "QUEUE_DIR": str(queue)}


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> object:
        return json.loads(self.body)


@dataclass
class LiveStack:
    env: dict[str, str]
    tmp_path: Path
    port: int = field(default_factory=free_port)
    web: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen:
        out = open(self.tmp_path / log, "ab")  # noqa: SIM115 - the child holds it
        # A session of its own: killing the group takes the worker's pool children too.
        return subprocess.Popen(args, cwd=REPO, env=self.env, stdout=out, stderr=out, start_new_session=True)

    def start_web(self, workers: int = 2) -> None:
        self.web = self._spawn(
            [sys.executable, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{self.port}", "-w", str(workers)],
            "web.log",
        )
        wait_for(self._web_up, 30, "gunicorn to answer")

    def _web_up(self) -> bool:
        assert self.web and self.web.poll() is None, self.log("web.log")
        try:
            return self.request("GET", "/api/health/").status in (200, 503)
        except OSError:
            return False

    def start_worker(self) -> None:
        self.worker = self._spawn(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel=warning", "--concurrency=2",
             "--without-gossip", "--without-mingle", "-n", f"e2e-{self.port}-{time.monotonic_ns()}@%h"],
            "worker.log",
        )  # fmt: skip

    def stop_worker(self, sig: int = signal.SIGTERM) -> None:
        if self.worker and self.worker.poll() is None:
            os.killpg(self.worker.pid, sig)
            self.worker.wait(timeout=60)
        self.worker = None

    def stop(self) -> None:
        self.stop_worker(signal.SIGKILL)
        if self.web and self.web.poll() is None:
            os.killpg(self.web.pid, signal.SIGTERM)
            self.web.wait(timeout=30)

    def log(self, name: str) -> str:
        path = self.tmp_path / name
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        req = urllib.request.Request(self.base_url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return Response(resp.status, resp.read(), dict(resp.headers))
        except urllib.error.HTTPError as error:
            return Response(error.code, error.read(), dict(error.headers))

    def post_events(self, key: str, lines: list[bytes], *, gzipped: bool = False) -> Response:
        body = b"".join(lines)
        headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/x-ndjson"}
        if gzipped:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return self.request("POST", "/api/events/", body, headers)
