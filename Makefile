# rbee: make run starts a single-machine cluster, make test checks it all.
SHELL := /bin/bash
PKGS := rbee.dev/shared/... rbee.dev/hive/... rbee.dev/queen/...
MODULES := shared hive queen
BIN := bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X rbee.dev/hive/agent.Version=$(VERSION)
GO_BUILD := CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)'
DATA ?= data
HTTP_ADDR ?= 127.0.0.1:7833

.PHONY: help build run test test-short bench fuzz lint tidy-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build queen, hive, rbee and the reference worker into bin/ (static)
	@mkdir -p $(BIN)
	$(GO_BUILD) -o $(BIN)/ rbee.dev/queen/cmd/queen rbee.dev/queen/cmd/rbee rbee.dev/hive/cmd/hive rbee.dev/hive/cmd/rbee-worker

run: build ## start a single-machine cluster: queen, embedded NATS, local hive
	@echo
	@echo "  rbee queen on http://$(HTTP_ADDR) with a local hive that may run commands."
	@echo "  In another shell:"
	@echo "    export PATH=\"$$PWD/$(BIN):\$$PATH\""
	@echo "    rbee hive ls"
	@echo "    rbee run --hive local -- sh -c 'for i in 1 2 3; do echo \$$i; sleep 1; done'"
	@echo "    rbee check --hive local --events 1000"
	@echo "  Ctrl-C stops the cluster. State lives in $(DATA)/."
	@echo
	$(BIN)/queen --http-addr $(HTTP_ADDR) --data-dir $(DATA)/queen --local-hive --local-hive-allow-run

test: lint ## vet, format check and every test (the CI suite)
	go test -count=1 -timeout 15m $(PKGS)

test-short: ## the fast tests only
	go test -count=1 -short -timeout 5m $(PKGS)

bench: build ## measure round trip and narration throughput; see BENCHMARKS.md
	go run rbee.dev/queen/cmd/rbee-bench -bin $(BIN)

FUZZTIME ?= 10s

fuzz: ## run every fuzz test for FUZZTIME each (default 10s), one after another
	go test -run '^$$' -fuzz '^FuzzDecodeJobRequest$$' -fuzztime $(FUZZTIME) rbee.dev/shared/api
	go test -run '^$$' -fuzz '^FuzzValidModelID$$' -fuzztime $(FUZZTIME) rbee.dev/shared/api
	go test -run '^$$' -fuzz '^FuzzLastEventID$$' -fuzztime $(FUZZTIME) rbee.dev/shared/api
	go test -run '^$$' -fuzz '^FuzzSource$$' -fuzztime $(FUZZTIME) rbee.dev/hive/internal/models

lint: ## gofmt and go vet
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	go vet $(PKGS)

tidy-check: ## fail if any go.mod or go.sum is not tidy
	@for m in $(MODULES); do (cd $$m && GOWORK=off go mod tidy -diff) || { echo "$$m: run go mod tidy"; exit 1; }; done

clean: ## remove binaries and local cluster data
	rm -rf $(BIN) $(DATA)
