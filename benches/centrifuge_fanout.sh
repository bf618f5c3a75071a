#!/usr/bin/env bash
# Issue 15's figures, same run, same server binary:
#   fan-out: deliveries/s and publish-to-deliver p50/p99 to SUBS Centrifuge-protocol
#     subscribers (/connection/websocket, `hubbub-load broadcast --centrifuge`) against SUBS
#     /room members (`hubbub-load broadcast`), same publishers, rate, size and duration;
#   idle memory: server RSS delta per connection (VmRSS, --server-pid) for IDLE connections on
#     /echo, /ws, /connection/websocket upgraded only, /connection/websocket connected and
#     subscribed (`connect --centrifuge`), and /room members (a room member is subscribed on
#     upgrade: the closest /room counterpart of a subscribed Centrifuge client).
# ROUNDS=0 skips the fan-out, IDLE=0 the idle memory.
# Every scenario gets a fresh server (the same binary, so no run inherits another's heap), and the
# fan-out pair is repeated ROUNDS times, alternating, so a busy neighbour on the shared box shows
# as spread between rounds rather than as a difference between the protocols. Read the ratios.
# Bounded: every hubbub-load run stops by itself; each server is killed by its PID.
# Needs: cargo build --release --workspace --bins; python3; an open-file limit of at least
# SUBS + 200 (a single load process holds every client; the server holds one scenario at a time).
set -u
cd "$(dirname "$0")/.."
BIN=${HUBBUB_BIN:-target/release/hubbub}
LOAD=target/release/hubbub-load
SUBS=${SUBS:-10000}; PUBS=${PUBS:-1}; RATE=${RATE:-20}; SECS=${SECS:-10}; SIZE=${SIZE:-64}
IDLE=${IDLE:-10000}; ROUNDS=${ROUNDS:-2}; SHARDS=${SHARDS:-2}
SOURCES=${SOURCES:-127.0.0.1-127.0.0.8}
PORT=${PORT:-28391}
OUT=${OUT:-/tmp/hubbub-centrifuge-fanout.$$}
mkdir -p "$OUT"
# Per-connection limits high enough that the load is the publishers' schedule, not a refusal.
FLAGS="--listen 127.0.0.1:$PORT --admin-listen off --shards $SHARDS --max-messages-per-sec 100000 --log-level warn"

server=""
stop_server() { [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null; server=""; }
trap stop_server EXIT
start_server() {
  $BIN $FLAGS >"$OUT/server.log" 2>&1 & server=$!
  for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return 0
    sleep 0.1
  done
  echo "hubbub did not start; see $OUT/server.log" >&2; exit 1
}

fanout() { # NAME URL [FLAGS...]
  local name=$1 url=$2; shift 2
  start_server
  $LOAD broadcast --url "$url" "$@" -n "$SUBS" -p "$PUBS" --rate "$RATE" -s "$SIZE" -d "$SECS" \
    --connect-rate 5000 --source-ips "$SOURCES" --quiet --json "$OUT/$name.json" >"$OUT/$name.txt" 2>&1
  echo "  $name: exit $? ($(grep -c . "$OUT/$name.txt") lines in $OUT/$name.txt)"
  stop_server
}

idle() { # NAME URL [FLAGS...]
  local name=$1 url=$2; shift 2
  start_server
  sleep 0.5 # the server's own start-up allocations settle before the "before" snapshot
  $LOAD connect --url "$url" "$@" -n "$IDLE" --rate 5000 --hold-secs 2 --server-pid "$server" \
    --source-ips "$SOURCES" --quiet --json "$OUT/$name.json" >"$OUT/$name.txt" 2>&1
  echo "  $name: exit $?"
  stop_server
}

[ "$ROUNDS" -gt 0 ] && echo "fan-out: $SUBS subscribers + $PUBS publisher(s), $RATE msg/s of $SIZE B for $SECS s, $SHARDS shards, $ROUNDS rounds"
for r in $(seq "$ROUNDS"); do
  fanout "room-$r" "ws://127.0.0.1:$PORT/room/fanout"
  fanout "centrifuge-$r" "ws://127.0.0.1:$PORT/connection/websocket" --centrifuge --channel fanout
done
if [ "$IDLE" -gt 0 ]; then
  echo "idle memory: $IDLE connections each"
  idle idle-echo "ws://127.0.0.1:$PORT/echo"
  idle idle-ws "ws://127.0.0.1:$PORT/ws"
  idle idle-cf-upgraded "ws://127.0.0.1:$PORT/connection/websocket"
  idle idle-cf-subscribed "ws://127.0.0.1:$PORT/connection/websocket" --centrifuge --channel idle
  idle idle-room "ws://127.0.0.1:$PORT/room/idle"
fi

python3 - "$OUT" "$ROUNDS" <<'EOF'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(name):
    try:
        return json.load(open(f"{out}/{name}.json"))
    except (OSError, ValueError):
        return None
print(f"\n{'run':<16}{'members':>8}{'published':>10}{'delivered':>12}{'of expected':>13}{'deliv/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'max ms':>9}{'dropped':>8}")
pairs = []
for r in range(1, rounds + 1):
    row = {}
    for kind in ("room", "centrifuge"):
        j = load(f"{kind}-{r}")
        if j is None:
            print(f"{kind}-{r:<10} no report"); continue
        c, d = j["counters"], j["latency"]["delivery"]
        rate = c["received"] / j["measure_secs"] if j["measure_secs"] else 0.0
        share = c["received"] / j["expected_deliveries"] if j["expected_deliveries"] else 0.0
        row[kind] = (rate, d["p50_ms"], d["p99_ms"])
        print(f"{kind + '-' + str(r):<16}{c['receivers']:>8}{c['published']:>10}{c['received']:>12}{share:>12.4%}{rate:>11.0f}"
              f"{d['p50_ms']:>9.3f}{d['p99_ms']:>9.3f}{d['p99_9_ms']:>10.3f}{d['max_ms']:>9.3f}{c['dropped']:>8}")
    if len(row) == 2:
        pairs.append(row)
for i, row in enumerate(pairs, 1):
    (rr, r50, r99), (cr, c50, c99) = row["room"], row["centrifuge"]
    print(f"round {i}: centrifuge/room  deliveries/s {cr / rr:.2f}x  p50 {c50 / r50:.2f}x  p99 {c99 / r99:.2f}x")
idle_runs = [n for n in ("idle-echo", "idle-ws", "idle-cf-upgraded", "idle-cf-subscribed", "idle-room") if load(n)]
if idle_runs:
    print(f"\n{'idle endpoint':<34}{'opened':>8}{'server RSS delta per connection':>34}")
for name, label in (("idle-echo", "/echo"), ("idle-ws", "/ws"),
                    ("idle-cf-upgraded", "/connection/websocket upgraded"),
                    ("idle-cf-subscribed", "/connection/websocket subscribed"),
                    ("idle-room", "/room member")):
    j = load(name)
    if j is None:
        continue
    per = j and (j.get("memory") or {}).get("server_rss_per_conn_bytes")
    opened = j["counters"]["opened"] if j else 0
    print(f"{label:<34}{opened:>8}{(f'{per:.0f} B' if per is not None else 'n/a'):>34}")
print(f"\nreports: {out}")
EOF
