"""Load generators for bench/http_bench.py: live-style chat events, an open-loop
client (requests sent on a fixed schedule whatever the answers' latency) and wrk.

Live traffic as the issue describes it: one JSON chat event per POST, 50 sites,
one status per ten messages, timestamps close to now and mostly in order.
"""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

SITES = 50
OPERATORS_PER_SITE = 3


def live_events(count: int, seed: int, start_ts: float, rate: float) -> list[bytes]:
    """`count` chat events as JSON objects, one status per ten messages, over `count / rate` seconds."""
    rng = random.Random(seed)
    events = []
    for i in range(count):
        site = f"live-{rng.randrange(SITES):02d}"
        # Mostly in order: up to 2 s of jitter, and one in 50 up to a minute late.
        ts = start_ts + i / rate + rng.random() * 2 - (rng.random() * 60 if rng.random() < 0.02 else 0)
        uid = f"{seed}-{i}"
        if i % 11 == 10:
            record = {
                "id": uid, "type": "status", "from": f"op{rng.randrange(OPERATORS_PER_SITE)}", "site_id": site,
                "data": {"status": "online" if rng.random() < 0.6 else "offline"}, "timestamp": round(ts, 3),
            }  # fmt: skip
        else:
            record = {
                "id": uid, "type": "message", "from": f"visitor{rng.randrange(5000)}", "site_id": site,
                "data": {"message": "hello, is anyone there?"}, "timestamp": round(ts, 3),
            }  # fmt: skip
        events.append(orjson.dumps(record))
    return events


# --- open loop ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    scheduled: float  # perf_counter time the request was due
    end: float
    status: int
    body: bytes

    @property
    def latency_ms(self) -> float:
        return (self.end - self.scheduled) * 1000


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    body = await reader.readexactly(int(match.group(1))) if match else b""
    return status, body


async def _connection(port: int, head: bytes, jobs: asyncio.Queue, calls: list[Call]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (job := await jobs.get()) is not None:
            scheduled, body = job
            for attempt in (1, 2):
                try:
                    writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
                    status, data = await _read_response(reader)
                    break
                except (asyncio.IncompleteReadError, ConnectionError):
                    # A keep-alive connection the server closed (max_requests): reconnect and resend.
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    if attempt == 2:
                        raise
            calls.append(Call(scheduled, time.perf_counter(), status, data))
    finally:
        writer.close()


async def _open_loop(port: int, headers: dict[str, str], bodies: list[bytes], rate: float, connections: int):
    head = (
        "POST /api/events/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "Content-Length: "
    ).encode()
    jobs: asyncio.Queue = asyncio.Queue()
    calls: list[Call] = []
    tasks = [asyncio.create_task(_connection(port, head, jobs, calls)) for _ in range(connections)]
    start = time.perf_counter()
    for i, body in enumerate(bodies):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        jobs.put_nowait((due, body))
    for _ in tasks:
        jobs.put_nowait(None)
    await asyncio.gather(*tasks)
    return calls


def open_loop(port: int, headers: dict[str, str], bodies: list[bytes], rate: float, connections: int) -> list[Call]:
    """POST each body at its scheduled time (`rate` per second); latency counts from that time,
    so a slow server is not hidden by the client waiting (no coordinated omission)."""
    return asyncio.run(_open_loop(port, headers, bodies, rate, connections))


# --- wrk ---------------------------------------------------------------------------

WRK_SCRIPT = """
-- One chat event per request: 50 sites, one status per ten messages, ids unique per thread.
counter = 0  -- global: done() reads it from each thread
local prefix = ""
local threads = {}
local n = 0

function setup(thread)
  n = n + 1
  thread:set("prefix", "%(run)s-t" .. n)
  table.insert(threads, thread)
end

function init(args)
  prefix = wrk.thread:get("prefix")
  math.randomseed(os.time() + #prefix)
end

function request()
  counter = counter + 1
  local site = string.format("live-%%02d", math.random(0, 49))
  local ts = os.time() + math.random() * 2
  local body
  if counter %% 11 == 0 then
    local status = (math.random() < 0.6) and "online" or "offline"
    body = string.format('{"id":"%%s-%%d","type":"status","from":"op%%d","site_id":"%%s",'
      .. '"data":{"status":"%%s"},"timestamp":%%.3f}', prefix, counter, math.random(0, 2), site, status, ts)
  else
    body = string.format('{"id":"%%s-%%d","type":"message","from":"visitor%%d","site_id":"%%s",'
      .. '"data":{"message":"hello, is anyone there?"},"timestamp":%%.3f}',
      prefix, counter, math.random(0, 4999), site, ts)
  end
  return wrk.format("POST", "/api/events/", {["Authorization"] = "Api-Key %(key)s",
    ["Content-Type"] = "application/json"}, body)
end

function done(summary, latency, requests)
  local sent = 0
  for _, t in ipairs(threads) do sent = sent + t:get("counter") end
  io.write(string.format("SENT %%d\\n", sent))
  for _, p in ipairs({50, 90, 99, 99.9}) do
    io.write(string.format("PCT %%g %%.3f\\n", p, latency:percentile(p) / 1000))
  end
  io.write(string.format("NON2XX %%d\\n", summary.errors.status))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int  # completed
    sent: int  # including the ones still in flight when wrk stopped
    non_2xx: int
    seconds: float
    percentiles_ms: dict[float, float]
    output: str

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def run_wrk(port: int, key: str, run: str, workdir: Path, seconds: int, connections: int, threads: int) -> WrkResult:
    script = workdir / "single_event.lua"
    script.write_text(WRK_SCRIPT % {"run": run, "key": key})
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script),
         f"http://127.0.0.1:{port}/api/events/"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    requests, wall = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out).group(1, 2)
    unit = re.search(r"\d+ requests in [\d.]+(m?s)", out).group(1)
    return WrkResult(
        requests=int(requests),
        sent=int(re.search(r"SENT (\d+)", out).group(1)),
        non_2xx=int(re.search(r"NON2XX (\d+)", out).group(1)),
        seconds=float(wall) / (1000 if unit == "ms" else 1),
        percentiles_ms={float(p): float(v) for p, v in re.findall(r"PCT ([\d.]+) ([\d.]+)", out)},
        output=out,
    )
