#!/usr/bin/env python3
"""Hostile clients against a real hubbub: the figures of issue 10, reproducibly.

Two figures, each on a fresh `hubbub --shards 2` on loopback:

deadlines  5,000 partial-frame holders (`hubbub-load trickle --mode frame`) and 5,000
           partial-head holders (`--mode head`) at once, as two hubbub-load processes (the
           open-file limit is per process), each from its own range of source addresses, 1 B/s
           each; the frame process runs `--probe`, a well-behaved echo client, before and during
           the attack (the head process starts 1.2 s later, after the probe's 1 s baseline).
           Once with the server's defaults, once with
           `--message-timeout-secs 10 --handshake-timeout-secs 5` so both deadlines act within
           the run.
memory     `--memory-limit 256MiB`: 3,000 clients each hold a 900 KiB partial message
           (`trickle --mode message --fragment-bytes 900KiB`, kept open by a ping every 6 s)
           while 3,000 clients flood a room and never read it (`flood --no-read --recv-buffer
           4096` on /room/hostile) and one flood client publishes to the room and reads it.
           Whoever comes first takes the budget, so two runs: `together` (the holders, with the
           probe, first; the room 1.2 s later, after the probe's baseline) and `room-first`
           (the room's members, with the probe, first; the publisher after the baseline; the
           holders once every member has had time to connect). Peak RSS (VmHWM less the RSS at
           start), `hubbub_memory_bytes{kind}` over time and what was shed.

While an attack runs the script samples the server every 0.5 s: /proc/PID/status (VmRSS, VmHWM),
/proc/PID/stat (CPU time) and the admin port's /metrics (summed over shards). Afterwards it stops
the server by its PID (SIGTERM, SIGKILL after 40 s), looks for a panic in its log and prints
markdown tables, with the loop turns of the run (`hubbub_loop_turn_seconds`), and a list of
problems (panic, lost probe connection or echo, an attacker outliving a deadline, memory over the
limit plus --slack-mib); the exit status is 1 when there is one. Every attack is bounded (`-d`,
at most 60 s); every child is waited for with a deadline and killed by PID past it.

    cargo build --release --workspace --bins
    benches/hostile.py                       # both figures, about 3 minutes
    benches/hostile.py --only memory --keep /tmp/hostile   # one figure, keep JSON, CSV, logs

Needs Linux, Python 3 (standard library only), an open-file limit of at least 12,000 and the
release binaries in target/release (or --bin-dir).
"""

import argparse
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
SAMPLE_SECS = 0.5
STOP_GRACE_SECS = 40
# The probe runs alone for 1 s (--probe-baseline-secs) before its process attacks; the other
# attack processes start this much later, so the baseline is the server without attackers.
AFTER_BASELINE = 1.2
# The server holds both attacks' sockets; the open-file limit is 20,000 per process.
MAX_SERVER_SOCKETS = 19000
# Every child started, so an interrupted run leaves nothing behind (stopped by PID).
CHILDREN = []
METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


# ---------------------------------------------------------------- server and sampling


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_metrics(text):
    """Prometheus text to {(name, ((label, value), ...)): value}, the `shard` label summed away."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = METRIC_LINE.match(line)
        if not m:
            continue
        name, labels, value = m.groups()
        try:
            v = float(value)
        except ValueError:
            continue
        kv = tuple(sorted((k, v2) for k, v2 in LABEL.findall(labels or "") if k != "shard"))
        out[(name, kv)] = out.get((name, kv), 0.0) + v
    return out


def by_label(metrics, name, label="reason"):
    """{label value: value} of one metric, zeros left out."""
    res = {}
    for (n, kv), v in metrics.items():
        if n == name and v:
            res[dict(kv).get(label, "")] = v
    return res


def proc_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, rest = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                fields[k] = int(rest.split()[0]) * 1024
    return fields


def proc_cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15; `rest` starts at field 3.
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def scrape(admin):
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=2) as r:
        return parse_metrics(r.read().decode())


class Server:
    """One hubbub process on free loopback ports, its log in `logdir`."""

    def __init__(self, bin_dir, args, logdir, name):
        self.port = free_port()
        self.admin = f"127.0.0.1:{free_port()}"
        self.log_path = logdir / f"{name}.server.log"
        self.argv = [
            str(bin_dir / "hubbub"),
            "--listen", f"127.0.0.1:{self.port}",
            "--admin-listen", self.admin,
            "--log-format", "text",
            *args,
        ]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT)
        CHILDREN.append(self.proc)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"hubbub exited at start ({self.proc.returncode}): see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://{self.admin}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"hubbub not ready within 10 s: see {self.log_path}")
            time.sleep(0.1)

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        """SIGTERM by PID, SIGKILL past the grace; returns (exit code, seconds to exit)."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE_SECS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode, time.monotonic() - t0

    def panics(self):
        text = self.log_path.read_text(errors="replace")
        return [l for l in text.splitlines() if "panicked" in l]


class Sampler(threading.Thread):
    """Samples RSS, CPU and /metrics of the server every SAMPLE_SECS until stopped."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server = server
        self.samples = []
        self.scrape_errors = 0
        self.halt = threading.Event()
        self.t0 = time.monotonic()

    def run(self):
        while not self.halt.is_set():
            t = time.monotonic() - self.t0
            try:
                st = proc_status(self.server.pid)
                cpu = proc_cpu_secs(self.server.pid)
            except OSError:
                break
            try:
                t_scrape = time.monotonic()
                m = scrape(self.server.admin)
                scrape_ms = (time.monotonic() - t_scrape) * 1e3
            except OSError:
                self.scrape_errors += 1
                m, scrape_ms = None, None
            self.samples.append({"t": t, "rss": st["VmRSS"], "hwm": st["VmHWM"], "cpu": cpu,
                                 "metrics": m, "scrape_ms": scrape_ms})
            self.halt.wait(SAMPLE_SECS)

    def stop(self):
        self.halt.set()
        self.join(5)


def run_children(specs, deadline_secs):
    """Starts every (name, argv, stdout path, delay) `delay` seconds after the first, waits for
    all within the deadline, kills (by PID) what overruns; returns {name: exit code}."""
    procs = {}
    t0 = time.monotonic()
    for name, argv, out, delay in sorted(specs, key=lambda s: s[3]):
        time.sleep(max(0.0, t0 + delay - time.monotonic()))
        procs[name] = (subprocess.Popen(argv, stdout=open(out, "w"), stderr=subprocess.STDOUT), out)
        CHILDREN.append(procs[name][0])
    deadline = time.monotonic() + deadline_secs
    codes = {}
    for name, (p, _) in procs.items():
        try:
            codes[name] = p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            codes[name] = f"killed after {deadline_secs} s"
            p.wait()
    return codes


def load_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# ---------------------------------------------------------------- formatting


def ms(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"


def secs(v):
    return "-" if v is None else f"{v:.1f}"


def mib(v):
    return "-" if v is None else f"{v / MIB:,.1f}"


def counts(d):
    if not d:
        return "none"
    return ", ".join(f"`{k}` {int(v):,}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]))


def delta(after, before, name, label="reason"):
    a, b = by_label(after, name, label), by_label(before, name, label)
    return {k: a[k] - b.get(k, 0) for k in a if a[k] - b.get(k, 0)}


def attack_row(label, rep, rc):
    if rep is None:
        return f"| {label} | no report (exit {rc}) | | | | |"
    a = rep["attack"]
    life = a.get("lifetime")
    life_s = "-" if not life else (
        f"{secs(life['min_secs'])} / {secs(life['p50_secs'])} / {secs(life['p99_secs'])} / "
        f"{secs(life['max_secs'])}")
    began = f"{a['began']:,} began"
    if a["failed"]:
        began += f", {a['failed']:,} failed ({counts(a['failed_by'])})"
    if a["unstarted"]:
        began += f", {a['unstarted']:,} unstarted"
    alive = f"{a['alive']:,}" + (f" (oldest {secs(a['oldest_alive_secs'])} s)" if a["alive"] else "")
    if not a["accounted"]:
        alive += " (counts do not add up)"
    return (f"| {label} | {began} | {a['ended']:,}: {counts(a['ended_by'])} | {life_s} | {alive} "
            f"| {rc} |")


def probe_cells(rep):
    p = (rep or {}).get("attack", {}).get("probe")
    if not p:
        return None
    b, d = p["before"], p["during"]
    return (f"{ms(b['p50_ms'])} / {ms(b['p99_ms'])}",
            f"{ms(d['p50_ms'])} / {ms(d['p99_ms'])} / {ms(d['max_ms'])}",
            f"{p['failed']:,} of {p['due']:,}"
            + (f" ({p['due'] - p['sent']:,} still due at the end)" if p["due"] > p["sent"] else "")
            + (f" ({counts(p['failures'])})" if p["failures"] else ""))


# ---------------------------------------------------------------- scenarios


def deadlines_run(opts, name, server_args, label):
    srv = Server(opts.bin_dir, ["--shards", "2", *server_args], opts.keep, name)
    load = uptime()
    time.sleep(1)
    rss_start = proc_status(srv.pid)["VmRSS"]
    cpu_start = proc_cpu_secs(srv.pid)
    before = scrape(srv.admin)
    sampler = Sampler(srv)
    sampler.start()
    url = f"ws://127.0.0.1:{srv.port}/echo"
    loadbin = str(opts.bin_dir / "hubbub-load")
    common = ["--url", url, "-c", str(opts.attackers), "--rate", "1", "-d", str(opts.duration),
              "--quiet"]
    specs = [
        ("frame", [loadbin, "trickle", "--mode", "frame", *common, "--probe",
                   "--source-ips", "127.0.1.1-127.0.1.50", "--json", str(opts.keep / f"{name}.frame.json")],
         opts.keep / f"{name}.frame.txt", 0.0),
        ("head", [loadbin, "trickle", "--mode", "head", *common,
                  "--source-ips", "127.0.2.1-127.0.2.50", "--json", str(opts.keep / f"{name}.head.json")],
         opts.keep / f"{name}.head.txt", AFTER_BASELINE),
    ]
    codes = run_children(specs, opts.duration + 60)
    time.sleep(1.5)  # the server counts the last disconnects
    sampler.stop()
    after = scrape(srv.admin)
    hwm = proc_status(srv.pid)["VmHWM"]
    cpu = proc_cpu_secs(srv.pid) - cpu_start
    rc, stop_secs = srv.stop()
    reps = {k: load_json(opts.keep / f"{name}.{k}.json") for k in ("frame", "head")}
    return {
        "name": name, "label": label, "server": " ".join(srv.argv[1:]), "uptime": load,
        "commands": [" ".join(a[1:]) for _, a, _, _ in specs], "codes": codes, "reports": reps,
        "rss_start": rss_start, "hwm": hwm, "cpu": cpu, "server_rc": rc, "stop_secs": stop_secs,
        "panics": srv.panics(), "scrape_errors": sampler.scrape_errors,
        "scrape_max_ms": max((s["scrape_ms"] or 0) for s in sampler.samples) if sampler.samples else None,
        "disconnects": delta(after, before, "hubbub_disconnects_total"),
        "hs_failures": delta(after, before, "hubbub_handshake_failures_total"),
        "turns": loop_turns(after, before),
        "max_open": max((sum(by_label(s["metrics"], "hubbub_connections_open", "x").values())
                         for s in sampler.samples if s["metrics"]), default=None),
        "max_leased": max((sum(by_label(s["metrics"], "hubbub_buffer_pool_leased", "x").values())
                           for s in sampler.samples if s["metrics"]), default=None),
    }


def probe_problems(rep):
    """The probe failed if its connection was lost or refused, or an echo was missing or wrong.
    Slots still due at the end because the one message in flight came back late are latency
    (they show in `failed of due` and in the round trips), not failures of the server."""
    p = (rep or {}).get("attack", {}).get("probe")
    if p is None:
        return ["probe: no report"]
    out = []
    if p["failures"]:
        out.append(f"probe: connection lost or refused ({counts(p['failures'])})")
    if p["sent"] != p["answered"]:
        out.append(f"probe: {p['sent'] - p['answered']} of {p['sent']} sent messages unanswered")
    if rep["counters"]["verify_errors"]:
        out.append(f"probe: {rep['counters']['verify_errors']} wrong echoes")
    return out


def deadlines_problems(r, msg_timeout, hs_timeout, duration):
    """What would be wrong with the server in this run."""
    out = []
    if r["panics"]:
        out.append(f"panic in the server log: {r['panics'][0]}")
    frame, head = r["reports"]["frame"], r["reports"]["head"]
    out += probe_problems(frame)
    if head:
        a = head["attack"]
        bound = hs_timeout + 1.0
        if a["alive"] and duration > bound:
            out.append(f"head: {a['alive']} attackers alive at the end (handshake timeout {hs_timeout} s)")
        if a.get("lifetime") and a["lifetime"]["max_secs"] > bound:
            out.append(f"head: an attacker lived {a['lifetime']['max_secs']:.1f} s (> {bound} s)")
    if frame and msg_timeout is not None:
        # 1 B/s, 10-byte payload: the first frame completes 8 s in, the next needs 16 s; a 10 s
        # message deadline must end every attacker within about 8 + 1 + 10 s (+ a tick).
        a = frame["attack"]
        bound = 8 + 1 + msg_timeout + 1.5
        if a["alive"] and duration > bound:
            out.append(f"frame: {a['alive']} attackers alive at the end (message timeout {msg_timeout} s)")
        if a.get("lifetime") and a["lifetime"]["max_secs"] > bound:
            out.append(f"frame: an attacker lived {a['lifetime']['max_secs']:.1f} s")
    return out


def print_deadlines(runs):
    print("### 5,000 partial-frame and 5,000 partial-head holders at once, `--shards 2`\n")
    print("Probe: one well-behaved echo client, 64 B every 10 ms, one in flight (round trips in ms, "
          "from the scheduled send time). Failed of due: slots not answered by the end, which "
          "includes slots still waiting their turn behind a slow round trip, and any lost "
          "connection (named).\n")
    print("| server flags | probe before: p50 / p99 | probe during: p50 / p99 / max | failed of due "
          "| server peak RSS - start | server CPU | most open / pool leased |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        pc = probe_cells(r["reports"]["frame"]) or ("-", "-", "-")
        print(f"| {r['label']} | {pc[0]} | {pc[1]} | {pc[2]} | {mib(r['hwm'] - r['rss_start'])} MiB "
              f"| {r['cpu']:.1f} s | {int(r['max_open'] or 0):,} / {int(r['max_leased'] or 0):,} |")
    print()
    print("Attackers (lifetime from the start of each attack, s):\n")
    print("| server flags, attack | began | ended by the server | lifetime min / p50 / p99 / max "
          "| alive at the end | exit |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        for k in ("frame", "head"):
            print(attack_row(f"{r['label']}, `--mode {k}`", r["reports"][k], r["codes"][k]))
    print()
    print("Server side (deltas over the run, all shards):\n")
    print("| server flags | `hubbub_disconnects_total` | `hubbub_handshake_failures_total` "
          "| loop turns (`hubbub_loop_turn_seconds`) | /metrics scrapes: slowest, failed |")
    print("|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['label']} | {counts(r['disconnects'])} | {counts(r['hs_failures'])} "
              f"| {turns_cell(r['turns'])} | {ms(r['scrape_max_ms'])} ms, {r['scrape_errors']} |")
    print()


MEMORY_VARIANTS = {
    "together": "all started together (the holders' 1 s probe baseline first)",
    "room-first": "the room's members connected and flooding first, the holders 2 s after the last",
}


def memory_run(opts, variant):
    """`together`: the holders (with the probe) start, the room's members and publisher 1.2 s
    later, after the probe's baseline. `room-first`: the room's members (with the probe) start,
    the publisher after the baseline, the holders once every member has had time to connect."""
    name = f"memory-{variant}"
    limit = opts.memory_limit
    # The room flood loads the memory budget: the per-connection rates,
    # which would close the flooders first, are lifted.
    srv = Server(opts.bin_dir, ["--shards", "2", "--memory-limit", limit, "--max-messages-per-sec", "1000000000",
                                "--max-bytes-per-sec", "1TiB"], opts.keep, name)
    load = uptime()
    time.sleep(1)
    st = proc_status(srv.pid)
    rss_start, hwm_start = st["VmRSS"], st["VmHWM"]
    before = scrape(srv.admin)
    limit_bytes = by_label(before, "hubbub_memory_limit_bytes", "x").get("", None)
    sampler = Sampler(srv)
    sampler.start()
    base = f"ws://127.0.0.1:{srv.port}"
    loadbin = str(opts.bin_dir / "hubbub-load")
    d = str(opts.duration)
    room_first = variant == "room-first"
    probe_on = "noread" if room_first else "message"
    # hubbub-load's default --connect-rate is 2000/s.
    holders_at = AFTER_BASELINE + opts.holders / 2000 + 2.0 if room_first else 0.0
    specs = [
        ("message", [loadbin, "trickle", "--mode", "message", "--fragment-bytes", "900KiB",
                     "--url", f"{base}/echo", "-c", str(opts.holders), "--rate", "1", "-d", d,
                     *(["--probe"] if probe_on == "message" else []), "--quiet",
                     "--source-ips", "127.0.3.1-127.0.3.50",
                     "--json", str(opts.keep / f"{name}.message.json")],
         opts.keep / f"{name}.message.txt", holders_at),
        ("noread", [loadbin, "flood", "--no-read", "--recv-buffer", "4096", "--url",
                    f"{base}/room/hostile", "-c", str(opts.holders), "-d", d,
                    *(["--probe"] if probe_on == "noread" else []), "--quiet",
                    "--source-ips", "127.0.4.1-127.0.4.50",
                    "--json", str(opts.keep / f"{name}.noread.json")],
         opts.keep / f"{name}.noread.txt", 0.0 if room_first else AFTER_BASELINE),
        ("publisher", [loadbin, "flood", "--url", f"{base}/room/hostile", "-c", "1", "-d", d,
                       "--quiet", "--json", str(opts.keep / f"{name}.publisher.json")],
         opts.keep / f"{name}.publisher.txt", AFTER_BASELINE),
    ]
    t_attack = time.monotonic() - sampler.t0
    codes = run_children(specs, opts.duration + 60)
    time.sleep(2)  # a few samples after the attack: what the server gives back
    sampler.stop()
    after = scrape(srv.admin)
    hwm = proc_status(srv.pid)["VmHWM"]
    rc, stop_secs = srv.stop()
    with open(opts.keep / f"{name}.samples.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_secs", "rss_bytes", "hwm_bytes", "cpu_secs", "partial_input", "outgoing",
                    "history", "open", "shed_upgrade_refused", "shed_partial_input", "shed_outgoing"])
        for s in sampler.samples:
            m = s["metrics"] or {}
            mem = by_label(m, "hubbub_memory_bytes", "kind")
            shed = by_label(m, "hubbub_memory_shed_total")
            w.writerow([f"{s['t'] - t_attack:.2f}", s["rss"], s["hwm"], f"{s['cpu']:.2f}",
                        int(mem.get("partial_input", 0)), int(mem.get("outgoing", 0)),
                        int(mem.get("history", 0)),
                        int(sum(by_label(m, "hubbub_connections_open", "x").values())),
                        int(shed.get("upgrade_refused", 0)), int(shed.get("partial_input", 0)),
                        int(shed.get("outgoing", 0))])
    reps = {k: load_json(opts.keep / f"{name}.{k}.json") for k in ("message", "noread", "publisher")}
    return {
        "name": name, "variant": variant, "probe_on": probe_on, "starts": {k: dl for k, _, _, dl in specs},
        "server": " ".join(srv.argv[1:]), "uptime": load, "limit": limit,
        "limit_bytes": limit_bytes, "commands": [" ".join(a[1:]) for _, a, _, _ in specs],
        "codes": codes, "reports": reps, "rss_start": rss_start, "hwm_start": hwm_start,
        "hwm": hwm, "samples": sampler.samples, "t_attack": t_attack, "server_rc": rc,
        "stop_secs": stop_secs, "panics": srv.panics(), "scrape_errors": sampler.scrape_errors,
        "shed": delta(after, before, "hubbub_memory_shed_total"),
        "disconnects": delta(after, before, "hubbub_disconnects_total"),
        "hs_failures": delta(after, before, "hubbub_handshake_failures_total"),
        "turns": loop_turns(after, before),
        "pool_refused": sum(delta(after, before, "hubbub_buffer_pool_refused_total", "x").values()),
    }


def loop_turns(after, before):
    """Loop turns of all shards over the run: (turns, over 100 ms, over 1 s, upper bound of the
    longest) from `hubbub_loop_turn_seconds`."""
    def buckets(m):
        out = {}
        for (n, kv), v in m.items():
            if n == "hubbub_loop_turn_seconds_bucket":
                out[dict(kv)["le"]] = out.get(dict(kv)["le"], 0) + v
        return out
    a, b = buckets(after), buckets(before)
    d = {le: a[le] - b.get(le, 0) for le in a}
    total = d.get("+Inf", 0)
    bounds = sorted((float(le), v) for le, v in d.items() if le != "+Inf")
    longest = next((le for le, v in bounds if v >= total), None)
    return {"turns": int(total), "over_100ms": int(total - d.get("0.1", total)),
            "over_1s": int(total - d.get("1", total)),
            "longest": "> " + str(bounds[-1][0]) + " s" if longest is None and bounds
            else f"<= {longest:g} s"}


def turns_cell(t):
    return f"{t['turns']:,}; {t['over_100ms']:,} > 0.1 s, {t['over_1s']:,} > 1 s; longest {t['longest']}"


def memory_budget(s):
    return sum(by_label(s["metrics"] or {}, "hubbub_memory_bytes", "kind").values())


def memory_problems(r, slack):
    out = []
    if r["panics"]:
        out.append(f"panic in the server log: {r['panics'][0]}")
    grew = r["hwm"] - r["rss_start"]
    if r["limit_bytes"] and grew > r["limit_bytes"] + slack:
        out.append(f"peak RSS - start = {grew / MIB:.1f} MiB > limit {r['limit_bytes'] / MIB:.0f} MiB "
                   f"+ {slack / MIB:.0f} MiB slack")
    out += probe_problems(r["reports"][r["probe_on"]])
    peak_budget = max((memory_budget(s) for s in r["samples"]), default=0)
    if r["limit_bytes"] and peak_budget > r["limit_bytes"] + slack:
        out.append(f"hubbub_memory_bytes peaked at {peak_budget / MIB:.1f} MiB")
    return out


def print_memory(r, every, dense):
    lim = r["limit_bytes"]
    grew = r["hwm"] - r["rss_start"]
    peak_budget = max(r["samples"], key=memory_budget) if r["samples"] else None
    print(f"### `--memory-limit {r['limit']}`, `--shards 2`: 3,000 x 900 KiB partial messages and "
          f"3,000 non-reading room members, {MEMORY_VARIANTS[r['variant']]}\n")
    print("Started at (s after the first): " + ", ".join(
        f"{k} {v:.1f}" for k, v in sorted(r["starts"].items(), key=lambda kv: kv[1])) + "\n")
    print("| figure | value |")
    print("|---|---|")
    print(f"| RSS at start (idle) | {mib(r['rss_start'])} MiB |")
    print(f"| peak RSS (VmHWM) | {mib(r['hwm'])} MiB |")
    print(f"| **peak RSS - RSS at start** | **{mib(grew)} MiB** (limit {mib(lim)} MiB: "
          f"{grew / lim:.2f}x) |" if lim else f"| peak RSS - start | {mib(grew)} MiB |")
    if peak_budget:
        kinds = by_label(peak_budget["metrics"], "hubbub_memory_bytes", "kind")
        print(f"| peak `hubbub_memory_bytes` (sum of kinds, 0.5 s samples) | "
              f"{mib(memory_budget(peak_budget))} MiB at {peak_budget['t'] - r['t_attack']:.1f} s "
              f"({', '.join(f'{k} {mib(v)}' for k, v in sorted(kinds.items()))}) |")
    print(f"| `hubbub_memory_shed_total` | {counts(r['shed'])} |")
    print(f"| `hubbub_disconnects_total` | {counts(r['disconnects'])} |")
    print(f"| `hubbub_handshake_failures_total` | {counts(r['hs_failures'])} |")
    print(f"| `hubbub_buffer_pool_refused_total` | {r['pool_refused']:,} |")
    print(f"| loop turns, all shards (`hubbub_loop_turn_seconds`) | {turns_cell(r['turns'])} |")
    print(f"| /metrics scrapes failed | {r['scrape_errors']} of {len(r['samples'])} |")
    print(f"| server stop (SIGTERM to exit) | {r['stop_secs']:.1f} s, exit {r['server_rc']} |")
    print()
    print("Over time (t from the start of the first attack process; MiB; shed counts cumulative; "
          "rows equal to the one before left out):\n")
    print("| t s | RSS | partial_input | outgoing | history | open conns | shed upgrade_refused "
          "/ partial_input / outgoing |")
    print("|---|---|---|---|---|---|---|")
    # A row per sample while things change fast (until `dense` s), then one every `every` s;
    # a row equal to the one before (RSS within 1 MiB) is left out, the last one never.
    rows, next_t = [], 0.0
    for s in r["samples"]:
        t = s["t"] - r["t_attack"]
        if t < next_t - 0.01 or not s["metrics"]:
            continue
        step = SAMPLE_SECS if t < dense else every
        next_t = (int(t / step + 1e-6) + 1) * step if t >= 0 else 0.0
        m = s["metrics"]
        mem = by_label(m, "hubbub_memory_bytes", "kind")
        shed = by_label(m, "hubbub_memory_shed_total")
        cells = (f"{mib(mem.get('partial_input', 0))} | {mib(mem.get('outgoing', 0))} "
                 f"| {mib(mem.get('history', 0))} "
                 f"| {int(sum(by_label(m, 'hubbub_connections_open', 'x').values())):,} "
                 f"| {int(shed.get('upgrade_refused', 0)):,} / {int(shed.get('partial_input', 0)):,} "
                 f"/ {int(shed.get('outgoing', 0)):,}")
        rows.append((t, s["rss"], cells))
    shown = None
    for i, (t, rss, cells) in enumerate(rows):
        same = shown is not None and shown[2] == cells and abs(shown[1] - rss) < MIB
        if same and i != len(rows) - 1:
            continue
        print(f"| {t:.1f} | {mib(rss)} | {cells} |")
        shown = (t, rss, cells)
    print()
    print("What the clients saw:\n")
    print("| clients | began | ended by the server | lifetime min / p50 / p99 / max | "
          "alive at the end | exit |")
    print("|---|---|---|---|---|---|")
    for k, label in (("message", "900 KiB partial message"), ("noread", "room, `--no-read`"),
                     ("publisher", "room publisher (reads)")):
        print(attack_row(label, r["reports"][k], r["codes"][k]))
    pc = probe_cells(r["reports"][r["probe_on"]])
    if pc:
        print(f"\nProbe (echo, 64 B every 10 ms, run by the {r['probe_on']} process): before p50 / p99 {pc[0]} ms; during p50 / p99 / max "
              f"{pc[1]} ms; failed {pc[2]}.")
    print()


def kill_children():
    """Kills, by PID, every child still running (after an interruption or an error)."""
    for p in CHILDREN:
        if p.poll() is None:
            p.kill()
            p.wait()


def on_sigterm(_signum, _frame):
    raise SystemExit("stopped by SIGTERM")


def main():
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return run(parse_args())
    finally:
        kill_children()


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["deadlines", "memory"], help="one figure only")
    ap.add_argument("--bin-dir", type=Path, default=ROOT / "target" / "release")
    ap.add_argument("--keep", type=Path, help="directory for JSON reports, logs and the CSV "
                    "(default: a temporary one, removed at the end)")
    ap.add_argument("--duration", type=int, default=40, help="seconds of each attack (max 60)")
    ap.add_argument("--attackers", type=int, default=5000, help="deadlines: attackers per mode")
    ap.add_argument("--holders", type=int, default=3000,
                    help="memory: partial-message holders, and as many non-reading room members")
    ap.add_argument("--memory-limit", default="256MiB")
    ap.add_argument("--slack-mib", type=int, default=40, help="memory: allowed excess over the limit")
    ap.add_argument("--table-every", type=float, default=4.0, help="memory: seconds between rows")
    ap.add_argument("--table-dense", type=float, default=6.0,
                    help="memory: a row per sample (0.5 s) until this many seconds in")
    opts = ap.parse_args()
    if not 1 <= opts.duration <= 60:
        ap.error("--duration must be between 1 and 60 s")
    if not 1 <= 2 * opts.attackers + 2 <= MAX_SERVER_SOCKETS:
        ap.error(f"--attackers: the server would hold {2 * opts.attackers + 2} sockets "
                 f"(at most {MAX_SERVER_SOCKETS})")
    if not 1 <= 2 * opts.holders + 2 <= MAX_SERVER_SOCKETS:
        ap.error(f"--holders: the server would hold {2 * opts.holders + 2} sockets "
                 f"(at most {MAX_SERVER_SOCKETS})")
    if opts.attackers < 1 or opts.holders < 1:
        ap.error("--attackers and --holders must be at least 1")
    for b in ("hubbub", "hubbub-load"):
        if not (opts.bin_dir / b).is_file():
            ap.error(f"{opts.bin_dir / b} is missing: cargo build --release --workspace --bins")
    return opts


def run(opts):
    tmp = None
    if opts.keep is None:
        tmp = tempfile.TemporaryDirectory(prefix="hostile-")
        opts.keep = Path(tmp.name)
    opts.keep.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    print(f"<!-- benches/hostile.py at {commit}, {time.strftime('%Y-%m-%d %H:%M:%S')} -->\n")
    problems = []
    if opts.only in (None, "deadlines"):
        runs = [deadlines_run(opts, "deadlines-default", [], "defaults (`--message-timeout-secs 30 "
                              "--handshake-timeout-secs 10`)")]
        problems += [f"deadlines, defaults: {p}" for p in deadlines_problems(runs[0], None, 10, opts.duration)]
        runs.append(deadlines_run(opts, "deadlines-short",
                                  ["--message-timeout-secs", "10", "--handshake-timeout-secs", "5"],
                                  "`--message-timeout-secs 10 --handshake-timeout-secs 5`"))
        problems += [f"deadlines, short: {p}" for p in deadlines_problems(runs[1], 10, 5, opts.duration)]
        print_deadlines(runs)
        print("Commands (`hubbub-load` ran both at once):\n")
        for r in runs:
            print(f"- `{r['server']}` (load before: `{r['uptime']}`)")
            for c in r["commands"]:
                print(f"  - `hubbub-load {c}`")
        print()
    if opts.only in (None, "memory"):
        for variant in MEMORY_VARIANTS:
            r = memory_run(opts, variant)
            problems += [f"memory, {variant}: {p}" for p in memory_problems(r, opts.slack_mib * MIB)]
            print_memory(r, opts.table_every, opts.table_dense)
            print("Commands (started as above):\n")
            print(f"- `{r['server']}` (load before: `{r['uptime']}`)")
            for c in r["commands"]:
                print(f"  - `hubbub-load {c}`")
            print()
    print(f"Load after: `{uptime()}`\n")
    if problems:
        print("**Problems:**\n")
        for p in problems:
            print(f"- {p}")
    else:
        print("No problem found (no panic, no failed probe, every deadline kept, memory within the "
              "limit plus slack).")
    if tmp:
        tmp.cleanup()
    else:
        print(f"\n<!-- raw files in {opts.keep} -->")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
