"""Chunked request bodies (issue 22 item 12): `Transfer-Encoding: chunked` without a
Content-Length gets the same answer through the WSGI fast path (ingest/fastpath.py) and through
Django: accepted (202) and stored whole, 413 over the body limit (read bounded), 400 for broken
framing. Real gunicorn, serving `config.wsgi` (the fast path in front) and Django's own
application (no fast path)."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from ingest.keys import create_application
from ingest.models import RawBatch
from tests.live import REPO, free_port, wait_for

LIMIT = 64 * 1024
APPLICATIONS = {"fast path": "config.wsgi", "django": "django.core.wsgi:get_wsgi_application()"}


def record(uid: str) -> bytes:
    return orjson.dumps({"id": uid, "type": "message", "from": "v", "site_id": "s", "data": {"message": "hi"},
                         "timestamp": time.time() - 60}) + b"\n"  # fmt: skip


def post_chunked(
    port: int, key: str, pieces: list[bytes], content_type: str = "application/x-ndjson"
) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Authorization": f"Api-Key {key}", "Content-Type": content_type}
        connection.request("POST", "/api/events/", body=iter(pieces), headers=headers, encode_chunked=True)
        response = connection.getresponse()
        return response.status, orjson.loads(response.read())
    finally:
        connection.close()


@pytest.fixture(params=list(APPLICATIONS))
def server(request, database_url: str, tmp_path: Path) -> Iterator[int]:
    """gunicorn serving one of the two applications against the test database."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "MAX_BODY_BYTES": str(LIMIT),
           "DJANGO_SETTINGS_MODULE": "config.settings", "APP_THROTTLE_RATE": "100000/min"}  # fmt: skip
    log = open(tmp_path / "web.log", "ab")  # noqa: SIM115 - the child holds it
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", APPLICATIONS[request.param], "-b", f"127.0.0.1:{port}", "-w", "1"],
        cwd=REPO, env=env, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip

    def up() -> bool:
        assert web.poll() is None, (tmp_path / "web.log").read_text()
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=2).request("GET", "/api/health/")
            return True
        except OSError:
            return False

    wait_for(up, 30, "gunicorn to answer")
    yield port
    os.killpg(web.pid, signal.SIGTERM)
    web.wait(timeout=30)


def test_a_chunked_body_gets_the_same_answer_on_both_paths(server, transactional_db):
    _, key = create_application("chunked")
    body = [record("a") + record("b"), record("c"), b"", record("d")]  # an empty piece is not the end

    status, data = post_chunked(server, key, body)

    assert status == 202, data
    assert data["records"] == 4
    assert bytes(RawBatch.objects.get(pk=data["batch_id"]).body) == b"".join(body)


def test_a_chunked_body_over_the_limit_is_refused_after_a_bounded_read(server, transactional_db):
    _, key = create_application("chunked")
    piece = b" " * 16 * 1024  # blank lines: valid framing, only the size is wrong
    status, data = post_chunked(server, key, [record("a")] + [piece] * (LIMIT // len(piece) + 1))

    assert status == 413, data
    assert f"over the limit of {LIMIT} bytes" in data["detail"]
    status, data = post_chunked(server, key, [b'[{"id": ', b"1}"], "application/json")  # broken framing
    assert status == 400, data
    assert not RawBatch.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("terminated", [True, False])
def test_both_paths_read_a_chunked_body_only_from_a_server_that_ends_its_stream(terminated):
    """In process: Django's handler and the fast path in front of it, given the same WSGI environ.
    A server that does not end its stream with the body (no `wsgi.input_terminated`) would leave
    a read of it waiting for more: 411, asking for a Content-Length."""
    from django.core.handlers.wsgi import WSGIHandler

    from ingest.fastpath import wsgi
    from tests.test_outbox import wsgi_post

    _, key = create_application("chunked")
    body = record("a") + record("b")
    chunked = {"HTTP_TRANSFER_ENCODING": "chunked", "CONTENT_LENGTH": "", "CONTENT_TYPE": "application/x-ndjson"}
    if terminated:
        chunked["wsgi.input_terminated"] = True
    answers = [
        wsgi_post(body, f"Api-Key {key}", extra=chunked, application=application)
        for application in (wsgi(WSGIHandler()), WSGIHandler())
    ]

    statuses = {status for status, _, _ in answers}
    if terminated:
        assert statuses == {"202 Accepted"}
        assert [orjson.loads(data)["records"] for _, _, data in answers] == [2, 2]
        assert [bytes(b.body) for b in RawBatch.objects.order_by("pk")] == [body, body]
    else:
        assert len(statuses) == 1 and next(iter(statuses)).startswith("411")
        assert "send Content-Length" in orjson.loads(answers[1][2])["detail"]
        assert not RawBatch.objects.exists()


def post_raw(port: int, key: str, chunked_body: bytes) -> tuple[int, dict]:
    """A chunked post written byte for byte, its framing as given (http.client would fix it)."""
    head = (
        f"POST /api/events/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Api-Key {key}\r\n"
        "Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(head.encode() + chunked_body)
        response = http.client.HTTPResponse(connection)
        response.begin()
        return response.status, orjson.loads(response.read())


@pytest.mark.parametrize(
    "framing",
    [
        pytest.param(lambda body: b"zz\r\n" + body + b"\r\n0\r\n\r\n", id="size not hex"),
        pytest.param(lambda body: b"%x\r\n" % (len(body) - 5) + body + b"\r\n0\r\n\r\n", id="size too small"),
    ],
)
def test_broken_chunk_framing_is_a_400_on_both_paths(server, transactional_db, framing):
    """Issue 22 item 12, second look: gunicorn raises its own parse error from the body's read
    when a chunk's framing is broken; both paths answered 500."""
    _, key = create_application("chunked")

    status, data = post_raw(server, key, framing(record("a")))

    assert status == 400, data
    assert "chunked" in data["detail"]
    assert not RawBatch.objects.exists()
