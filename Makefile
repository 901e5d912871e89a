# ArqonBus build, test and benchmark targets.
# `make run` starts a complete single node; `make test` runs every test,
# installing what the tests need first (see scripts/deps.sh).

SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/.bin
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_VTPROTO_VERSION := v0.6.0
STATICCHECK_VERSION := v0.8.2
PROTO_FILES := $(wildcard pb/proto/arqon/v1/*.proto)
RACE_PKGS := ./router/... ./pool/... ./pb/... ./auth/... ./client/... ./spine/... ./gateway/... ./brain/... ./internal/...

.PHONY: all build run test test-go test-race test-node proto proto-check proto-tools lint bench bench-baseline benchstat-tool deps clean fuzz policies loadtest loadtest-report profile promtool promtool-check

all: build

build:
	$(GO) build -o $(BIN)/arq ./cmd/arq

run: build
	$(BIN)/arq serve

deps:
	bash scripts/deps.sh

test: deps proto-check lint promtool-check test-go test-race test-node

test-go:
	$(GO) test -count=1 ./...

# test-node checks the k6 scripts' syntax and drives a live arq serve
# through k6/lib/protocol.js with node (k6 itself cannot be installed here),
# then tests the JavaScript client (clients/js) and the pages in Chromium.
test-node: build
	bash scripts/k6-check.sh
	bash scripts/js-check.sh

# promtool-check validates deploy/prometheus with a pinned promtool
# (Prometheus 3.16.0 is module version v0.316.0), built without the service
# discovery plugins (-tags remove_all_sd; with them, the cloud SDKs made the
# build run past 20 minutes on this 2-core machine). The first build takes
# about 190 s of CPU (8 minutes of wall time on this busy 2-core machine, with
# the modules already downloaded); later runs reuse .bin/promtool. Then: check
# config (and its rules), check rules, and the alerts' unit tests.
PROMTOOL_VERSION := v0.316.0
promtool:
	@mkdir -p $(BIN)
	@test -x $(BIN)/promtool && $(GO) version -m $(BIN)/promtool | grep -q 'github.com/prometheus/prometheus[[:space:]]*$(PROMTOOL_VERSION)' || \
		GOBIN=$(BIN) $(GO) install -tags remove_all_sd github.com/prometheus/prometheus/cmd/promtool@$(PROMTOOL_VERSION)

promtool-check: promtool
	cd deploy/prometheus && $(BIN)/promtool check config prometheus.yml && \
		$(BIN)/promtool check rules alerts.yml && \
		$(BIN)/promtool test rules alerts_test.yml

test-race:
	$(GO) test -race -count=1 $(RACE_PKGS)

proto-tools:
	@mkdir -p $(BIN)
	@test -x $(BIN)/protoc-gen-go && $(BIN)/protoc-gen-go --version | grep -q $(PROTOC_GEN_GO_VERSION) || GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@test -x $(BIN)/protoc-gen-go-vtproto || GOBIN=$(BIN) $(GO) install github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto@$(PROTOC_GEN_VTPROTO_VERSION)

# proto regenerates pb/*.pb.go from pb/proto with pinned tool versions
# (protoc from Debian's protobuf-compiler 3.21.12).
proto: proto-tools
	protoc -I pb/proto \
		--plugin=protoc-gen-go=$(BIN)/protoc-gen-go \
		--plugin=protoc-gen-go-vtproto=$(BIN)/protoc-gen-go-vtproto \
		--go_out=. --go_opt=module=github.com/arqonbus/arqonbus \
		--go-vtproto_out=. --go-vtproto_opt=module=github.com/arqonbus/arqonbus,features=marshal+unmarshal+unmarshal_unsafe+size+clone \
		$(PROTO_FILES)

# proto-check fails when the committed generated code differs from what the
# .proto files produce.
proto-check: proto-tools
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	protoc -I pb/proto \
		--plugin=protoc-gen-go=$(BIN)/protoc-gen-go \
		--plugin=protoc-gen-go-vtproto=$(BIN)/protoc-gen-go-vtproto \
		--go_out=$$tmp --go_opt=module=github.com/arqonbus/arqonbus \
		--go-vtproto_out=$$tmp --go-vtproto_opt=module=github.com/arqonbus/arqonbus,features=marshal+unmarshal+unmarshal_unsafe+size+clone \
		$(PROTO_FILES) && \
	for f in $$tmp/pb/*.go; do diff -u pb/$$(basename $$f) $$f || { echo "proto-check: pb/$$(basename $$f) is stale: run make proto"; exit 1; }; done && \
	for f in pb/*.pb.go; do test -f $$tmp/$$f || { echo "proto-check: $$f has no .proto source"; exit 1; }; done && \
	echo "proto-check: generated code is up to date"

BENCHSTAT_VERSION := v0.0.0-20260908200009-22c9c6c9d4da
BENCH_PKGS ?= ./...
BENCH_COUNT ?= 6
BENCH_TIME ?= 200ms
BASELINE := perf-reports/baseline/bench.txt

benchstat-tool:
	@test -x $(BIN)/benchstat || GOBIN=$(BIN) $(GO) install golang.org/x/perf/cmd/benchstat@$(BENCHSTAT_VERSION)

# bench runs every package's micro-benchmarks and compares them with the
# checked-in baseline (benchstat); bench-baseline refreshes the baseline.
bench: benchstat-tool
	@mkdir -p perf-reports/tmp
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCH_COUNT) -benchtime $(BENCH_TIME) $(BENCH_PKGS) | tee perf-reports/tmp/bench.txt
	@if [ -f $(BASELINE) ]; then \
		echo; echo "== benchstat: baseline ($(BASELINE)) vs this run =="; \
		$(BIN)/benchstat $(BASELINE) perf-reports/tmp/bench.txt | tee perf-reports/tmp/benchstat.txt; \
		grep -E '\+[0-9.]+%.*p=0\.0' perf-reports/tmp/benchstat.txt | grep -v -- '~' | sed 's/^/REGRESSION? /' || true; \
	else echo "no baseline at $(BASELINE): run make bench-baseline"; fi

bench-baseline: benchstat-tool
	@mkdir -p perf-reports/baseline
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCH_COUNT) -benchtime $(BENCH_TIME) $(BENCH_PKGS) | tee $(BASELINE)

# lint: gofmt, go vet and staticcheck (pinned; installed into .bin).
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go') | grep -v '\.pb\.go$$' || true); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@test -x $(BIN)/staticcheck && $(BIN)/staticcheck -version | grep -q $(STATICCHECK_VERSION:v%=%) || GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(BIN)/staticcheck ./...

# loadtest runs one load-generator scenario against a fresh arq serve
# (make loadtest SCENARIO=fanout LOADGEN_ARGS="-conns 1000 -rate 100 -duration 20s");
# loadtest-report reruns every scenario of perf-reports/loadgen (about 12 minutes).
SCENARIO ?= connect
LOADGEN_ARGS ?=
loadtest: build
	$(GO) run ./bench/loadgen -scenario $(SCENARIO) -arq-bin $(BIN)/arq $(LOADGEN_ARGS)

loadtest-report: build
	bash perf-reports/loadgen/run.sh

# profile captures CPU, heap and allocation profiles of the gateway while a
# fanout scenario runs (perf-reports/pprof/).
profile: build
	bash scripts/profile.sh

# policies rebuilds the example Wasm policies from their WAT sources
# (needs wat2wasm: apt-get install -y wabt); the .wasm files are committed.
policies:
	bash policies/build.sh

# fuzz runs each fuzz target for FUZZTIME (the seed corpora also run in make test).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecodeClientJSON -fuzztime $(FUZZTIME) ./pb
	$(GO) test -run '^$$' -fuzz FuzzParseClientHeader -fuzztime $(FUZZTIME) ./gateway
	$(GO) test -run '^$$' -fuzz FuzzPresenceFrameProto -fuzztime $(FUZZTIME) ./gateway
	$(GO) test -run '^$$' -fuzz FuzzVerify -fuzztime $(FUZZTIME) ./auth
	$(GO) test -run '^$$' -fuzz FuzzNATSParser -fuzztime $(FUZZTIME) ./bench/loadgen
	$(GO) test -run '^$$' -fuzz FuzzDecodeInterestMsg -fuzztime $(FUZZTIME) ./spine

clean:
	rm -rf $(BIN)
