"""Events as NDJSON lines, and lines cut into request bodies."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator


def encode(event: object) -> bytes:
    """One event as one NDJSON line (no newline). Raises TypeError/ValueError for what
    JSON cannot carry (objects it does not know, NaN), so the caller hears at once."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def bodies(lines: Iterable[bytes], max_events: int | Callable[[], int], max_bytes: int) -> Iterator[list[bytes]]:
    """Consecutive groups of lines, each at most `max_events` lines and `max_bytes`
    bytes as a body (newlines included); a line bigger than `max_bytes` goes alone.
    `max_events` may be a function, asked per line: a limit the server states
    while the groups are being sent applies to the next ones."""
    most = max_events if callable(max_events) else lambda: max_events
    group: list[bytes] = []
    size = 0
    for line in lines:
        if group and (len(group) >= most() or size + len(line) + 1 > max_bytes):
            yield group
            group, size = [], 0
        group.append(line)
        size += len(line) + 1
    if group:
        yield group


def join(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"
