#!/usr/bin/env python3
"""Independent echo round-trip check for hubbub-load's latency figures.

Uses the `websockets` package (its own framing, its own event loop) to send N
messages of SIZE bytes at RATE per second on one connection, timing each echo
with time.perf_counter_ns, and prints the same percentiles hubbub-load does.

    pip install websockets
    python3 loadtest/scripts/independent_rtt.py ws://127.0.0.1:PORT/echo --rate 50 --count 500
"""
import argparse
import asyncio
import time

import websockets


def pct(sorted_ms, q):
    i = min(len(sorted_ms) - 1, max(0, int(round(q * len(sorted_ms) + 0.5)) - 1))
    return sorted_ms[i]


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--size", type=int, default=64)
    a = p.parse_args()
    body = "x" * a.size
    rtts = []
    async with websockets.connect(a.url, compression=None, max_size=None) as ws:
        start = time.perf_counter()
        for i in range(a.count):
            due = start + i / a.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t0 = time.perf_counter_ns()
            await ws.send(body)
            echo = await ws.recv()
            rtts.append((time.perf_counter_ns() - t0) / 1e6)
            assert echo == body
    s = sorted(rtts)
    print(f"count {len(s)}  p50 {pct(s, .5):.3f}  p90 {pct(s, .9):.3f}  p99 {pct(s, .99):.3f}  max {s[-1]:.3f} ms")


asyncio.run(main())
