"""Shared fixtures: the shared sample data and the URL of the test database,
for tests that start real processes against it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SWITCHBOARD_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"shared sample data not found at {SHARED_DATA}"
    return SHARED_DATA


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
