#!/usr/bin/env bash
# Publishers on node A, subscribers on node B, Redis between; then the same
# inside one node without Redis. Everything on loopback, killed by PID.
set -u
# Needs: cargo build --release --bins --examples; redis-server on PATH.
cd "$(dirname "$0")/.."
BIN=target/release/hubbub
LAT=target/release/examples/cluster_latency
RATE=${RATE:-10000}; SUBS=${SUBS:-10}; SECS=${SECS:-10}
redis-server --port 16399 --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & RP=$!
sleep 0.5
common="--admin-listen off --shards 1 --max-messages-per-sec 1000000 --log-level warn"
$BIN --listen 127.0.0.1:18081 $common --redis redis://127.0.0.1:16399 --node-id a >/dev/null 2>&1 & A=$!
$BIN --listen 127.0.0.1:18082 $common --redis redis://127.0.0.1:16399 --node-id b >/dev/null 2>&1 & B=$!
sleep 1.5
echo "through Redis (pub on A, subs on B):"
$LAT --pub 127.0.0.1:18081 --sub 127.0.0.1:18082 --subscribers $SUBS --rate $RATE --secs $SECS --channel x
kill $A $B $RP; wait $A $B $RP 2>/dev/null
$BIN --listen 127.0.0.1:18083 $common >/dev/null 2>&1 & S=$!
sleep 1
echo "one node, no Redis:"
$LAT --pub 127.0.0.1:18083 --sub 127.0.0.1:18083 --subscribers $SUBS --rate $RATE --secs $SECS --channel x
kill $S; wait $S 2>/dev/null
