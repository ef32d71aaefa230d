"""Commands piped into `head`: when the reader of stdout goes away, `manage.py` ends quietly
(status 141, as a shell reports a command ended by SIGPIPE) instead of with a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.conftest import REPO

pytestmark = pytest.mark.slow

COMMANDS = [
    ("site_summary",),
    ("room_summary",),
    ("export_events",),
    ("replay_rejections", "--dry-run"),
    ("import_jsonl", "--summary", "{edge}"),
    ("help",),  # Django's own commands too
]


@pytest.fixture
def imported(database_url: str, sample_data: Path) -> str:
    for name in ("chat/small.jsonl", "xmpp/chatid_sample.json"):
        call_command("import_jsonl", str(sample_data / name))
    return database_url


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: args[0])
def test_a_closed_pipe_ends_a_command_quietly(imported, sample_data, args):
    args = [a.format(edge=sample_data / "chat/edge.jsonl") for a in args]
    env = {**os.environ, "DATABASE_URL": imported}
    process = subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    process.stdout.close()  # the reader is gone before the first line is written, as after `head -0`
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr and "Exception ignored" not in stderr, stderr


def test_other_broken_pipes_are_still_errors(database_url):
    """Only a closed stdout is quiet: with stdout open the command's own error is shown."""
    script = (
        "import sys, django, manage\n"
        "django.setup()\n"
        "def broken(self, *a, **k): raise BrokenPipeError('a socket, not stdout')\n"
        "from reports.management.commands import site_summary\n"
        "site_summary.Command.handle = broken\n"
        "sys.argv = ['manage.py', 'site_summary']; manage.main()\n"
    )
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "config.settings"}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 1 and "BrokenPipeError: a socket, not stdout" in result.stderr
