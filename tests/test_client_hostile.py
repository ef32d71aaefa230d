"""The client under a hostile review (issue 22, round 2): batches the server finds
too large (413) are split, redirects are never followed, exit has a deadline,
`on_error` may call back into the client, one exit hook serves every client,
and installing the client leaves nothing in the source tree.

The real Switchboard (gunicorn, tests/live.py) where it can answer; where a
peer must misbehave (redirect, hang), a small real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import atexit
import gc
import gzip
import http.server
import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from switchboard_client import Client, Redirected, Rejected, RetriesExhausted, ShutdownDeadline

from ingest.models import RawBatch
from tests.live import REPO, free_port, wait_for

SEND = str(Path(sys.executable).parent / "switchboard-send")


def events(n: int, prefix: str = "h", pad: int = 0) -> list[dict]:
    now = time.time() - 60
    return [
        {"id": f"{prefix}{i}", "type": "message", "from": "v", "site_id": "hostile",
         "data": {"message": "m" + "x" * pad}, "timestamp": now + i / 1000}
        for i in range(n)
    ]  # fmt: skip


def stored_ids() -> list[str]:
    """The ids of every event in every body the server stored, in order of storage."""
    ids = []
    for batch in RawBatch.objects.filter(source="api").order_by("pk"):
        body = bytes(batch.body)
        body = gzip.decompress(body) if batch.content_encoding == "gzip" else body
        ids += [json.loads(line)["id"] for line in body.splitlines() if line.strip()]
    return ids


# -- a misbehaving peer -------------------------------------------------------------


@dataclass
class Peer:
    """A real HTTP server on 127.0.0.1 that answers with `answer(handler)`; every
    request it receives is recorded as (method, path, headers, body)."""

    answer: Callable[[http.server.BaseHTTPRequestHandler], None]
    requests: list[tuple[str, str, dict, bytes]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def peer(answer: Callable[[http.server.BaseHTTPRequestHandler], None]) -> Iterator[Peer]:
    record = Peer(answer)

    class Handler(http.server.BaseHTTPRequestHandler):
        def handle_one(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            record.requests.append((self.command, self.path, dict(self.headers), body))
            record.answer(self)

        do_GET = do_POST = do_PUT = do_HEAD = handle_one  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    record.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()


def redirect_to(location: str, status: int) -> Callable[[http.server.BaseHTTPRequestHandler], None]:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


def accept_all(handler: http.server.BaseHTTPRequestHandler) -> None:
    body = b'{"batch_id": 1, "records": 1, "status": "received"}'
    handler.send_response(202)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def hang(handler: http.server.BaseHTTPRequestHandler) -> None:
    time.sleep(60)  # never answers within the test (a daemon thread: it ends with the process)


# -- item 7: a 413 splits the batch ---------------------------------------------------


@pytest.mark.parametrize("gzipped", [True, False], ids=["gzip", "plain"])
def test_a_batch_over_the_servers_body_limit_is_split_down_to_one_event(live_stack, app_key, gzipped):
    """Main gave the whole batch to on_error (one event too big lost 99 good ones)."""
    live_stack.env["MAX_BODY_BYTES"] = "20000"
    live_stack.start_web()
    good = events(120, pad=900)  # ~1 KB each: ~20 per body fit
    huge = events(1, prefix="huge", pad=40_000)[0]  # over the limit even alone (gzip: random-ish text)
    huge["data"]["message"] = "".join(f"{i:x}" for i in range(9000))
    stream = good[:57] + [huge] + good[57:]
    reported: list = []
    client = Client(live_stack.base_url, app_key, flush_at=100, gzip=gzipped, on_error=lambda *e: reported.append(e))

    for event in stream:
        client.enqueue(event)
    assert client.flush(timeout=60)

    assert (client.sent, client.failed) == (120, 1)
    [(error, lost)] = reported
    assert isinstance(error, Rejected) and error.status == 413
    assert lost == [huge]
    ids = stored_ids()
    assert sorted(ids) == sorted(e["id"] for e in good)  # each good event once, in bodies under the limit
    assert client.shutdown(10)


def test_more_records_than_the_servers_records_limit_are_split_and_the_limit_kept(live_stack, app_key):
    """MAX_RECORDS_PER_BODY below flush_at: the server answers 413 ("more than N records");
    main reported every batch as failed."""
    live_stack.env["MAX_RECORDS_PER_BODY"] = "7"
    live_stack.start_web()
    reported: list = []
    client = Client(live_stack.base_url, app_key, flush_at=50, flush_interval=5, on_error=lambda *e: reported.append(e))

    for event in events(120):
        client.enqueue(event)
    assert client.flush(timeout=60)

    assert (client.sent, client.failed, reported) == (120, 0, [])
    assert client.server_records_limit == 7  # later batches are cut at 7: no more refusals
    batches = list(RawBatch.objects.filter(source="api"))
    assert max(b.record_count for b in batches) <= 7
    assert sorted(stored_ids()) == sorted(e["id"] for e in events(120))
    assert client.shutdown(10)

    sync = Client(live_stack.base_url, app_key, flush_at=30)
    batch_ids = sync.send(events(100, prefix="s"))  # the synchronous call splits as well...
    batches = RawBatch.objects.filter(pk__in=batch_ids).order_by("pk")
    # ...the first 30 in halves (15 -> 8 -> 4 + 4, and 7), then 7 at a time: 16 posts, not 20
    assert [b.record_count for b in batches] == [4, 4, 7, 4, 4, 7] + [7] * 10


def test_switchboard_send_splits_a_batch_the_server_refuses_as_too_large(live_stack, app_key, tmp_path):
    """Main failed the whole batch of the command too (`refused: 413`, exit 1)."""
    live_stack.env["MAX_RECORDS_PER_BODY"] = "7"
    live_stack.env["MAX_BODY_BYTES"] = "20000"
    live_stack.start_web()
    records = events(60)
    huge = {**events(1, prefix="huge")[0], "data": {"message": "".join(f"{i:x}" for i in range(9000))}}
    path = tmp_path / "events.jsonl"
    lines = [json.dumps(e) for e in records[:30]] + [json.dumps(huge)] + [json.dumps(e) for e in records[30:]]
    path.write_text("\n".join(lines) + "\n")

    sent = subprocess.run(
        [SEND, str(path), "--url", live_stack.base_url, "--key", app_key, "--batch-events", "50", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert sent.returncode == 1  # one record was not delivered...
    assert f"{path}:31-31: refused: 413:" in sent.stderr  # ...named by its line
    assert sent.stderr.splitlines()[-1].startswith("sent 60 records in ")
    assert sorted(stored_ids()) == sorted(e["id"] for e in records)

    path.write_text("".join(json.dumps(e) + "\n" for e in events(100, prefix="c")))
    sent = subprocess.run(
        [SEND, str(path), "--url", live_stack.base_url, "--key", app_key, "--batch-events", "30", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    # The first 30 in halves (4, 4, 7, 4, 4, 7), then 7 at a time: the limit the server named is kept.
    assert sent.stderr.splitlines()[-1] == "sent 100 records in 16 batches"


# -- item 8: redirects are not followed ---------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed_and_its_events_are_reported(status):
    """Main let urllib follow a 301/302/303: the POST became a GET to the other host,
    with the key, and the events were lost; a 307/308 was an unclear error."""
    with peer(accept_all) as elsewhere, peer(redirect_to("", status)) as server:
        server.answer = redirect_to(f"{elsewhere.url}/api/events/", status)
        reported: list = []
        client = Client(server.url, "sb_secret_key", on_error=lambda *e: reported.append(e), backoff=0.01)
        sent = events(3)
        for event in sent:
            client.enqueue(event)
        assert client.flush(timeout=10)

        assert elsewhere.requests == []  # neither the key nor the events went anywhere else
        assert [(method, path) for method, path, _, _ in server.requests] == [("POST", "/api/events/")]  # not retried
        [(error, lost)] = reported
        assert isinstance(error, Redirected) and error.status == status
        assert error.location == f"{elsewhere.url}/api/events/"
        assert f"redirected to {elsewhere.url}/api/events/" in str(error)
        assert lost == sent  # handed back, not lost
        assert (client.sent, client.failed) == (0, 3)


def test_an_http_to_https_redirect_names_the_https_address():
    with peer(redirect_to("", 301)) as server:
        server.answer = redirect_to(f"https://127.0.0.1:{server.port}/api/events/", 301)
        client = Client(server.url, "sb_x", sync_mode=True)
        with pytest.raises(Redirected) as error:
            client.send(events(2))
        assert f"redirected to https://127.0.0.1:{server.port}/api/events/" in str(error.value)
        with pytest.raises(Redirected):
            client.batch(1)  # a GET is not followed either
        assert len(server.requests) == 2


def test_switchboard_send_stops_on_a_redirect_and_names_it(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events(5)))
    with peer(accept_all) as elsewhere, peer(redirect_to("", 302)) as server:
        server.answer = redirect_to(f"{elsewhere.url}/api/events/", 302)
        sent = subprocess.run(
            [SEND, str(path), str(path), "--url", server.url, "--key", "sb_secret", "--batch-events", "2"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    assert sent.returncode == 1
    assert f"redirected to {elsewhere.url}/api/events/" in sent.stderr
    assert elsewhere.requests == [] and len(server.requests) == 1  # stopped at the first
    assert sent.stderr.splitlines()[-1] == "sent 0 records in 0 batches"


def test_switchboard_send_wait_names_a_redirected_status_read(tmp_path):
    """Main: a redirect (or any refusal) while --wait polled a batch ended in a traceback."""
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events(3)))
    redirect = redirect_to("https://elsewhere.example/api/batches/1/", 301)
    with peer(lambda handler: (accept_all if handler.command == "POST" else redirect)(handler)) as server:
        command = [SEND, str(path), "--url", server.url, "--key", "sb_x", "--wait"]
        sent = subprocess.run(command, capture_output=True, text=True, timeout=60)

    assert sent.returncode == 1
    assert "Traceback" not in sent.stderr
    assert "batch 1: cannot read its status: 301:" in sent.stderr
    assert "redirected to https://elsewhere.example/api/batches/1/" in sent.stderr


# -- item 9: exit has a deadline ---------------------------------------------------------

EXITING = """
import logging, sys
from switchboard_client import Client

logging.basicConfig(format="%(levelname)s %(message)s")
url, spool, clients = sys.argv[1], sys.argv[2], int(sys.argv[3])
for n in range(clients):
    client = Client(url, "sb_key", flush_at=10, spool_path=spool)
    for i in range(25):
        client.enqueue({"id": f"x{n}-{i}", "type": "message", "from": "v", "site_id": "exit",
                        "data": {"message": "m"}, "timestamp": 1700000000 + i})
# no flush, no shutdown: the interpreter ends here, with the server down
"""


@pytest.mark.parametrize("clients", [1, 3])
def test_exit_with_the_server_down_waits_one_deadline_then_spools(live_stack, app_key, tmp_path, clients):
    """Main waited ~2 minutes per queued batch (10 retries up to 30 s apart) at exit."""
    spool = tmp_path / "undelivered.ndjson"
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, "-c", EXITING, live_stack.base_url, str(spool), str(clients)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    took = time.monotonic() - started

    assert child.returncode == 0, child.stderr
    assert 4.5 < took < 12  # the default deadline, 5 s, once for all clients
    assert "not delivered within the shutdown deadline (5s)" in child.stderr
    assert f"(appended to {spool})" in child.stderr
    spooled = [json.loads(line) for line in spool.read_text().splitlines()]
    assert sorted(e["id"] for e in spooled) == sorted(f"x{n}-{i}" for n in range(clients) for i in range(25))

    live_stack.start_web()  # the server is back: the spool file is sent as it is
    resent = subprocess.run(
        [SEND, str(spool), "--url", live_stack.base_url, "--key", app_key], capture_output=True, text=True, timeout=60
    )
    assert resent.returncode == 0, resent.stderr
    assert sorted(stored_ids()) == sorted(e["id"] for e in spooled)


def test_shutdown_against_a_hanging_server_reports_what_was_not_delivered():
    with peer(hang) as server:
        reported: list = []
        client = Client(server.url, "sb_x", flush_at=4, timeout=30, on_error=lambda *e: reported.append(e))
        sent = events(10)
        for event in sent:
            client.enqueue(event)
        wait_for(lambda: len(server.requests) == 1, 10, "the first batch in flight")

        started = time.monotonic()
        assert client.shutdown(timeout=1) is False
        assert time.monotonic() - started < 2

    [(error, lost)] = reported
    assert isinstance(error, ShutdownDeadline)
    assert lost == sent  # the batch in flight (it may have arrived: resending is harmless), then the queue
    assert (client.sent, client.failed, client.pending) == (0, 10, 0)
    with pytest.raises(RuntimeError):
        client.enqueue(sent[0])


def test_shutdown_stops_retrying_at_its_deadline(caplog):
    url = f"http://127.0.0.1:{free_port()}"  # refused: retried with backoff
    client = Client(url, "sb_x", backoff=20, max_backoff=20)
    client.enqueue(events(1)[0])
    wait_for(lambda: client.queue_size == 0, 10, "the event taken")
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="switchboard_client"):
        assert client.shutdown(timeout=0.5) is False
    assert time.monotonic() - started < 1.5
    assert "1 event(s) not delivered: not delivered within the shutdown deadline (0.5s)" in caplog.text
    assert client._thread is not None
    client._thread.join(5)
    assert not client._thread.is_alive()  # its backoff wait ended: the thread stopped too
    assert (client.sent, client.failed) == (0, 1)


# -- item 10: on_error may call back; one exit hook ------------------------------------


def test_on_error_may_call_flush_enqueue_and_shutdown_without_deadlock(caplog):
    """Main: flush() from on_error waited for its own thread forever; enqueue() into a
    full queue blocked the only thread that empties it; shutdown() raised."""
    url = f"http://127.0.0.1:{free_port()}"
    calls: list = []
    client: Client

    def on_error(error: Exception, lost: list) -> None:
        if isinstance(error, RetriesExhausted) and not calls:
            calls.append(("flush", client.flush()))
            calls.append(("enqueue", client.enqueue(lost[0])))  # the queue is full: dropped, not blocked
        elif isinstance(error, RetriesExhausted) and len(calls) == 2:
            calls.append(("shutdown", client.shutdown()))

    client = Client(
        url, "sb_x", flush_at=1, max_queue_size=1, max_retries=1, backoff=0.5, max_backoff=0.5, on_error=on_error
    )
    first, second = events(2)
    client.enqueue(first)
    wait_for(lambda: client.queue_size == 0, 10, "the first event taken")
    with caplog.at_level(logging.ERROR, logger="switchboard_client"):
        client.enqueue(second)  # fills the queue while the first is retried
        assert client.flush(timeout=10)  # main: never returned True (the thread was stuck)
        wait_for(lambda: len(calls) == 3, 10, "the second failure reported")

    assert [name for name, _ in calls] == ["flush", "enqueue", "shutdown"]
    assert dict(calls)["enqueue"] is False
    assert (client.sent, client.failed, client.dropped) == (0, 2, 1)
    assert "queue full (1 events): event dropped" in caplog.text  # logged: never back into on_error
    client._thread.join(5)
    assert not client._thread.is_alive()  # the shutdown asked from on_error took effect
    assert "on_error raised" not in caplog.text


def test_clients_share_one_exit_hook_and_are_not_kept_alive_by_it():
    """Main registered one atexit callback per client, holding each client for ever."""
    before = atexit._ncallbacks()
    clients = [Client("http://127.0.0.1:9", "sb_x") for _ in range(50)]
    assert atexit._ncallbacks() == before  # one hook, registered at import

    unused = weakref.ref(clients[0])
    used = Client("http://127.0.0.1:9", "sb_x", max_retries=0, on_error=lambda *e: None)
    used.enqueue(events(1)[0])
    assert used.shutdown(10)
    shut_down = weakref.ref(used)
    del clients, used
    gc.collect()
    assert unused() is None and shut_down() is None


def test_a_client_dropped_without_shutdown_is_collected_once_its_events_are_delivered():
    """Main: the sender thread held its client for ever, idle or not."""
    with peer(accept_all) as server:
        client = Client(server.url, "sb_x", flush_interval=0.05)
        client.enqueue(events(1)[0])
        assert client.flush(timeout=10)
        thread, dropped = client._thread, weakref.ref(client)
        del client
        wait_for(lambda: gc.collect() is not None and dropped() is None, 10, "the idle client collected")
        thread.join(5)
        assert not thread.is_alive()
        assert len(server.requests) == 1


# -- item 18: installing leaves no build output ------------------------------------------


def test_installing_the_client_leaves_nothing_in_the_source_tree(tmp_path):
    """Main (setuptools) left contrib/client/build/ untracked and an egg-info folder."""
    source = REPO / "contrib" / "client"

    def untracked() -> list[str]:
        status = subprocess.run(
            ["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "--", str(source)],
            cwd=REPO, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return [line for line in status.stdout.splitlines() if not line.endswith((".pyc", "/__pycache__/"))]

    before = untracked()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(tmp_path / "site"), str(source)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip

    assert untracked() == before  # no build/, no *.egg-info, not even ignored ones
    assert (tmp_path / "site" / "switchboard_client" / "client.py").exists()
    assert (tmp_path / "site" / "bin" / "switchboard-send").exists()


def test_the_spool_file_is_readable_by_its_owner_only(tmp_path):
    """Issue 22 item 9, second look: the spool holds the events themselves (messages, actors), yet
    was created with the process's umask (0644 under the usual 022), readable by every local user."""
    spool = tmp_path / "undelivered.ndjson"
    previous = os.umask(0o022)
    try:
        client = Client(f"http://127.0.0.1:{free_port()}", "sb_x", backoff=20, spool_path=spool)
        sent = events(3)
        for event in sent:
            client.enqueue(event)
        assert client.shutdown(timeout=0.5) is False
    finally:
        os.umask(previous)

    assert stat.S_IMODE(spool.stat().st_mode) == 0o600
    assert [json.loads(line) for line in spool.read_text().splitlines()] == sent
