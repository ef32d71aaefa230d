"""Client clocks end to end: the client library stamps each attempt with its send time
(`X-Sent-At`), gunicorn stores it with the body, a Celery worker places the events by the
receive time, and the summary endpoint classifies a skewed visitor's messages by their
corrected time (SPEC §10). A client's clock is skewed by replacing its `send_time` (the
one place it reads the clock), as a machine with a wrong clock would read it.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from switchboard_client import Client, transport

from events.models import Event
from ingest.models import RawBatch
from tests import chat_oracle
from tests.live import wait_for
from tests.test_clock_skew import MINUTE, chat, operator_window_and_skewed_visitors
from tests.test_worker_e2e import summary_text

pytestmark = pytest.mark.slow


def test_a_skewed_clients_messages_are_classified_by_their_corrected_time(
    live_stack, app_key, analyst_token, monkeypatch
):
    live_stack.start_web()
    live_stack.start_worker()
    now = time.time()
    operator, visitors = operator_window_and_skewed_visitors(now)
    ahead, behind = ({k: v for k, v in r.items() if k != "sentAt"} for r in visitors)  # the header's job here
    client = Client(live_stack.base_url, app_key, sync_mode=True)

    client.send(operator)  # a right clock: taken as given
    monkeypatch.setattr(transport, "send_time", lambda: time.time() + 8 * MINUTE)
    client.send([ahead])
    monkeypatch.setattr(transport, "send_time", lambda: time.time() - 8 * MINUTE)
    client.send([behind])
    wait_for(lambda: RawBatch.objects.filter(status="done").count() == 3, 60, "three batches")

    batches = list(RawBatch.objects.order_by("pk"))
    assert batches[0].sent_at is not None and all(b.rejected == 0 for b in batches)
    placed = operator + [
        {**record, "timestamp": batch.created_at.timestamp() - (batch.sent_at.timestamp() - record["timestamp"])}
        for record, batch in ((ahead, batches[1]), (behind, batches[2]))
    ]
    expected = chat_oracle.summary_lines(chat_oracle.read_values(placed, time.time()).accepted)
    assert summary_text(live_stack, analyst_token).splitlines() == expected
    assert [Event.objects.get(uid=uid).client_timestamp for uid in ("on", "a", "b")] == [
        None,
        ahead["timestamp"],
        behind["timestamp"],
    ]
    on, off = (Event.objects.get(uid=uid).ts for uid in ("on", "off"))
    assert on <= Event.objects.get(uid="a").ts < off  # a chat, though its clock said after the window
    assert not on <= Event.objects.get(uid="b").ts < off  # an e-mail, though its clock said inside


class FlakyServer(ThreadingHTTPServer):
    """Answers 503 to the first post and 202 to the next, keeping each post's headers and body."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FlakyHandler)
        self.posts: list[tuple[str, bytes]] = []


class FlakyHandler(BaseHTTPRequestHandler):
    server: FlakyServer

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append((self.headers["X-Sent-At"], body))
        status, answer = (503, b'{"detail": "busy"}') if len(self.server.posts) == 1 else (202, b'{"batch_id": 1}')
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


def test_each_attempt_is_stamped_with_its_own_send_time():
    server = FlakyServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = Client(f"http://127.0.0.1:{server.server_port}", "sb_x", sync_mode=True, backoff=0.2)
        before = time.time()
        client.send([chat("r1", "message", "v", before - 1)])
        after = time.time()
    finally:
        server.shutdown()

    (first, body), (second, body_again) = server.posts
    assert body == body_again  # the same bytes: the server de-duplicates a resend
    assert before <= float(first) < float(second) <= after  # stamped anew after the backoff
