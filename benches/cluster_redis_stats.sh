#!/usr/bin/env bash
# Where Redis spends its time per publish: two nodes through one Redis
# (publishers on A, subscribers on B, the load of benches/cluster.sh),
# then Redis's `INFO commandstats` for that load alone (reset once the
# nodes are up) and its CPU. `EVALSHA` is the publish script, the commands
# under it are those it runs. docs/CLUSTER.md "Fourth round" reads it.
# NODES=N (default 2): N-2 more nodes join with no client at all; each
# node's CPU and the bytes Redis sent show what the nodes that hold no
# channel are made to read. BIN=path: another build, for an A/B in one
# session. Everything on loopback, killed by PID.
# Needs: cargo build --release --bins --examples; redis-server, redis-cli.
set -u
for tool in redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "$0: $tool is not on PATH (Debian: apt-get install redis-server redis-tools)" >&2; exit 2; }
done
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/hubbub}
LAT=target/release/examples/cluster_latency
RATE=${RATE:-10000}; SUBS=${SUBS:-10}; SECS=${SECS:-10}; NODES=${NODES:-2}
PORT=26411
common="--admin-listen off --shards 1 --max-messages-per-sec 1000000 --max-new-channels-per-minute 1000 --log-level warn"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

redis-server --port $PORT --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & pids+=($!)
sleep 0.5
$BIN --listen 127.0.0.1:28091 $common --redis redis://127.0.0.1:$PORT --node-id a >/dev/null 2>&1 & pids+=($!)
$BIN --listen 127.0.0.1:28092 $common --redis redis://127.0.0.1:$PORT --node-id b >/dev/null 2>&1 & pids+=($!)
idle=()
for n in $(seq 3 "$NODES"); do
  $BIN --listen 127.0.0.1:$((28090 + n)) $common --redis redis://127.0.0.1:$PORT --node-id "n$n" >/dev/null 2>&1 &
  idle+=($!)
done
sleep 1.5
# CPU ticks (1/100 s) a process used so far (user + system, all threads).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
servers=("${pids[@]:1}" "${idle[@]}")
before=(); for p in "${servers[@]}"; do before+=("$(ticks "$p")"); done
redis-cli -p $PORT config resetstat >/dev/null
for channel in a b; do
  $LAT --pub 127.0.0.1:28091 --sub 127.0.0.1:28092 --subscribers $((SUBS / 2)) --rate $((RATE / 2)) \
    --secs $SECS --channel $channel > /tmp/hubbub-stats-$channel.$$ &
  pids+=($!)
done
wait "${pids[@]:3}"
line="node CPU (% of one core):"; names=(a b); for n in $(seq 3 "$NODES"); do names+=("n$n"); done
for i in "${!servers[@]}"; do
  line="$line ${names[$i]}=$(( ( $(ticks "${servers[$i]}") - ${before[$i]} ) / SECS ))%"
done
echo "$line"
pids+=("${idle[@]}")
for channel in a b; do
  sed "s/^/channel $channel: /" /tmp/hubbub-stats-$channel.$$; rm -f /tmp/hubbub-stats-$channel.$$
done
redis-cli -p $PORT info commandstats | grep '^cmdstat_' | sed 's/,rejected_calls.*//'
redis-cli -p $PORT info cpu | grep -E '^used_cpu_(sys|user):'
redis-cli -p $PORT info stats | grep -E '^total_net_output_bytes:'
