#!/usr/bin/env bash
# Reproduces every figure of perf-reports/spine.md: the spine (gateways joined
# by NATS) on loopback, beside nats-server's own WebSocket listeners joined by
# routes, with bench/loadgen's cluster mode (-cluster N -scenario cluster).
# Usage (from the repository root): bash perf-reports/loadgen/spine.sh [name ...]
#
# Runs (the default set is every "lat*" and "fan3" run for each of $TARGETS,
# interleaved by round; about 18 minutes for three targets):
#   lat10-T   cross-node latency: 2 nodes, 10 subscribers on each, one
#             publisher on node 0 sending 10,000 msgs/s for 10 s, one message
#             per frame and per write, every message timed; node 1 is the
#             cross-node path, node 0 the same-node reference in the same run.
#             T = arqon: 2 `arq serve --nats` + 1 NATS server (bus accounts and
#             users as deploy/nats/nats.conf); T = nats: 2 nats-server
#             WebSocket listeners joined by a route. $ROUNDS_LAT rounds.
#   lat1-T    the same with 1 subscriber per node.
#   fan3-T    cross-node fan-out: 3 nodes, 1,000 subscribers on each (read by a
#             goroutine per connection, 4 KiB reads), one publisher on node 0,
#             paced (one message per frame and per write), the rate raised in
#             5 s steps until fewer than 95% of a step's deliveries (over all
#             3,000 subscribers) arrive within it. arqon: 3 gateways + 1 NATS
#             server; nats: a 3-server nats-server cluster. $ROUNDS_FAN rounds.
#   prof-lat1-arqon  (not in the default set) lat1-arqon with CPU profiles of
#             both gateways (see profile_lat1).
#   fan3-arqon-n3  (not in the default set) arqon with a 3-server NATS cluster
#             behind the gateways (gateway i on NATS server i).
# Placement on this 2-core VM: every server process (all gateways and NATS
# servers, or all nats-servers) pinned to CPU $SERVER_CPU, the load generator to
# CPU $LOADER_CPU (taskset; defaults 0 and 1).
#
# Environment:
#   COMMIT   the commit to measure (default HEAD)
#   ARQ_BIN  arq binary (default: built from `git archive $COMMIT`, so edits in
#            progress in the working tree are not measured; the commit is
#            written into every run's .txt)
#   LG       loadgen binary (default: built from $COMMIT the same way)
#   OUT      output directory (default perf-reports/loadgen/spine/COMMIT)
#   ROUNDS_LAT, ROUNDS_FAN  rounds (default 5 and 3)
# Afterwards: python3 perf-reports/loadgen/spine_table.py "$OUT" prints the tables.
# Every run is bounded (timeout 600; the loader's own bound is 4 x -duration +
# 5 min) and starts and stops its own processes (by PID).
set -euo pipefail
cd "$(dirname "$0")/../.."
COMMIT=$(git rev-parse --short "${COMMIT:-HEAD}")
OUT=${OUT:-perf-reports/loadgen/spine/$COMMIT}
mkdir -p "$OUT"
TMP=$(mktemp -d /tmp/spine-run.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
if [ -z "${ARQ_BIN:-}" ] || [ -z "${LG:-}" ]; then
	mkdir -p "$TMP/src"
	git archive "$COMMIT" | tar -x -C "$TMP/src"
	(cd "$TMP/src" && go build -o "$TMP/arq" ./cmd/arq && go build -o "$TMP/loadgen" ./bench/loadgen)
fi
ARQ_BIN=${ARQ_BIN:-$TMP/arq}
LG=${LG:-$TMP/loadgen}
SERVER_CPU=${SERVER_CPU:-0}
LOADER_CPU=${LOADER_CPU:-1}
ROUNDS_LAT=${ROUNDS_LAT:-5}
ROUNDS_FAN=${ROUNDS_FAN:-3}

run() { # name args...
	local name=$1; shift
	{
		echo "== $name: taskset -c $LOADER_CPU loadgen $*"
		echo "   $(date -u +%FT%TZ)  commit $COMMIT  nproc $(nproc)  load $(cut -d' ' -f1-3 /proc/loadavg)  $(go version | cut -d' ' -f3-4)  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
	} | tee "$OUT/$name.txt"
	# shellcheck disable=SC2086
	timeout 600 taskset -c "$LOADER_CPU" "$LG" -arq-bin "$ARQ_BIN" -server-cpus "$SERVER_CPU" "$@" -out "$OUT/$name.json" 2>&1 |
		grep --line-buffered -v '^  node [0-9]* subscribers:' | tee -a "$OUT/$name.txt" || echo "   run $name failed" | tee -a "$OUT/$name.txt"
	echo "   end $(date -u +%FT%TZ)  load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/$name.txt"
}

# prof-lat1-arqon: the lat1-arqon run with a 25 s step, and a 10 s CPU profile of
# each gateway (its admin /debug/pprof/profile) taken in the middle of it;
# writes prof-lat1-arqon-gw{0,1}.pprof and .top.txt (go tool pprof -top -cum).
profile_lat1() {
	local name=prof-lat1-arqon
	run "$name" ${R[lat1-arqon]/-step 10s/-step 25s} &
	local bg=$!
	sleep 9
	local gw
	for gw in 0 1; do
		# The gateways' PIDs from the loader's own output, their admin address from their command line.
		local pid adm
		pid=$(grep -o "{gw-$gw gateway [0-9]*}" "$OUT/$name.txt" | grep -o '[0-9]*}' | tr -d '}')
		adm=$(tr '\0' ' ' </proc/"$pid"/cmdline | sed 's/.*--admin \([^ ]*\).*/\1/')
		curl -s -o "$OUT/$name-gw$gw.pprof" "http://$adm/debug/pprof/profile?seconds=10" &
	done
	wait
	for gw in 0 1; do
		go tool pprof -top -cum -nodecount=45 "$OUT/$name-gw$gw.pprof" >"$OUT/$name-gw$gw.top.txt" 2>/dev/null
	done
	: "$bg"
}

declare -A R
# Cross-node latency at 10k msgs/s: lean epoll client, one event loop (the
# goroutine-per-connection client costs the loader ~40% more CPU per delivery
# at this rate and saturates its core).
LAT="-scenario cluster -cluster 2 -pub-node 0 -recv epoll -loops 1 -steps 10000 -step 10s -sample 1 -progress 0"
FAN="-scenario cluster -cluster 3 -conns 1000 -pub-node 0 -recv goroutine -rbuf 4096 -step 5s -progress 0 -steps 100,200,300,400,500,600,700,800,1000,1200,1500,2000"
# arqon-tenant: the same gateways with [nats] interest = "tenant" (one NATS
# subscription per tenant, the spine before 1647ac3); arqon runs arq's default
# (since 1647ac3: "subject", one per subscribed pattern). Set TARGETS="arqon nats"
# for an arq binary older than 6463275 (it has no [nats] interest key).
declare -A TA=([arqon]="-target arqon" [arqon-tenant]="-target arqon -nats-interest tenant" [nats]="-target nats")
TARGETS=${TARGETS:-arqon arqon-tenant nats}
for t in "${!TA[@]}"; do
	R[lat10-$t]="$LAT -node-subs 10,10 ${TA[$t]}"
	R[lat1-$t]="$LAT -node-subs 1,1 ${TA[$t]}"
	R[fan3-$t]="$FAN ${TA[$t]}"
done
R[fan3-arqon-n3]="$FAN -target arqon -cluster-nats 3"

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
	# Interleaved: arqon and nats of one round see the same machine.
	for r in $(seq 1 "$ROUNDS_LAT"); do
		for t in $TARGETS; do names+=("lat10-$t@r$r"); done
	done
	for r in $(seq 1 3); do
		for t in $TARGETS; do names+=("lat1-$t@r$r"); done
	done
	for r in $(seq 1 "$ROUNDS_FAN"); do
		for t in $TARGETS; do names+=("fan3-$t@r$r"); done
	done
fi
for n in "${names[@]}"; do
	base=${n%@*}
	suffix=""
	[ "$base" != "$n" ] && suffix="-${n#*@}"
	if [ "$base" = prof-lat1-arqon ]; then
		profile_lat1
		continue
	fi
	if [ -z "${R[$base]:-}" ]; then
		echo "unknown run $base (known: ${!R[*]})" >&2
		exit 2
	fi
	# shellcheck disable=SC2086
	run "$base$suffix" ${R[$base]}
done
