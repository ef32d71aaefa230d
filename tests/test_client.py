"""contrib/client against a live server and worker."""

from __future__ import annotations

import sys
import time

import pytest

from tests.live import REPO

sys.path.insert(0, str(REPO / "contrib" / "client"))
from switchboard_client import Client, Rejected  # noqa: E402

pytestmark = pytest.mark.slow


def events(n: int, site: str = "client-site") -> list[dict]:
    now = time.time() - 60
    statuses = [{"id": "s0", "type": "status", "from": "op", "site_id": site, "data": {"status": "online"},
                 "timestamp": now - 1}]  # fmt: skip
    messages = [
        {"id": f"m{i}", "type": "message", "from": f"v{i % 7}", "site_id": site, "data": {"message": "hé"},
         "timestamp": now + i / 1000}
        for i in range(n)
    ]  # fmt: skip
    return statuses + messages


def test_client_batches_sends_and_waits(live_stack, app_key):
    live_stack.start_web()
    live_stack.start_worker()
    client = Client(live_stack.base_url, app_key, max_batch_events=120)

    batch_ids = client.send(events(300))
    statuses = client.wait(batch_ids, timeout=60)

    assert len(batch_ids) == 3  # 301 events in batches of at most 120
    assert sum(s["accepted"] for s in statuses) == 301
    # Resending everything is harmless: all duplicates.
    again = client.wait(client.send(events(300)), timeout=60)
    assert (sum(s["accepted"] for s in again), sum(s["duplicates"] for s in again)) == (0, 301)


def test_client_raises_the_servers_reason_and_does_not_retry_4xx(live_stack):
    live_stack.start_web()
    client = Client(live_stack.base_url, "sb_00000000_wrong", retries=3, backoff_seconds=5)

    started = time.monotonic()
    with pytest.raises(Rejected) as error:
        client.send(events(1))

    assert error.value.status == 401
    assert "Unknown or revoked API key" in error.value.detail
    assert time.monotonic() - started < 5  # no backoff: a 401 is final


def test_client_retries_after_429_until_accepted(live_stack, app_key):
    live_stack.env["APP_THROTTLE_RATE"] = "2/s"
    live_stack.start_web()
    client = Client(live_stack.base_url, app_key, max_batch_events=1, backoff_seconds=0.2, retries=8)

    batch_ids = client.send(events(7))

    assert len(set(batch_ids)) == 8  # every batch got through, however often it was throttled
    throttled = live_stack.log("web.log").count("Too Many Requests")
    assert throttled >= 1, live_stack.log("web.log")
