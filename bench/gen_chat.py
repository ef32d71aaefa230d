"""Generate a chat NDJSON file shaped like the shared samples, deterministically.

    python bench/gen_chat.py LINES OUT.jsonl [--seed N] [--sites N] [--duplicates FRACTION]
        [--start EPOCH --step SECONDS] [--processes N --block-lines N]

About 12% statuses, 3% exact duplicate lines (`--duplicates`), 0.5% malformed
lines, float timestamps, shuffled within a sliding window (arrivals out of
order), over 250 sites (`--sites`; a fifth of them named, the rest numeric).
Line i is timestamped `--start` + i x `--step` (default 0.05 s: 20 lines a
second) plus up to 30 s of jitter; a larger step spreads a file over months.

With `--block-lines`, the file is made of blocks of that many lines, each from
its own seed (`SEED:BLOCK`), so that `--processes` can generate them in
parallel: the file depends on the seed and the block size, not on the number
of processes. The writer holds at most two blocks per process in memory.
Without it, one sequence over the whole file (the files of earlier runs).
"""

from __future__ import annotations

import argparse
import random
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import accumulate

import orjson

WORDS = [
    "hi",
    "hello",
    "help",
    "price",
    "refund",
    "order",
    "shipping",
    "thanks",
    "ok",
    "where",
    "how",
    "when",
    "你好",
    "ünïcödé",
]
MALFORMED = [b"not json at all", b"[1, 2, 3]", b'{"id": "x", "type": "message"', b'"just a string"']
START = 1_429_000_000.0  # epoch seconds of the first line (April 2015)
STEP = 0.05  # seconds between lines


def site_table(rng: random.Random, sites: int) -> tuple[list[str], list[float]]:
    """The site ids and their cumulative Pareto weights (a few sites get most lines)."""
    named = sites // 5
    names = [str(rng.randint(1, 999_999)) for _ in range(sites - named)] + [f"site-{i}" for i in range(named)]
    return names, list(accumulate(rng.paretovariate(1.2) for _ in names))


def chat_lines(
    rng: random.Random,
    first: int,
    count: int,
    sites: list[str],
    cum_weights: list[float],
    duplicates: float,
    start: float = START,
    step: float = STEP,
) -> Iterator[bytes]:
    """Lines `first` .. `first + count - 1` of the file, newline included, shuffled in a window."""
    window: list[bytes] = []
    recent: list[bytes] = []
    for i in range(first, first + count):
        roll = rng.random()
        if roll < 0.005:
            line = rng.choice(MALFORMED)
        elif roll < 0.005 + duplicates and recent:
            line = rng.choice(recent)
        else:
            # cum_weights: `choices` would otherwise add up every site's weight for each line.
            site = rng.choices(sites, cum_weights=cum_weights)[0]
            ts = round(start + i * step + rng.random() * 30, 3)
            if rng.random() < 0.12:
                record = {
                    "id": str(uuid.UUID(int=rng.getrandbits(128))),
                    "type": "status",
                    "from": f"operator{rng.randint(1, 8)}",
                    "site_id": site,
                    "data": {"status": rng.choice(("online", "online", "offline"))},
                    "timestamp": ts,
                }
            else:
                words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7)))
                record = {
                    "id": str(uuid.UUID(int=rng.getrandbits(128))),
                    "type": "message",
                    "from": f"visitor{rng.randint(1, 20_000)}",
                    "site_id": site,
                    "data": {"message": words},
                    "timestamp": ts,
                }
            line = orjson.dumps(record)
            recent.append(line)
            if len(recent) > 1000:
                recent.pop(rng.randrange(len(recent)))
        window.append(line)
        if len(window) >= 2000:
            yield window.pop(rng.randrange(len(window))) + b"\n"
    rng.shuffle(window)
    yield from (line + b"\n" for line in window)


def _block(
    seed: int, sites: int, duplicates: float, start: float, step: float, block: int, first: int, count: int
) -> bytes:
    names, cum_weights = site_table(random.Random(seed), sites)
    rng = random.Random(f"{seed}:{block}")
    return b"".join(chat_lines(rng, first, count, names, cum_weights, duplicates, start, step))


def generate(
    lines: int,
    out: str,
    seed: int,
    sites: int = 250,
    duplicates: float = 0.03,
    start: float = START,
    step: float = STEP,
    block_lines: int = 0,
    processes: int = 1,
) -> None:
    if not block_lines:
        rng = random.Random(seed)
        names, cum_weights = site_table(rng, sites)
        with open(out, "wb") as f:
            f.writelines(chat_lines(rng, 0, lines, names, cum_weights, duplicates, start, step))
        return
    starts = range(0, lines, block_lines)
    with open(out, "wb") as f, ProcessPoolExecutor(processes) as pool:
        pending: deque[Future[bytes]] = deque()
        for block, first in enumerate(starts):
            count = min(block_lines, lines - first)
            pending.append(pool.submit(_block, seed, sites, duplicates, start, step, block, first, count))
            if len(pending) >= 2 * processes:
                f.write(pending.popleft().result())
        while pending:
            f.write(pending.popleft().result())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("lines", type=int)
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sites", type=int, default=250)
    parser.add_argument("--duplicates", type=float, default=0.03, help="fraction of lines that resend a recent one")
    parser.add_argument("--start", type=float, default=START, help="epoch seconds of the first line")
    parser.add_argument("--step", type=float, default=STEP, help="seconds between lines")
    parser.add_argument("--block-lines", type=int, default=0, help="lines per independently seeded block")
    parser.add_argument("--processes", type=int, default=1, help="with --block-lines: blocks generated at once")
    args = parser.parse_args()
    if args.processes > 1 and not args.block_lines:
        parser.error("--processes needs --block-lines")
    generate(
        args.lines, args.out, args.seed, args.sites, args.duplicates, args.start, args.step,
        args.block_lines, args.processes,
    )  # fmt: skip


if __name__ == "__main__":
    main()
