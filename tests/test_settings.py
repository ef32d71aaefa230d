"""Settings read at start (issue 22 item 16): the embedded default's secret key file,
made by the settings of a copy of config/ so that its var/ is the test's own."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PRINT_KEY = "from django.conf import settings; print(settings.SECRET_KEY)"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of config/ (the apps beside it linked, for the settings' imports), the usual umask
    (022: new files readable by others, what the key must not inherit)."""
    shutil.copytree(REPO / "config", tmp_path / "config", ignore=shutil.ignore_patterns("__pycache__"))
    for app in ("events", "ingest", "reports"):
        (tmp_path / app).symlink_to(REPO / app)
    old = os.umask(0o022)
    yield tmp_path
    os.umask(old)


def start(checkout: Path) -> subprocess.Popen:
    """A process reading the settings as every process does at start, with no SECRET_KEY."""
    env = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONPATH": str(checkout)}
    return subprocess.Popen(
        [sys.executable, "-c", PRINT_KEY],
        cwd=checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def key_of(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return out.strip()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_secret_key_file_is_readable_by_its_owner_only(checkout):
    key = key_of(start(checkout))

    path = checkout / "var" / "secret_key"
    assert mode(path) == 0o600  # main: 0644, anyone on the machine could read it and forge sessions
    assert len(key) >= 50 and path.read_text() == key and key_of(start(checkout)) == key
    assert [p.name for p in path.parent.iterdir() if "secret_key" in p.name] == ["secret_key"]  # no temporary left


def test_an_existing_readable_key_file_is_closed_and_kept(checkout):
    path = checkout / "var" / "secret_key"
    path.parent.mkdir()
    path.write_text("an-old-key-made-by-an-earlier-version-" + "x" * 20)
    path.chmod(0o644)

    key = key_of(start(checkout))

    assert key == "an-old-key-made-by-an-earlier-version-" + "x" * 20  # sessions stay valid
    assert mode(path) == 0o600


def test_processes_starting_at_once_share_one_key(checkout):
    keys = {key_of(process) for process in [start(checkout) for _ in range(4)]}

    path = checkout / "var" / "secret_key"
    assert keys == {path.read_text()} and mode(path) == 0o600
