# prefork: make build | run | test | lint | bench
GO          ?= go
STATICCHECK ?= $(shell $(GO) env GOPATH)/bin/staticcheck
STATICCHECK_VERSION := v0.8.2
WORKERS     ?= 4
LISTEN      ?= 127.0.0.1:8080

.PHONY: all build run test lint bench clean

all: build

build:
	$(GO) build -o bin/ ./cmd/master ./cmd/child

# Start the supervisor with the reference child; Ctrl-C stops it gracefully.
run: build
	./bin/master run --workers $(WORKERS) --listen $(LISTEN)

# Unit tests and the end-to-end tests of the built binaries, all with -race.
test:
	$(GO) test -race -timeout 12m ./...

lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# Benchmarks of the built binaries (spawn, crash recovery, spread, data
# path, idle cost). Figures are medians of -count runs; compare side by side.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 5x -count 5 -timeout 30m ./bench/

clean:
	rm -rf bin/
