"""Shared fixtures: the sample data kept in the repository (samples/) and the URL
of the test database, for tests that start real processes against it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The sample files and their expected results (chat/, interactions/, xmpp/)."""
    return SAMPLES


@pytest.fixture
def database_url(transactional_db: None) -> str:
    """A DATABASE_URL naming the test database this test runs against."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT'] or 5432}/{s['NAME']}"


@pytest.fixture
def manage(database_url: str):
    """Run `manage.py` in a child process against the test database."""

    def run(*args: str, **kwargs: object) -> subprocess.CompletedProcess:
        env = {**os.environ, "DATABASE_URL": database_url}
        return subprocess.run(
            [sys.executable, str(REPO / "manage.py"), *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            **kwargs,
        )

    return run


def redis_database(url: str, number: int) -> str:
    """The same Redis server, another numbered database."""
    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    return f"{base}/{number}"


@pytest.fixture(scope="session", autouse=True)
def own_cache_database() -> None:
    """Each pytest-xdist worker counts throttles in a Redis database of its own (1, 2, ...),
    it and the processes its tests start: tests clear the cache (FLUSHDB), which must not
    wipe another worker's counts in the middle of its test."""
    url = os.environ.get("REDIS_URL", "")
    if not url.startswith("redis://"):
        return
    from django.conf import settings
    from django.test.utils import override_settings

    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    own = redis_database(url, 1 + worker % 12)  # 13-15 are the end-to-end brokers' (tests/live.py)
    os.environ["REDIS_URL"] = own
    override_settings(CACHES={"default": {**settings.CACHES["default"], "LOCATION": own}}).enable()


@pytest.fixture(scope="session", autouse=True)
def in_process_broker() -> None:
    """Tasks enqueued by in-process API tests stay in this process (kombu's memory
    transport); end-to-end tests run gunicorn and a worker on a real broker."""
    from config.celery import app

    app.conf.broker_url = "memory://"


@pytest.fixture
def app_key(db: None) -> str:
    from ingest.keys import create_application

    return create_application("test-app")[1]


@pytest.fixture
def analyst_token(db: None) -> str:
    from ingest.analysts import create_analyst

    return create_analyst("analyst")[1]  # no password: tokens only (and no slow hashing)


@pytest.fixture
def live_stack(database_url: str, tmp_path: Path):
    """gunicorn + a Celery worker against the test database (see tests/live.py)."""
    from tests.live import LiveStack, broker_env

    env = {**os.environ, "DATABASE_URL": database_url, **broker_env(tmp_path)}
    stack = LiveStack(env=env, tmp_path=tmp_path)
    yield stack
    stack.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Keep each phase's report on the test item, for fixtures that show logs on failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


REFUSED = "refused-1"


@pytest.fixture
def refuse_one_uid():
    """A trigger that refuses one record, as a constraint or a value out of a type's range would."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF NEW.uid = '{REFUSED}' THEN RAISE EXCEPTION 'refused by a test trigger'; END IF;"
                " RETURN NEW; END $$"
            )
            cursor.execute(
                "CREATE TRIGGER refuse_one BEFORE INSERT ON events_event FOR EACH ROW EXECUTE FUNCTION refuse_one()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER refuse_one BEFORE INSERT ON events_event"
                f" WHEN NEW.uid = '{REFUSED}' BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
            )
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER refuse_one" + (" ON events_event" if connection.vendor == "postgresql" else ""))
        if connection.vendor == "postgresql":
            cursor.execute("DROP FUNCTION refuse_one()")
