#!/usr/bin/env python3
"""20 clients page through a 50 MiB history while 20 more ask for it and never read (issue 12's figure).

Starts `hubbub --shards 2` (path as the first argument, extra flags after it), publishes 100 x 512 KiB
to one channel through the server API, then runs the 40 clients; prints the server's RSS before and
after, how many publications the first pagers read (each must be 100), and each shard's loop-turn p99
(the upper bound of the histogram bucket) before and after. Needs the Python `websockets` package.

    .venv/bin/python benches/history_pages.py target/release/hubbub
"""
import asyncio, json, os, signal, socket, subprocess, sys, time, urllib.request
import websockets
BIN = sys.argv[1]
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
port, aport = free(), free()
KEY = "k"
srv = subprocess.Popen([BIN, "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{aport}", "--shards", "2",
                        "--api-key", KEY, "--history-max-bytes", "64MiB", "--max-messages-per-sec", "100000"] + sys.argv[2:],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
srv.stdout.readline()
def rss():
    for l in open(f"/proc/{srv.pid}/status"):
        if l.startswith("VmRSS:"): return int(l.split()[1]) * 1024
def metrics():
    return urllib.request.urlopen(f"http://127.0.0.1:{aport}/metrics").read().decode()
def p99_turn():
    # the owner shard's loop-turn histogram: max over shards of the p99 bucket bound
    buckets = {}
    for line in metrics().splitlines():
        if line.startswith("hubbub_loop_turn_seconds_bucket"):
            lab = line[line.index("{")+1:line.index("}")]
            d = dict(kv.split("=") for kv in lab.split(","))
            buckets.setdefault(d["shard"], []).append((float(d["le"].strip('"')), float(line.split()[-1])))
    out = {}
    for sh, bs in buckets.items():
        bs.sort(); total = bs[-1][1]
        out[sh] = next(le for le, c in bs if c >= 0.99 * total) if total else 0
    return out
data = "p" * (512 << 10)
for i in range(100):
    body = json.dumps({"channel": "big", "data": f"{i}:{data}"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{aport}/api/publish", data=body, headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
time.sleep(1)
before, turns_before = rss(), p99_turn()
async def pager(i, read):
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:
        if not read:
            await ws.send(json.dumps({"id": 1, "method": "history", "params": {"channel": "big"}}))
            await asyncio.sleep(3)
            return 0
        since, n, cid = 0, 0, 1
        while True:
            await ws.send(json.dumps({"id": cid, "method": "history", "params": {"channel": "big", "since": since}}))
            r = json.loads(await ws.recv()); cid += 1
            pubs = r["result"]["publications"]; n += len(pubs)
            if not r["result"].get("more") or not pubs: break
            since = pubs[-1]["offset"]
        return n
async def main():
    return await asyncio.gather(*[pager(i, i < 20) for i in range(40)])
t0 = time.time()
got = asyncio.run(main())
peak = rss()
print(json.dumps({"rss_before_mib": before >> 20, "rss_after_mib": peak >> 20, "grown_mib": (peak - before) >> 20,
                  "pages_read_per_pager": got[:3], "secs": round(time.time() - t0, 1), "turn_p99_s_before": turns_before, "turn_p99_s_after": p99_turn()}))
srv.send_signal(signal.SIGTERM); srv.wait(timeout=40)
