# prefork: make build | run | test | lint | bench
GO          ?= go
STATICCHECK ?= $(shell $(GO) env GOPATH)/bin/staticcheck
STATICCHECK_VERSION := v0.8.2
WORKERS     ?= 4
LISTEN      ?= 127.0.0.1:8080
# The version `master version`, `master status` and prefork_build_info
# report. One word; the -X=NAME=VALUE form fits both -ldflags and GOFLAGS.
VERSION     ?= $(shell git describe --always --dirty --tags 2>/dev/null)
LDFLAGS      = -X=github.com/prefork/prefork/pkg/version.Version=$(VERSION)

.PHONY: all build run test lint bench clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/master ./cmd/child

# Start the supervisor with the reference child; Ctrl-C stops it gracefully.
run: build
	./bin/master run --workers $(WORKERS) --listen $(LISTEN)

# Unit tests and the end-to-end tests of the built binaries, all with -race.
# -count=1: the end-to-end tests build the binaries themselves, which the
# test cache cannot see; GOFLAGS (go env's, plus the version) reaches
# those builds.
test:
	GOFLAGS='$(shell $(GO) env GOFLAGS) -ldflags=$(LDFLAGS)' $(GO) test -race -count=1 -timeout 12m ./...

lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...
	@# The _other.go stubs must keep the packages building off Linux.
	GOOS=darwin $(GO) build ./...

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# Benchmarks of the built binaries: spawn, crash recovery, spread, data
# path, idle cost (medians of 5 runs), then reload latency (20 reloads) and
# failed requests per 100 reloads under load in each socket mode, each in a
# network namespace of its own (and nginx -s reload beside them where nginx
# is installed), steering on and off with one of 4 children stopped and
# with none, master socket mode's own cost against child mode and the exec
# shim's, the servers of docs/servers.md under the master (start, kill -9,
# failed requests per reload under wrk, a request in flight at stop; each
# skipped if not installed), 100 upgrades of the master in place under
# wrk in each socket mode and load and 20 rejected ones (PREFORK_UPGRADES
# sets the count), the rollouts' figures (peak/steady memory of 8 children
# and reload time for generation and rolling reloads, with and without a
# 64 MiB ballast; failed requests over 20 rolling reloads under load in
# each socket mode, PREFORK_ROLLOUT_RELOADS sets the count), datagrams
# lost over 20 reloads under a UDP load and the spread of 1,000 source
# ports (issue 16), then the accept and datagram counting's cost and one
# scrape of 256 slots. About 35 minutes on
# 2 cores.
bench:
	$(GO) test -run '^$$' -bench 'Spawn|ChildStart|CrashRecovery|Spread|DataPath|MasterIdle' -benchtime 5x -count 5 -timeout 30m ./bench/
	$(GO) test -run '^$$' -bench 'ReloadLatency' -benchtime 20x -count 1 -timeout 20m ./bench/
	$(GO) test -run '^$$' -bench 'ReloadFailures' -benchtime 1x -count 1 -timeout 30m ./bench/
	$(GO) test -run '^$$' -bench 'Steer' -benchtime 1x -count 1 -timeout 10m ./bench/
	$(GO) test -run '^$$' -bench 'SocketModes|ExecShim|NotifyFlood' -benchtime 3x -count 1 -timeout 10m ./bench/
	$(GO) test -run '^$$' -bench 'Servers' -benchtime 1x -count 1 -timeout 20m ./bench/
	$(GO) test -run '^$$' -bench 'Upgrade' -benchtime 1x -count 1 -timeout 40m ./bench/
	$(GO) test -run '^$$' -bench 'Rollout' -benchtime 1x -count 1 -timeout 40m ./bench/
	$(GO) test -run '^$$' -bench 'UDP' -benchtime 1x -count 1 -timeout 20m ./bench/
	$(GO) test -run '^$$' -bench 'Accept' -benchtime 3000x -count 5 ./pkg/child/
	$(GO) test -run '^$$' -bench 'Scrape256' -count 5 ./pkg/metrics/
	$(GO) test -run '^$$' -bench 'CounterInc|CounterDatagram' -count 5 ./pkg/counters/
	$(GO) test -run '^$$' -bench 'ReadUDPPaired' -count 10 -benchtime 200000x ./pkg/child/

clean:
	rm -rf bin/
