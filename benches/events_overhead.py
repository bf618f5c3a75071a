#!/usr/bin/env python3
"""Publish throughput and server CPU with the event sinks off and on, in one run (issue 14.2 figure).

For each mode (off, stream, webhook, off again) a fresh `hubbub --shards 2` on loopback is started and
`--clients` client processes each keep `--window` `/ws` publish commands in flight for `--secs`
seconds (rates lifted). Reported per mode: publishes answered per second, server CPU (user + system,
from /proc) per publish in microseconds, and the event sinks' sent and dropped counters from /metrics.

- `stream`: `--events-stream` into a `redis-server` started here (skipped when not installed);
- `webhook`: `--webhook-url` to a keep-alive HTTP receiver in this script that answers 200.

Standard library only (a raw WebSocket client). Every loop is bounded in time; every process this
script starts is stopped by its PID.

    cargo build --release --bins
    python3 benches/events_overhead.py            # about 30 s
"""

import argparse
import base64
import http.server
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET = "events-overhead-bench-secret-0123456789"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, limit=10.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def frame(payload: bytes) -> bytes:
    """A masked client text frame (mask key 0: the payload is sent as is)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    else:
        head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    return head + b"\0\0\0\0" + payload


def client(port, secs, window, index, out):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
        ).encode()
    )
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    buf = buf.split(b"\r\n\r\n", 1)[1]
    cmd = json.dumps(
        {"id": 1, "method": "publish", "params": {"channel": f"bench{index}", "data": {"text": "hello", "n": index}}}
    ).encode()
    one = frame(cmd)
    s.sendall(one * window)
    answered = 0
    deadline = time.monotonic() + secs
    s.settimeout(5)
    while time.monotonic() < deadline:
        data = s.recv(1 << 16)
        if not data:
            break
        buf += data
        got = 0
        at = 0
        while len(buf) - at >= 2:
            n = buf[at + 1] & 0x7F
            head = 2
            if n == 126:
                if len(buf) - at < 4:
                    break
                n = int.from_bytes(buf[at + 2 : at + 4], "big")
                head = 4
            if len(buf) - at < head + n:
                break
            at += head + n
            got += 1
        buf = buf[at:]
        answered += got
        if got:
            s.sendall(one * got)
    s.close()
    out.put(answered)


def cpu_secs(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid):
    """CPU seconds per thread name (shards, event sinks, ...)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        kind = "events" if name.startswith("hubbub-events") else "shards" if name.startswith("hubbub-shard") else "other"
        out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def metric(admin, prefix):
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as r:
        total = 0.0
        for line in r.read().decode().splitlines():
            if line.startswith(prefix):
                total += float(line.rsplit(" ", 1)[1])
        return total


class Hook(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    events = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.events += body.count(b'"kind"')
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def run_mode(name, extra, args):
    port, admin = free_port(), free_port()
    server = subprocess.Popen(
        [str(ROOT / "target/release/hubbub"), "--listen", f"127.0.0.1:{port}", "--admin-listen",
         f"127.0.0.1:{admin}", "--shards", "2", "--max-messages-per-sec", "100000000",
         "--max-bytes-per-sec", "1GiB", "--log-level", "warn", *extra],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        out = multiprocessing.Queue()
        procs = [
            multiprocessing.Process(target=client, args=(port, args.secs, args.window, i, out))
            for i in range(args.clients)
        ]
        cpu0, t0, th0 = cpu_secs(server.pid), time.monotonic(), thread_cpu(server.pid)
        for p in procs:
            p.start()
        answered = sum(out.get(timeout=args.secs + 30) for _ in procs)
        for p in procs:
            p.join(10)
        cpu1, t1, th1 = cpu_secs(server.pid), time.monotonic(), thread_cpu(server.pid)
        split = {k: (th1.get(k, 0) - th0.get(k, 0)) * 1e6 / max(answered, 1) for k in ("shards", "events")}
        time.sleep(0.6)  # the sinks publish their counters about every 250 ms
        sent = metric(f"127.0.0.1:{admin}", "hubbub_events_sent_total")
        dropped = metric(f"127.0.0.1:{admin}", "hubbub_events_dropped_total")
        rate = answered / (t1 - t0)
        cpu_us = (cpu1 - cpu0) * 1e6 / max(answered, 1)
        print(f"{name:8} {rate:10.0f} publishes/s  {cpu_us:6.2f} us CPU/publish "
              f"(shards {split['shards']:.2f}, event sinks {split['events']:.2f})  "
              f"events sent {sent:.0f} dropped {dropped:.0f}", flush=True)
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--secs", type=float, default=5.0)
    args = ap.parse_args()
    print(f"{args.clients} clients x {args.window} publishes in flight, {args.secs} s per mode, hubbub --shards 2")
    redis = None
    redis_dir = tempfile.mkdtemp(prefix="hubbub-events-bench-")
    if shutil.which("redis-server"):
        rport = free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=redis_dir, stdout=subprocess.DEVNULL,
        )
        wait_port(rport)
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{hook.server_address[1]}/hook"
    try:
        run_mode("off", [], args)
        if redis:
            run_mode("stream", ["--events-stream", "bench:events", "--events-redis",
                                f"redis://127.0.0.1:{rport}"], args)
        else:
            print("stream   skipped: redis-server is not installed")
        run_mode("webhook", ["--webhook-url", hook_url, "--webhook-secret", SECRET], args)
        run_mode("off", [], args)
    finally:
        hook.shutdown()
        if redis:
            redis.send_signal(signal.SIGKILL)
            redis.wait()
        shutil.rmtree(redis_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
