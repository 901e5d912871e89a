#!/usr/bin/env bash
# Runs the load-generator scenarios whose results are in this directory.
# Usage (from the repository root): bash perf-reports/loadgen/run.sh [name ...]
#
# Default set (about 17 minutes): the side-by-side rounds of the README's
# summary (fan-out 1k and 10k unpaced, fan-out at 50k deliveries/s, connect
# 10k; the paced fan-out at 1k and 10k subscribers and its latency runs;
# each for arqon, nats and bare) plus the load generator's own ceiling and
# receive-path comparison against the bare server. Other names (idle,
# storm, soak, slow, pubsub, the earlier connect/fanout runs) run when named.
#
# The paced fan-out runs (pfan*) pin the server to CPU $SERVER_CPU and the load
# generator to CPU $LOADER_CPU (taskset; defaults 0 and 1), and report the
# CPU time per delivery of both, and each CPU's busy/softirq/steal share.
#
# Environment:
#   ARQ_BIN  arq binary (default .bin/arq, built from the working tree if
#            missing). To measure the last commit while the tree is being
#            edited: mkdir /tmp/arq-head && git archive HEAD | tar -x -C /tmp/arq-head
#            && (cd /tmp/arq-head && go build -o arq ./cmd/arq); ARQ_BIN=/tmp/arq-head/arq
#   LG       prebuilt loadgen binary (default: built once into a temp dir)
# Every run is bounded (-duration, -timeout; the load generator's hard
# bound is 4 x duration + 5 min) and starts and stops its own server.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=perf-reports/loadgen
ARQ_BIN=${ARQ_BIN:-.bin/arq}
if [ ! -x "$ARQ_BIN" ]; then
	mkdir -p "$(dirname "$ARQ_BIN")"
	go build -o "$ARQ_BIN" ./cmd/arq
fi
TMP=$(mktemp -d /tmp/loadgen-run.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
if [ -z "${LG:-}" ]; then
	go build -o "$TMP/loadgen" ./bench/loadgen
	LG="$TMP/loadgen"
fi
go build -o "$TMP/bareserver" ./bench/loadgen/bareserver
COMMON=(-arq-bin "$ARQ_BIN" -bare-bin "$TMP/bareserver")

SERVER_CPU=${SERVER_CPU:-0}
LOADER_CPU=${LOADER_CPU:-1}

run() { # name args...
	local name=$1; shift
	local pin=()
	case $name in pfan*) pin=(taskset -c "$LOADER_CPU") ;; esac
	{
		echo "== $name: ${pin[*]} loadgen $*"
		echo "   $(date -u +%FT%TZ)  nproc $(nproc)  load $(cut -d' ' -f1-3 /proc/loadavg)  $(go version | cut -d' ' -f3-4)"
	} | tee "$OUT/$name.txt"
	# shellcheck disable=SC2086
	timeout 600 "${pin[@]}" "$LG" "${COMMON[@]}" "$@" -out "$OUT/$name.json" 2>&1 | tee -a "$OUT/$name.txt" || echo "   run $name failed" | tee -a "$OUT/$name.txt"
}

declare -A R
# --- side-by-side rounds (default set) ---
F1K="-scenario fanout -conns 1000 -rate 0 -window 256 -duration 10s -progress 2s"
F10K="-scenario fanout -conns 10000 -rate 0 -window 64 -duration 10s -progress 2s -concurrency 64"
F50K="-scenario fanout -conns 1000 -rate 50 -duration 20s -progress 5s"
C10K="-scenario connect -conns 10000 -conn-rate 0 -concurrency 32 -progress 1s"
# One loader event loop: on two cores it leaves the other core to the server (2 loops:
# ~6.4k/s for arq, 1 loop: ~9k/s, same server, back to back).
C18K="-scenario connect -conns 18000 -conn-rate 0 -concurrency 32 -loops 1 -progress 1s"
# Paced fan-out (real traffic): one publisher sending one message per frame and
# per write, subscribers read by a goroutine per connection (4 KiB reads), the
# rate raised in 5 s steps until fewer than 95% of a step's deliveries arrive
# within it; server and loader on separate CPUs. latency runs: p99 at 1k
# subscribers x 100 msgs/s and 100 subscribers x 1k msgs/s, every message timed.
PACED="-scenario paced -recv goroutine -rbuf 4096 -pubs 1 -step 5s -server-cpus $SERVER_CPU"
P1K="$PACED -conns 1000 -steps 250,500,1000,2000,3000,3500,4000,4500,5000,5500,6000,7000,8000,10000"
P10K="$PACED -conns 10000 -concurrency 64 -steps 25,50,100,200,300,350,400,450,500,550,600,700,800,1000"
PLAT1K="$PACED -conns 1000 -steps 100 -step 10s -sample 1"
PLAT100="$PACED -conns 100 -steps 1000 -step 10s -sample 1"
for t in arqon nats bare; do
	R[pfan1k-$t]="$P1K -target $t"
	R[pfan10k-$t]="$P10K -target $t"
	R[pfanlat1k-$t]="$PLAT1K -target $t"
	R[pfanlat100-$t]="$PLAT100 -target $t"
	R[fanout1k-$t]="$F1K -target $t"
	R[fanout10k-$t]="$F10K -target $t"
	R[fanout50k-$t]="$F50K -target $t"
	R[connect10k-$t]="$C10K -target $t"
	R[connect18k-$t]="$C18K -target $t"
done
# --- the load generator against the bare server ---
# ceiling: a deeper window and bigger publisher batches, one event loop.
R[fanout1k-2hosts-arqon]="$F1K -target arqon -hosts 2"
R[ceiling-bare]="-scenario fanout -target bare -conns 1000 -rate 0 -window 1024 -batch 256 -loops 1 -duration 10s -progress 2s"
# receive paths, same load: goroutine per subscriber (64 KiB reads, in-place
# parsing) and the previous loader (goroutine + 1 KiB bufio, frame copies).
R[recv-epoll-bare]="$F1K -target bare -recv epoll"
R[recv-goroutine-bare]="$F1K -target bare -recv goroutine"
R[recv-legacy-bare]="$F1K -target bare -recv legacy"
R[connect10k-arqon-pipeline]="$C10K -target arqon -pipeline"

# --- earlier runs (2026-11-27 12:40-13:50, the previous load generator) ---
# A reconnect storm spread by the clients' jittered back-off: 10k handshakes
# paced at 1k/s and 2k/s (the SPEC's handshake target: TCP + auth p99 < 2 ms).
for t in arqon nats bare; do
	R[paced1k-$t]="-scenario connect -conns 10000 -conn-rate 1000 -concurrency 256 -loops 1 -progress 5s -target $t"
	R[paced2k-$t]="-scenario connect -conns 10000 -conn-rate 2000 -concurrency 256 -loops 1 -progress 5s -target $t"
done
# gateway.md section 6: routing overhead and end-to-end latency at 50k msgs/s x 10 subscribers.
R[route-50k-x10]="-scenario fanout -target arqon -conns 10 -rate 50000 -duration 20s"
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
if [ ${#names[@]} -eq 0 ]; then
	# Interleaved so arqon, nats and bare of one round see the same machine.
	names=(fanout1k-arqon fanout1k-nats fanout1k-bare
		fanout10k-arqon fanout10k-nats fanout10k-bare
		fanout50k-arqon fanout50k-nats fanout50k-bare
		connect10k-arqon connect10k-nats connect10k-bare connect10k-arqon-pipeline
		connect18k-arqon connect18k-nats connect18k-bare
		pfan1k-arqon pfan1k-nats pfan1k-bare
		pfan10k-arqon pfan10k-nats pfan10k-bare
		pfanlat1k-arqon pfanlat1k-nats pfanlat1k-bare
		pfanlat100-arqon pfanlat100-nats pfanlat100-bare
		ceiling-bare recv-epoll-bare recv-goroutine-bare recv-legacy-bare)
fi
for n in "${names[@]}"; do
	if [ -z "${R[$n]:-}" ]; then
		echo "unknown run $n" >&2
		exit 2
	fi
	# shellcheck disable=SC2086
	run "$n" ${R[$n]}
done
