"""One-event batches put straight into the outbox at a fixed rate, as the web tier does after
a 202 (ingest.batches.receive_batch: one insert and a wake-up), for `http_bench.py saturate
--direct`: the worker's capacity measured without gunicorn's CPU in the way.

    python bench/outbox_feed.py APP_NAME RATE SECONDS SEED

Open loop: each insert is due at start + i / RATE; the ones due are inserted together every
TICK seconds in one transaction (gunicorn's concurrent posts share their commits' fsync the
same way; one process committing each insert alone would measure the disk, not the worker).
Prints the number inserted and the seconds it took.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
TICK = 0.01


def main(app_name: str, rate: float, seconds: float, seed: int) -> None:
    import django

    django.setup()
    from django.db import connection, transaction
    from http_load import live_events

    from ingest.batches import receive_batch
    from ingest.models import Application

    app = Application.objects.get(name=app_name)
    bodies = live_events(int(rate * seconds), seed, time.time(), rate)
    connection.ensure_connection()
    start = time.perf_counter()
    sent = 0
    while sent < len(bodies):
        time.sleep(TICK)
        due = min(len(bodies), int((time.perf_counter() - start) * rate) + 1)
        with transaction.atomic():  # the wake-up follows the commit
            for body in bodies[sent:due]:
                receive_batch(app, body, "application/json", "", 1)
        sent = due
    print(len(bodies), f"{time.perf_counter() - start:.3f}")


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
