#!/usr/bin/env python3
"""Side-by-side comparison: hubbub against its peers, same box, same run.

Builds hubbub, hubbub-load and the baseline (benches/baseline: tokio +
tokio-tungstenite), installs the uWebSockets peer (benches/uws, `npm ci`) when
it is missing, then for every scenario runs each server fresh, pinned to one
core (`taskset -c 1`), under the load tester pinned to another (`-c 0`), with
the same settings. Servers are interleaved within each round (hubbub, uws,
tuned, default, hubbub, uws, ...) so the box's noise hits all of them alike;
every ratio is taken between runs of the same round and the table reports the
median over rounds, with the best peer of each row beside it.

    benches/compare.py                      # 2 rounds, every scenario, ~25 min
    benches/compare.py --rounds 3 --out benches/results.md
    benches/compare.py --only echo,latency --no-build
    benches/compare.py --only handshake --servers hubbub,uws --rounds 3
    benches/compare.py --only memory,handshake --before /work/wt-old/target/release/hubbub
    benches/compare.py --no-build --hubbub-bin /tmp/new/hubbub --before /tmp/old/hubbub --servers hubbub

Servers (`--servers`, default all but `before`):
- hubbub   `hubbub --shards 1 --admin-listen off` (one shard: one core);
- uws      uWebSockets (uWebSockets.js v20.30.0's C++ server driven by
           benches/uws/server.js on Node, one event loop);
- tuned    `hubbub-baseline --threads 1 --read-buffer-size 4096`, the setting
           tungstenite's changelog recommends for many connections;
- default  `hubbub-baseline --threads 1` (tungstenite's 128 KiB read buffer);
- before   with `--before PATH`: another hubbub binary (an older commit, an
           experiment) run with the same flags, for before/after ratios in
           the same run. It is not a peer: the best-peer column ignores it.

Server CPU is the scheduler's run time of all the server's threads (/proc/PID/task/*/schedstat;
user time from /proc/PID/stat), sampled
every 20 ms, and attributed to the window where the scenario's work happens
(the connect storm, or the middle of the publish window), so connection setup
is not charged to messages. Every run is bounded in time; servers are stopped
by their PID.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HUBBUB = ROOT / "target/release/hubbub"
LOAD = ROOT / "target/release/hubbub-load"
BASELINE = ROOT / "benches/baseline/target/release/hubbub-baseline"
UWS_DIR = ROOT / "benches/uws"
UWS_PACKAGE = UWS_DIR / "node_modules/@trufflesuite/uws-js-unofficial/package.json"
SERVER_CPU, LOAD_CPU = "1", "0"
CLK_TCK = os.sysconf("SC_CLK_TCK")
RUN_TIMEOUT_SECS = 180

SERVERS = {
    # The admin port is off: idle in these runs, and its fixed default port
    # would collide with another hubbub on the box.
    # The fan-out publisher sends far over a chat client's rate: lift the
    # per-connection rates, which the peers do not have.
    "hubbub": [str(HUBBUB), "--listen", "127.0.0.1:0", "--shards", "1", "--admin-listen", "off",
               "--max-messages-per-sec", "1000000000", "--max-bytes-per-sec", "1TiB"],
    "uws": ["node", str(UWS_DIR / "server.js"), "--listen", "127.0.0.1:0"],
    "tuned": [str(BASELINE), "--listen", "127.0.0.1:0", "--threads", "1", "--read-buffer-size", "4096"],
    "default": [str(BASELINE), "--listen", "127.0.0.1:0", "--threads", "1"],
    # Filled in by --before: [PATH, the same flags as hubbub].
    "before": [],
}
ALL_SERVERS = ["hubbub", "uws", "tuned", "default", "before"]
PEERS = ["uws", "tuned", "default"]
LABELS = {"hubbub": "hubbub", "uws": "uWebSockets", "tuned": "baseline 4 KiB", "default": "baseline default",
          "before": "hubbub before"}
SHORT = {"uws": "uWS", "tuned": "4 KiB", "default": "default", "before": "before"}
# The servers of this run, in the interleaving order (set by main).
ORDER = ["hubbub", "uws", "tuned", "default"]

# Offered fan-out load, deliveries/s to 10,000 members. The first is the
# latency point; the ladder climbs until a server loses deliveries or falls
# more than 10% behind the offer.
FANOUT_MEMBERS = 10_000
FANOUT_LATENCY_DELIVERIES = 250_000
FANOUT_LADDER = [100_000, 150_000, 200_000, 250_000, 400_000, 500_000, 650_000, 800_000, 1_000_000, 1_300_000,
                1_600_000, 2_000_000, 2_500_000]
# A fan-out step is sustained when nothing is lost, the delivery rate keeps up
# with the offer (>= 90%: the measured window includes the ramp) and p99
# publish-to-deliver stays under this. Each step runs on a fresh server.
SUSTAINED_P99_MS = 1000.0


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Server:
    """One server process pinned to SERVER_CPU; stopped by PID."""

    def __init__(self, name, extra_args):
        self.name, self.extra_args = name, extra_args
        cmd = ["taskset", "-c", SERVER_CPU] + SERVERS[name] + extra_args.get(name, [])
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, preexec_fn=raise_nofile, text=True)
        line = self.proc.stdout.readline()
        match = re.search(r"ws://([\d.]+):(\d+)", line)
        if not match:
            self.stop()
            raise RuntimeError(f"{name} did not start: {line!r}")
        self.port = int(match.group(2))
        self.pid = self.proc.pid

    def url(self, path):
        return f"ws://127.0.0.1:{self.port}{path}"

    def cpu_secs(self):
        """(user, total) CPU seconds of the whole process. User time comes in
        clock ticks (10 ms); the total is the scheduler's nanosecond count
        summed over threads, precise enough for short windows."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total_ns = 0
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                total_ns += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # a thread that just exited
        return int(fields[11]) / CLK_TCK, total_ns / 1e9

    def has_path(self, path):
        """True when an upgrade on `path` gets 101 (the room probe)."""
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(request.encode())
            return sock.recv(64).startswith(b"HTTP/1.1 101")

    def restart(self):
        """A fresh process of the same server: no backlog left from the last run."""
        self.stop()
        self.__init__(self.name, self.extra_args)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class CpuSampler(threading.Thread):
    """Samples a server's CPU time every 20 ms while a load run goes on."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server, self.samples, self.done = server, [], threading.Event()
        self.start_time = time.monotonic()

    def run(self):
        while not self.done.is_set():
            user, total = self.server.cpu_secs()
            self.samples.append((time.monotonic() - self.start_time, user, total))
            self.done.wait(0.02)

    def at(self, t):
        """The last sample taken at or before `t` seconds into the run."""
        best = self.samples[0]
        for sample in self.samples:
            if sample[0] <= t:
                best = sample
        return best

    def between(self, t0, t1):
        a, b = self.at(t0), self.at(t1)
        return b[0] - a[0], b[1] - a[1], b[2] - a[2]


def load(server, workdir, tag, args):
    """Runs hubbub-load pinned to LOAD_CPU; returns (figures, sampler)."""
    out = workdir / f"{tag}.json"
    cmd = ["taskset", "-c", LOAD_CPU, str(LOAD)] + args + ["--json", str(out), "--quiet"]
    sampler = CpuSampler(server)
    sampler.start()
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECS)
    finally:
        sampler.done.set()
        sampler.join()
    if run.returncode not in (0, 2) or not out.exists():
        raise RuntimeError(f"{tag}: hubbub-load exited {run.returncode}: {run.stderr[-400:]}")
    return json.loads(out.read_text()), sampler


# --- scenarios: each takes (server, workdir, tag, opts) and returns figures ---


def memory(server, workdir, tag, opts):
    n = opts.memory_connections
    figures, _ = load(server, workdir, tag, ["connect", "--url", server.url("/echo"), "-n", str(n),
                                             "--rate", "5000", "--hold-secs", "2", "--server-pid", str(server.pid)])
    opened = figures["counters"]["opened"]
    return {"bytes_per_conn": figures["memory"]["server_rss_per_conn_bytes"], "opened": opened}


def handshakes(server, workdir, tag, opts):
    n = opts.storm_connections
    figures, cpu = load(server, workdir, tag, ["connect", "--url", server.url("/echo"), "-n", str(n),
                                               "--rate", "100000", "--hold-secs", "2"])
    opened = figures["counters"]["opened"]
    _, user, total = cpu.between(0, figures["connect_secs"] + 0.3)
    return {
        "per_sec": figures["rates"]["handshakes_per_sec"],
        "cpu_us": total / opened * 1e6,
        "user_us": user / opened * 1e6,
        "failed": figures["counters"]["failed"],
        "tool_cores": figures["tool_cpu_secs"] / figures["elapsed_secs"],
    }


def echo(pipeline):
    def scenario(server, workdir, tag, opts):
        figures, cpu = load(server, workdir, tag, ["echo", "--url", server.url("/echo"), "-c", "100", "-s", "32",
                                                   "--pipeline", str(pipeline), "-d", str(opts.echo_secs)])
        start = figures["connect_secs"] + 0.5
        secs, user, total = cpu.between(start, figures["connect_secs"] + figures["measure_secs"])
        rate = figures["rates"]["received_per_sec"]
        return {
            "per_sec": rate,
            "cpu_us": total / secs / rate * 1e6,
            "p50_ms": figures["latency"]["rtt"]["p50_ms"],
            "errors": figures["errors"],
            "tool_cores": figures["tool_cpu_secs"] / figures["elapsed_secs"],
        }

    return scenario


def latency(server, workdir, tag, opts):
    figures, _ = load(server, workdir, tag, ["echo", "--url", server.url("/echo"), "-c", "100", "-s", "32",
                                             "--rate", str(opts.latency_rate), "-d", str(opts.latency_secs)])
    rtt = figures["latency"]["rtt"]
    return {"p50_ms": rtt["p50_ms"], "p99_ms": rtt["p99_ms"], "p999_ms": rtt["p99_9_ms"],
            "per_sec": figures["rates"]["received_per_sec"], "errors": figures["errors"]}


def broadcast(server, workdir, tag, deliveries, opts):
    rate = max(1, round(deliveries / FANOUT_MEMBERS))
    figures, cpu = load(server, workdir, tag, [
        "broadcast", "--url", server.url("/room/bench"), "-n", str(FANOUT_MEMBERS - 1), "-p", "1",
        "--rate", str(rate), "-d", str(opts.fanout_secs), "--connect-rate", "10000", "--settle-ms", "500"])
    start = figures["connect_secs"] + 0.5
    secs, user, total = cpu.between(start + 0.5, start + figures["measure_secs"])
    delivered, expected = figures["delivered"] or 0, figures["expected_deliveries"] or 0
    per_sec = delivered / figures["measure_secs"]
    delivery = figures["latency"]["delivery"]
    offered = rate * FANOUT_MEMBERS
    return {
        "offered": offered,
        "per_sec": per_sec,
        "lost": expected - delivered,
        "p50_ms": delivery["p50_ms"],
        "p99_ms": delivery["p99_ms"],
        "cpu_us": total / secs / per_sec * 1e6 if secs > 0 and per_sec > 0 else None,
        "tool_cores": figures["tool_cpu_secs"] / figures["elapsed_secs"],
        "sustained": expected > 0 and delivered == expected and per_sec >= 0.9 * offered
        and delivery["p99_ms"] < SUSTAINED_P99_MS,
    }


def fanout(server, workdir, tag, opts):
    if not server.has_path("/room/bench"):
        return {"unavailable": True}
    at_latency = broadcast(server, workdir, f"{tag}-{FANOUT_LATENCY_DELIVERIES}", FANOUT_LATENCY_DELIVERIES, opts)
    ladder, sustained = [at_latency], 0
    for deliveries in FANOUT_LADDER:
        step = at_latency if deliveries == FANOUT_LATENCY_DELIVERIES else None
        if step is None:
            server.restart()
            step = broadcast(server, workdir, f"{tag}-{deliveries}", deliveries, opts)
            ladder.append(step)
        if step["sustained"]:
            sustained = max(sustained, deliveries)
        if step["lost"] or step["per_sec"] < 0.9 * step["offered"]:
            break
    # Capacity: the most deliveries/s any step achieved without losing one
    # (a saturated server that queues instead of dropping still counts).
    lossless = [s for s in ladder if s["lost"] == 0] or [at_latency]
    best = max(lossless, key=lambda s: s["per_sec"])
    return {"capacity": best["per_sec"], "cpu_us": best["cpu_us"], "sustained": sustained,
            "at_latency": at_latency, "ladder": ladder}


SCENARIOS = {
    "memory": memory,
    "handshake": handshakes,
    "echo": echo(1),
    "pipelined": echo(16),
    "latency": latency,
    "fanout": fanout,
}


def run_all(opts, workdir):
    results = {name: {s: [] for s in ORDER} for name in opts.only}
    extra = {"hubbub": opts.hubbub_arg, "before": opts.before_arg}
    for round_index in range(opts.rounds):
        for name in opts.only:
            for server_name in ORDER:
                tag = f"r{round_index}-{name}-{server_name}"
                print(f"[{time.strftime('%H:%M:%S')}] {tag}", file=sys.stderr, flush=True)
                server = Server(server_name, extra)
                try:
                    figures = SCENARIOS[name](server, workdir, tag, opts)
                except (RuntimeError, subprocess.TimeoutExpired, KeyError, TypeError) as err:
                    figures = {"error": str(err)}
                finally:
                    server.stop()
                print(f"    {json.dumps(figures, default=str)[:300]}", file=sys.stderr, flush=True)
                results[name][server_name].append(figures)
    return results


# --- the table ---


def pick(runs, key):
    """Values of `key` (a path like "at_latency.p99_ms") over rounds, skipping failed runs."""
    values = []
    for run in runs:
        value = run
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, (int, float)) and value is not False:
            values.append(float(value))
    return values


def median(values):
    return statistics.median(values) if values else None


def ratio(results, key, other):
    """Median over rounds of hubbub / other, pairing runs of the same round."""
    pairs = zip(results["hubbub"], results[other])
    ratios = []
    for a, b in pairs:
        va, vb = pick([a], key), pick([b], key)
        if va and vb and vb[0] > 0:
            ratios.append(va[0] / vb[0])
    return median(ratios)


def fmt(value, unit):
    if value is None:
        return "n/a"
    if unit == "B":
        return f"{value:,.0f} B"
    if unit == "/s":
        return f"{value / 1000:,.1f}K/s" if value < 1e6 else f"{value / 1e6:,.2f}M/s"
    if unit == "us":
        return f"{value:,.2f} us"
    if unit == "ms":
        return f"{value:,.2f} ms"
    return f"{value:,.0f}"


def fmt_ratio(value):
    return "n/a" if value is None else f"{value:.2f}x"


ROWS = [
    # (scenario, key, label, unit, better: "low" or "high", target against the tuned baseline)
    ("memory", "bytes_per_conn", "idle memory per connection (RSS delta / N)", "B", "low", "<= 128 B"),
    ("handshake", "per_sec", "handshakes/s in a connect storm", "/s", "high", ""),
    ("handshake", "cpu_us", "server CPU per handshake", "us", "low", "<= 0.3x; <= 0.6x uWS"),
    ("handshake", "user_us", "  of which user space", "us", "low", ""),
    ("echo", "per_sec", "echo msgs/s, 100 conns x 32 B, 1 in flight", "/s", "high", ">= 1.2x"),
    ("echo", "cpu_us", "  server CPU per echo", "us", "low", ""),
    ("pipelined", "per_sec", "echo msgs/s, 100 conns x 32 B, 16 in flight", "/s", "high", ">= 5x"),
    ("pipelined", "cpu_us", "  server CPU per echo", "us", "low", ""),
    ("latency", "p50_ms", "echo RTT p50 (open loop)", "ms", "low", ""),
    ("latency", "p99_ms", "echo RTT p99 (open loop)", "ms", "low", ""),
    ("latency", "p999_ms", "echo RTT p99.9 (open loop)", "ms", "low", ""),
    ("fanout", "capacity", "fan-out capacity, deliveries/s with no loss", "/s", "high", ">= 2.5x"),
    ("fanout", "cpu_us", "  server CPU per delivery (at capacity)", "us", "low", "<= 0.4x"),
    ("fanout", "sustained", "  highest offered step with p99 < 1 s (0: none)", "/s", "high", ""),
    ("fanout", "at_latency.per_sec", "fan-out deliveries/s at 250K/s offered", "/s", "high", ""),
    ("fanout", "at_latency.p50_ms", "  publish-to-deliver p50 at 250K/s", "ms", "low", ""),
    ("fanout", "at_latency.p99_ms", "  publish-to-deliver p99 at 250K/s", "ms", "low", "< 60 ms"),
    ("fanout", "at_latency.lost", "  deliveries lost at 250K/s", "n", "low", "0"),
]


def best_peer(runs, key, better):
    """The peer with the best median of `key` in this run, or None."""
    medians = [(median(pick(runs[p], key)), p) for p in PEERS if p in runs]
    medians = [(v, p) for v, p in medians if v is not None]
    if not medians:
        return None
    return (min if better == "low" else max)(medians)[1]


def table(results, opts):
    others = [s for s in ORDER if s != "hubbub"]
    header = ["measure"] + [LABELS[s] for s in ORDER] + [f"hubbub / {SHORT[s]}" for s in others]
    header += ["best peer: hubbub / it", "target"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for scenario, key, label, unit, better, target in ROWS:
        if scenario not in results:
            continue
        runs = results[scenario]
        if scenario == "fanout" and any(r.get("unavailable") for r in runs["hubbub"]):
            if key == "capacity":
                lines.append(f"| fan-out | n/a: /room not available |" + " |" * (len(header) - 3) + f" {target} |")
            continue
        cells = [fmt(median(pick(runs[s], key)), unit) for s in ORDER]
        ratios = [fmt_ratio(ratio(runs, key, s)) for s in others]
        best = best_peer(runs, key, better)
        best_cell = "n/a" if best is None else f"{SHORT[best]}: {fmt_ratio(ratio(runs, key, best))}"
        lines.append(f"| {label} | {' | '.join(cells)} | {' | '.join(ratios)} | {best_cell} | {target} |")
    return "\n".join(lines)


def versions(uses_uws):
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    lock = (ROOT / "benches/baseline/Cargo.lock").read_text()

    def locked(name):
        match = re.search(rf'name = "{name}"\nversion = "([^"]+)"', lock)
        return match.group(1) if match else "?"

    uws = ""
    if uses_uws:
        version = json.loads(UWS_PACKAGE.read_text()).get("version", "?")
        uws = f"uWebSockets.js {version} on Node {out(['node', '--version'])}, "
    cpu = re.search(r"Model name:\s*(.+)", out(["lscpu"]))
    return (f"{datetime.date.today()}, hubbub {out(['git', 'rev-parse', '--short', 'HEAD'])}, "
            f"{out(['rustc', '--version'])}, {uws}tokio {locked('tokio')}, "
            f"tokio-tungstenite {locked('tokio-tungstenite')}, "
            f"tungstenite {locked('tungstenite')}; {cpu.group(1) if cpu else platform.processor()}, "
            f"{os.cpu_count()} cores, Linux {platform.release()}")


def box_busy():
    """(busy, total) jiffies of every core so far, from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def load_note(before, after, loads):
    busy = (after[0] - before[0]) / max(1, after[1] - before[1])
    return (f"Box load: 1-minute load average {loads[0]:.1f} at the start, {loads[1]:.1f} at the end; "
            f"all cores {busy:.0%} busy over the run (this run's servers and load tester included).")


def build():
    subprocess.run(["cargo", "build", "--release", "-p", "hubbub", "-p", "hubbub-load"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "--manifest-path", "benches/baseline/Cargo.toml"],
                   cwd=ROOT, check=True)


def install_uws():
    """`npm ci` into benches/uws/node_modules when the package is missing:
    exactly the locked versions, no install scripts (the native module ships
    prebuilt inside the package), no optional add-ons."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        sys.exit("compare.py: the uws peer needs Node.js (16, 18 or 20) and npm on PATH; "
                 "install them or leave uws out with --servers hubbub,tuned,default")
    if not UWS_PACKAGE.exists():
        print("installing the uWebSockets peer (npm ci in benches/uws)", file=sys.stderr, flush=True)
        installed = subprocess.run(["npm", "ci", "--ignore-scripts", "--omit=optional", "--no-audit", "--no-fund"],
                                   cwd=UWS_DIR)
        if installed.returncode != 0:
            sys.exit("compare.py: npm ci in benches/uws failed (see above); "
                     "or leave uws out with --servers hubbub,tuned,default")
    check = subprocess.run(["node", str(UWS_DIR / "server.js"), "--check"], capture_output=True, text=True,
                           timeout=60)
    if check.returncode != 0:
        sys.exit(f"compare.py: the uws peer cannot start: {check.stderr.strip()}; "
                 "or leave uws out with --servers hubbub,tuned,default")


def main():
    global ORDER
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated: {','.join(SCENARIOS)}")
    parser.add_argument("--servers", default="hubbub,uws,tuned,default",
                        help="comma-separated, in interleaving order; hubbub is always run (and first): "
                             "hubbub,uws,tuned,default (before is added by --before)")
    parser.add_argument("--hubbub-bin", metavar="PATH",
                        help="run this hubbub binary as `hubbub` instead of target/release/hubbub")
    parser.add_argument("--before", metavar="PATH",
                        help="another hubbub binary to run as server `before`, with hubbub's flags")
    parser.add_argument("--before-arg", action="append", default=None,
                        help="extra flag for the `before` binary (repeatable; default: the --hubbub-arg flags)")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--out", help="also write the report (markdown) to this file")
    parser.add_argument("--keep", help="keep every hubbub-load JSON and the raw results in this directory")
    parser.add_argument("--memory-connections", type=int, default=15_000)
    parser.add_argument("--storm-connections", type=int, default=10_000)
    parser.add_argument("--echo-secs", type=int, default=5)
    parser.add_argument("--latency-rate", type=int, default=20_000, help="open-loop echoes/s in total")
    parser.add_argument("--latency-secs", type=int, default=10)
    parser.add_argument("--fanout-secs", type=int, default=5)
    parser.add_argument("--hubbub-arg", action="append", default=[], help="extra hubbub flag (repeatable)")
    opts = parser.parse_args()
    opts.only = [s for s in opts.only.split(",") if s]
    unknown = [s for s in opts.only if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {unknown}")
    if opts.rounds < 1:
        parser.error("--rounds must be at least 1")
    servers = ["hubbub"] + [s for s in opts.servers.split(",") if s and s != "hubbub"]
    bad = [s for s in servers if s not in ALL_SERVERS or s == "before"]
    if bad:
        parser.error(f"unknown server(s): {bad} (before comes with --before PATH)")
    if opts.hubbub_bin:
        binary = Path(opts.hubbub_bin).resolve()
        if not binary.is_file() or not os.access(binary, os.X_OK):
            parser.error(f"--hubbub-bin: {binary} is not an executable file")
        SERVERS["hubbub"][0] = str(binary)
    if opts.before:
        before = Path(opts.before).resolve()
        if not before.is_file() or not os.access(before, os.X_OK):
            parser.error(f"--before: {before} is not an executable file")
        SERVERS["before"] = [str(before)] + SERVERS["hubbub"][1:]
        servers.append("before")
    if opts.before_arg is None:
        opts.before_arg = opts.hubbub_arg
    ORDER = servers
    if not opts.no_build:
        build()
    if "uws" in ORDER:
        install_uws()
    workdir = Path(opts.keep or tempfile.mkdtemp(prefix="hubbub-compare-"))
    workdir.mkdir(parents=True, exist_ok=True)
    busy_before, load_before = box_busy(), os.getloadavg()[0]
    results = run_all(opts, workdir)
    note = load_note(busy_before, box_busy(), (load_before, os.getloadavg()[0]))
    (workdir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    flags = " ".join(opts.hubbub_arg) or "none"
    if opts.hubbub_bin or opts.before:
        flags += f"; hubbub is {SERVERS['hubbub'][0]}"
    if opts.before:
        flags += f", before is {SERVERS['before'][0]} (flags: {' '.join(opts.before_arg) or 'none'})"
    report = (f"{versions('uws' in ORDER)}\n\n{opts.rounds} round(s), servers interleaved, medians; ratios are hubbub "
              f"over each other server within each round, then the median; the best peer is the one with the best "
              f"median on that row. Server on core {SERVER_CPU}, hubbub-load on core {LOAD_CPU}. Open-loop echo at "
              f"{opts.latency_rate:,}/s. Extra hubbub flags: {flags}.\n{note}\n\n"
              f"{table(results, opts)}\n")
    print(report)
    if opts.out:
        Path(opts.out).write_text(report)
    print(f"raw results: {workdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
