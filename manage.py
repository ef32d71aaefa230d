#!/usr/bin/env python
import os
import select
import sys


def stdout_broken() -> bool:
    """Whether stdout is a pipe whose reader has gone (Linux reports POLLERR on its write end)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll(), or stdout is no file
        return True


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
    except BrokenPipeError:
        if not stdout_broken():  # a broken pipe of something else (a socket?): not ours to hide
            raise
        # The reader of our output went away (`manage.py site_summary | head`): stop quietly,
        # as Unix tools do. Python flushes stdout once more at exit: let that go nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(128 + 13)  # what a shell reports for a command ended by SIGPIPE


if __name__ == "__main__":
    main()
