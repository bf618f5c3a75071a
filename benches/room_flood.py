#!/usr/bin/env python3
"""One room client floods, everyone else must not notice: the figures of issues 11 and 12.

On a fresh `hubbub --shards 2` on loopback:

- 10 reading members join `/room/x` (spread over both shards by the kernel's SO_REUSEPORT);
- one flooder joins `/room/x` and writes empty binary frames as fast as its socket takes them for
  `--flood-secs`, never reading;
- while it floods, a well-behaved member sends `--messages` numbered text messages to the room at
  100/s, and 50 `/ws` clients each send `subscribe` to their own channel.

Reported: the server's `inbox_drops` (from `/api/stats`) over the run, how many of the 50
subscribes got their reply within 5 s, how many of the numbered messages each reading member got
(in order or not), how each member's connection ended, and how the flooder's ended (close code
and reason), plus the server's `disconnects` by reason.

    cargo build --release --bins
    .venv/bin/python benches/room_flood.py            # about 15 s

Needs the Python `websockets` package (the test venv has it). Every client and the flood are
bounded in time; the server is stopped by its PID.
"""

import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "room-flood-bench-key"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stats(admin):
    req = urllib.request.Request(f"http://{admin}/api/stats", headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)["total"]


def flood(port, secs):
    """Handshake on /room/x, then masked empty binary frames until `secs` pass; never reads."""
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /room/x HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("flooder: no handshake answer")
        head += chunk
    burst = b"\x82\x80\x00\x00\x00\x00" * 1000
    s.settimeout(0.2)
    sent, end = 0, time.monotonic() + secs
    while time.monotonic() < end:
        try:
            s.sendall(burst)
            sent += 1000
        except socket.timeout:
            continue
        except OSError:
            break
    return s, sent


async def member(url, want, deadline):
    """Reads numbered messages until `deadline`; returns (numbers seen, how it ended)."""
    seen = []
    ended = "open at the end"
    try:
        async with websockets.connect(url, max_size=None, open_timeout=5) as ws:
            while time.monotonic() < deadline and len(seen) < want:
                try:
                    msg = await asyncio.wait_for(ws.recv(), timeout=max(0.05, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    break
                if isinstance(msg, str) and msg.startswith("m"):
                    seen.append(int(msg[1:]))
    except websockets.ConnectionClosed as e:
        rcvd = e.rcvd
        ended = f"closed {rcvd.code} {rcvd.reason!r}" if rcvd else "closed without a close frame"
    return seen, ended


async def subscriber(url, i, results):
    try:
        async with websockets.connect(url, open_timeout=5) as ws:
            await ws.send(json.dumps({"id": 1, "method": "subscribe", "params": {"channel": f"c{i}"}}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), timeout=5))
            results.append("result" in reply)
    except (asyncio.TimeoutError, OSError, websockets.ConnectionClosed):
        results.append(False)


async def publisher(url, count):
    async with websockets.connect(url, open_timeout=5) as ws:
        for n in range(count):
            await ws.send(f"m{n}")
            await asyncio.sleep(0.01)
        # Read what comes back until the last one, so this member is no slow consumer.
        try:
            while True:
                msg = await asyncio.wait_for(ws.recv(), timeout=3)
                if msg == f"m{count - 1}":
                    break
        except (asyncio.TimeoutError, websockets.ConnectionClosed):
            pass


async def scenario(port, opts):
    base = f"ws://127.0.0.1:{port}"
    deadline = time.monotonic() + opts.flood_secs + 8
    members = [asyncio.create_task(member(f"{base}/room/x", opts.messages, deadline)) for _ in range(10)]
    await asyncio.sleep(0.5)
    loop = asyncio.get_running_loop()
    flooding = loop.run_in_executor(None, flood, port, opts.flood_secs)
    await asyncio.sleep(0.5)
    results = []
    subs = [asyncio.create_task(subscriber(f"{base}/ws", i, results)) for i in range(50)]
    await publisher(f"{base}/room/x", opts.messages)
    await asyncio.gather(*subs)
    flooder, sent = await flooding
    flooder.settimeout(3)
    tail = b""
    try:
        while len(tail) < 1 << 20:
            chunk = flooder.recv(65536)
            if not chunk:
                break
            tail += chunk
    except OSError:
        pass
    flooder.close()
    got = await asyncio.gather(*members)
    return sent, results, got, tail


def flooder_end(tail):
    """The last close frame in what the flooder had unread, if any."""
    at = tail.rfind(b"\x88")
    while at != -1:
        length = tail[at + 1] & 0x7F if at + 1 < len(tail) else 0
        body = tail[at + 2 : at + 2 + length]
        if 2 <= length <= 125 and len(body) == length:
            return f"close {int.from_bytes(body[:2], 'big')} {body[2:].decode(errors='replace')!r}"
        at = tail.rfind(b"\x88", 0, at)
    return "no close frame read"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", type=Path, default=ROOT / "target" / "release" / "hubbub")
    ap.add_argument("--flood-secs", type=float, default=3.0)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("server_args", nargs="*", help="extra hubbub flags (after --)")
    opts = ap.parse_args()
    port, admin = free_port(), f"127.0.0.1:{free_port()}"
    args = [str(opts.bin), "--listen", f"127.0.0.1:{port}", "--admin-listen", admin, "--shards", "2",
            "--api-key", API_KEY, *opts.server_args]
    server = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        server.stdout.readline()
        before = stats(admin)
        sent, results, got, tail = asyncio.run(scenario(port, opts))
        after = stats(admin)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=40)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"flooder: {sent} empty frames written in {opts.flood_secs} s; its end: {flooder_end(tail)}")
    print(f"inbox_drops over the run: {after['inbox_drops'] - before['inbox_drops']}")
    print(f"/ws subscribes answered within 5 s: {sum(results)} of {len(results)}")
    print(f"numbered room messages per reading member (of {opts.messages}):")
    for i, (seen, ended) in enumerate(got):
        in_order = seen == sorted(seen)
        print(f"  member {i}: {len(seen)} received, {'in order' if in_order else 'OUT OF ORDER'}, {ended}")
    disconnects = {k: v for k, v in after.get("disconnects", {}).items() if v}
    print(f"server disconnects by reason: {disconnects}")
    missed = sum(opts.messages - len(seen) for seen, _ in got)
    return 1 if missed or not all(results) else 0


if __name__ == "__main__":
    sys.exit(main())
