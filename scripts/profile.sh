#!/usr/bin/env bash
# Captures CPU, heap and allocation profiles of a running arq serve while the
# load generator drives a fan-out (1,000 subscribers, 200 msg/s, 30 s).
# Results: perf-reports/pprof/{cpu,heap,allocs}.pprof and a top-30 text of each.
set -euo pipefail
cd "$(dirname "$0")/.."
out=perf-reports/pprof
mkdir -p "$out"
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000)); admin=$((port + 1))
(cd "$work" && exec "$OLDPWD/.bin/arq" serve --listen 127.0.0.1:$port --admin 127.0.0.1:$admin >serve.out 2>serve.err) &
pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.2; done
tok=$(cd "$work" && "$OLDPWD/.bin/arq" token --tenant bench --sub profiler --ttl 1h)
go build -o "$work/loadgen" ./bench/loadgen
"$work/loadgen" -scenario fanout -url "ws://127.0.0.1:$port/v1/socket" -token "$tok" -pids "$pid" \
  -metrics "http://127.0.0.1:$admin/metrics" -conns 1000 -rate 200 -duration 30s -out "$out/fanout.json" >"$out/fanout.txt" &
lg=$!
sleep 8
curl -sf "http://127.0.0.1:$admin/debug/pprof/profile?seconds=15" -o "$out/cpu.pprof"
curl -sf "http://127.0.0.1:$admin/debug/pprof/heap" -o "$out/heap.pprof"
curl -sf "http://127.0.0.1:$admin/debug/pprof/allocs" -o "$out/allocs.pprof"
wait $lg
for p in cpu heap allocs; do
  go tool pprof -top -nodecount=30 "$out/$p.pprof" >"$out/$p.top.txt" 2>/dev/null || true
done
{ echo "# date: $(date -u +%FT%TZ)"; echo "# nproc: $(nproc)"; grep -m1 'model name' /proc/cpuinfo; uname -r; go version; } >"$out/machine.txt"
echo "profiles in $out/ (go tool pprof -http=: $out/cpu.pprof)"
