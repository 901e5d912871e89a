#!/usr/bin/env bash
# Runs the load-generator scenarios whose results are in this directory.
# Usage (from the repository root): bash perf-reports/loadgen/run.sh [name ...]
# Each run is bounded (<= 2 minutes). LG may point at a prebuilt loadgen
# binary (default: go run ./bench/loadgen).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=perf-reports/loadgen
LG=${LG:-go run ./bench/loadgen}
[ -x .bin/arq ] || go build -o .bin/arq ./cmd/arq

run() { # name args...
	local name=$1; shift
	echo "== $name: loadgen $*" | tee "$OUT/$name.txt"
	$LG "$@" -out "$OUT/$name.json" 2>&1 | tee -a "$OUT/$name.txt"
}

declare -A R
R[connect-arqon]="-scenario connect -target arqon -conns 5000 -conn-rate 2000"
R[connect-arqon-proto]="-scenario connect -target arqon -codec proto -conns 5000 -conn-rate 2000"
R[connect-nats]="-scenario connect -target nats -conns 5000 -conn-rate 2000"
R[connect-max-arqon]="-scenario connect -target arqon -conns 5000 -conn-rate 0 -concurrency 32"
R[connect-max-nats]="-scenario connect -target nats -conns 5000 -conn-rate 0 -concurrency 32"
R[idle-arqon]="-scenario idle -target arqon -sizes 1000,5000,10000,18000 -duration 5s"
R[idle-nats]="-scenario idle -target nats -sizes 1000,5000,10000,18000 -duration 5s"
R[idle-arqon-vs-bare]="-scenario idle -target arqon -bare -sizes 1000,5000,10000,18000 -duration 5s"
R[idle-bare]="-scenario idle -target bare -sizes 1000,5000,10000,18000 -duration 5s"
R[fanout-arqon]="-scenario fanout -target arqon -conns 1000 -rate 100 -duration 20s"
R[fanout-arqon-proto]="-scenario fanout -target arqon -codec proto -conns 1000 -rate 100 -duration 20s"
R[fanout-nats]="-scenario fanout -target nats -conns 1000 -rate 100 -duration 20s"
R[fanout-max-arqon]="-scenario fanout -target arqon -conns 1000 -rate 0 -window 4 -duration 15s"
R[fanout-max-nats]="-scenario fanout -target nats -conns 1000 -rate 0 -window 4 -duration 15s"
R[pubsub-arqon]="-scenario pubsub -target arqon -pairs 500 -rate 20000 -duration 20s"
R[pubsub-nats]="-scenario pubsub -target nats -pairs 500 -rate 20000 -duration 20s"
R[storm-arqon]="-scenario storm -target arqon -churn-rate 200 -duration 10s -reconnect 5000"
R[storm-nats]="-scenario storm -target nats -churn-rate 200 -duration 10s -reconnect 5000"
R[slow-arqon]="-scenario slow -target arqon -conns 50 -slow 10 -rate 2000 -payload 512 -duration 20s -progress 2s"
R[slow-nats]="-scenario slow -target nats -conns 50 -slow 10 -rate 2000 -payload 512 -duration 20s -progress 2s"
R[storm10k-arqon]="-scenario storm -target arqon -churn-rate 200 -duration 5s -reconnect 10000"
R[storm10k-nats]="-scenario storm -target nats -churn-rate 200 -duration 5s -reconnect 10000"
R[soak-nats]="-scenario soak -target nats -duration 60s -idle 2000 -conns 200 -pairs 100 -rate 5000 -churn-rate 20"
R[soak-arqon]="-scenario soak -target arqon -duration 60s -idle 2000 -conns 200 -pairs 100 -rate 5000 -churn-rate 20"

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(connect-arqon connect-arqon-proto connect-nats connect-max-arqon connect-max-nats idle-arqon idle-nats idle-bare idle-arqon-vs-bare
	fanout-arqon fanout-arqon-proto fanout-nats fanout-max-arqon fanout-max-nats pubsub-arqon pubsub-nats
	storm-arqon storm-nats storm10k-arqon storm10k-nats slow-arqon slow-nats soak-arqon soak-nats)
for n in "${names[@]}"; do
	# shellcheck disable=SC2086
	run "$n" ${R[$n]}
done
