#!/usr/bin/env bash
# Publish-to-deliver latency and deliveries/s, same run, three setups:
#   1. two nodes through one Redis (publishers on A, subscribers on B),
#   2. two nodes through two Redis servers (--redis twice; channels spread),
#   3. one node alone, no Redis.
# Each setup carries two channels, "a" and "b" (with two servers, "a" lives
# on the first and "b" on the second: FNV-1a, docs/CLUSTER.md), each with
# its own latency client at RATE/2 msg/s and SUBS/2 subscribers, so every
# setup delivers RATE*SUBS per second. Through Redis each client also
# prints "publish -> Redis push", the publishing node's half of the path.
# Everything on loopback, killed by PID.
# Needs: cargo build --release --bins --examples; redis-server on PATH.
set -u
for tool in redis-server; do
  command -v "$tool" >/dev/null || { echo "$0: $tool is not on PATH (Debian: apt-get install redis-server redis-tools)" >&2; exit 2; }
done
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/hubbub}  # BIN=path: another build, for an A/B in one session
LAT=target/release/examples/cluster_latency
RATE=${RATE:-10000}; SUBS=${SUBS:-10}; SECS=${SECS:-10}
# TAP=0: no Redis tap (it is one more Pub/Sub client for Redis to feed and
# one more thread in each latency client): the end-to-end figure alone.
HALF_RATE=$((RATE / 2)); HALF_SUBS=$((SUBS / 2))
common="--admin-listen off --shards 1 --max-messages-per-sec 1000000 --max-new-channels-per-minute 1000 --log-level warn"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

redis-server --port 26399 --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & R1PID=$!; pids+=($R1PID)
redis-server --port 26400 --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & R2PID=$!; pids+=($R2PID)
sleep 0.5

# CPU ticks (1/100 s) a process used so far (user + system, all threads).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Each server process's share of a core while the clients ran: "LABEL=NN%".
cpu_line() { # SECONDS LABEL PID BEFORE [LABEL PID BEFORE ...]
  local secs=$1 out=""; shift
  while [ $# -ge 3 ]; do
    out="$out $1=$(( ( $(ticks "$2") - $3 ) / secs ))%"; shift 3
  done
  echo "  server CPU (% of one core):$out"
}

# Two latency clients at once, one per channel; prints each one's line.
# With a Redis URL for each channel, each client also listens to its
# channel's Pub/Sub key and prints the publishing node's half of the path.
measure() { # PUB_ADDR SUB_ADDR [TAP_A TAP_B]
  local tap_a=() tap_b=()
  [ $# -ge 4 ] && tap_a=(--redis-tap "$3") && tap_b=(--redis-tap "$4")
  $LAT --pub "$1" --sub "$2" --subscribers $HALF_SUBS --rate $HALF_RATE --secs $SECS --channel a "${tap_a[@]}" > /tmp/hubbub-lat-a.$$ &
  local la=$!
  $LAT --pub "$1" --sub "$2" --subscribers $HALF_SUBS --rate $HALF_RATE --secs $SECS --channel b "${tap_b[@]}" > /tmp/hubbub-lat-b.$$ &
  local lb=$!
  wait $la $lb
  sed 's/^/  channel a: /' /tmp/hubbub-lat-a.$$; sed 's/^/  channel b: /' /tmp/hubbub-lat-b.$$
  rm -f /tmp/hubbub-lat-a.$$ /tmp/hubbub-lat-b.$$
}

run_pair() { # LABEL TAP_A TAP_B REDIS_ARGS...
  local label=$1 tap_a=$2 tap_b=$3; shift 3
  $BIN --listen 127.0.0.1:28081 $common "$@" --node-id a >/dev/null 2>&1 & local a=$!
  $BIN --listen 127.0.0.1:28082 $common "$@" --node-id b >/dev/null 2>&1 & local b=$!
  sleep 1.5
  echo "$label (pub on A, subs on B), $RATE msg/s:"
  local ta=$(ticks $a) tb=$(ticks $b) t1=$(ticks $R1PID) t2=$(ticks $R2PID)
  if [ "${TAP:-1}" = 1 ]; then
    measure 127.0.0.1:28081 127.0.0.1:28082 "$tap_a" "$tap_b"
  else
    measure 127.0.0.1:28081 127.0.0.1:28082
  fi
  cpu_line $((SECS + 2)) A $a $ta B $b $tb redis1 $R1PID $t1 redis2 $R2PID $t2
  kill $a $b; wait $a $b 2>/dev/null
}

R1=redis://127.0.0.1:26399; R2=redis://127.0.0.1:26400
run_pair "one Redis" $R1 $R1 --redis $R1
run_pair "two Redis" $R1 $R2 --redis $R1 --redis $R2

$BIN --listen 127.0.0.1:28083 $common >/dev/null 2>&1 & S=$!
sleep 1
echo "one node, no Redis, $RATE msg/s:"
ts=$(ticks $S)
measure 127.0.0.1:28083 127.0.0.1:28083
cpu_line $((SECS + 2)) node $S $ts
kill $S; wait $S 2>/dev/null
