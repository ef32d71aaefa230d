"""Generate a chat NDJSON file shaped like the shared samples, deterministically.

    python bench/gen_chat.py LINES OUT.jsonl [--seed N] [--sites N] [--duplicates FRACTION]
        [--start EPOCH --step SECONDS]

About 12% statuses, 3% exact duplicate lines (`--duplicates`), 0.5% malformed
lines, float timestamps, shuffled within a sliding window (arrivals out of
order), over 250 sites (`--sites`; a fifth of them named, the rest numeric).
Line i is timestamped `--start` + i x `--step` (default 0.05 s: 20 lines a
second) plus up to 30 s of jitter; a larger step spreads a file over months.
"""

from __future__ import annotations

import argparse
import random
import uuid

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


def generate(
    lines: int,
    out: str,
    seed: int,
    sites: int = 250,
    duplicates: float = 0.03,
    start: float = START,
    step: float = STEP,
) -> None:
    rng = random.Random(seed)
    named = sites // 5
    sites = [str(rng.randint(1, 999_999)) for _ in range(sites - named)] + [f"site-{i}" for i in range(named)]
    weights = [rng.paretovariate(1.2) for _ in sites]
    window: list[bytes] = []
    recent: list[bytes] = []
    with open(out, "wb") as f:
        for i in range(lines):
            roll = rng.random()
            if roll < 0.005:
                line = rng.choice(MALFORMED)
            elif roll < 0.005 + duplicates and recent:
                line = rng.choice(recent)
            else:
                site = rng.choices(sites, weights)[0]
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
                f.write(window.pop(rng.randrange(len(window))) + b"\n")
        rng.shuffle(window)
        f.writelines(line + b"\n" for line in window)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("lines", type=int)
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sites", type=int, default=250)
    parser.add_argument("--duplicates", type=float, default=0.03, help="fraction of lines that resend a recent one")
    parser.add_argument("--start", type=float, default=START, help="epoch seconds of the first line")
    parser.add_argument("--step", type=float, default=STEP, help="seconds between lines")
    args = parser.parse_args()
    generate(args.lines, args.out, args.seed, args.sites, args.duplicates, args.start, args.step)


if __name__ == "__main__":
    main()
