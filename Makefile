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

.PHONY: help build run test test-short bench fuzz lint tidy-check images e2e clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build queen, hive, rbee and the reference worker into bin/ (static)
	@mkdir -p $(BIN)
	$(GO_BUILD) -o $(BIN)/ rbee.dev/queen/cmd/queen rbee.dev/queen/cmd/rbee rbee.dev/hive/cmd/hive rbee.dev/hive/cmd/rbee-worker

run: build ## start a single-machine cluster: queen, embedded NATS, local hive
	@echo
	@echo "  rbee queen on http://$(HTTP_ADDR) (web UI at that address) with a local hive that may run commands."
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

BENCH_FLAGS ?=

bench: build ## every benchmark, 3 runs each (-scenarios picks some); report in build/bench-report.md, see BENCHMARKS.md
	@mkdir -p build
	go run rbee.dev/queen/cmd/rbee-bench -bin $(BIN) -out build/bench-report.md $(BENCH_FLAGS)

# A count, not a duration: Go 1.26's fuzzing coordinator can report
# "context deadline exceeded" as a failure when a duration runs out while
# a worker is busy (golang/go#75804, fixed in Go 1.27); a count has no
# deadline to race.
FUZZTIME ?= 200000x

fuzz: ## run every fuzz test for FUZZTIME each (default 200000 inputs), one after another
	go test -run '^$$' -fuzz '^FuzzDecodeJobRequest$$' -fuzztime $(FUZZTIME) rbee.dev/shared/api
	go test -run '^$$' -fuzz '^FuzzValidModelID$$' -fuzztime $(FUZZTIME) rbee.dev/shared/api
	go test -run '^$$' -fuzz '^FuzzLastEventID$$' -fuzztime $(FUZZTIME) rbee.dev/shared/api
	go test -run '^$$' -fuzz '^FuzzSource$$' -fuzztime $(FUZZTIME) rbee.dev/hive/internal/models
	go test -run '^$$' -fuzz '^FuzzScanEvent$$' -fuzztime $(FUZZTIME) rbee.dev/queen/internal/relay
	go test -run '^$$' -fuzz '^FuzzCheckBody$$' -fuzztime $(FUZZTIME) rbee.dev/queen/internal/relay

lint: ## gofmt and go vet
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	go vet $(PKGS)

tidy-check: ## fail if any go.mod or go.sum is not tidy
	@for m in $(MODULES); do (cd $$m && GOWORK=off go mod tidy -diff) || { echo "$$m: run go mod tidy"; exit 1; }; done

# The images: static binaries on an empty base, staged in $(DOCKER_CTX).
# nats-server is built from its official module at the version queen/go.mod
# pins. See deploy/docker and docker-compose.yml.
NATS_VERSION := v2.15.2
DOCKER_CTX := build/docker
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo 'docker compose' || echo docker-compose)

images: build ## build the rbee/queen, rbee/hive and rbee/nats :dev images (FROM scratch)
	$(GO_BUILD) -o $(BIN)/ rbee.dev/queen/cmd/rbee-healthcheck
	GOBIN=$(CURDIR)/$(BIN)/tools CGO_ENABLED=0 go install -trimpath -ldflags '-s -w' github.com/nats-io/nats-server/v2@$(NATS_VERSION)
	deploy/docker/stage.sh $(DOCKER_CTX) $(BIN)
	@for i in queen hive nats; do \
	  echo "docker build rbee/$$i:dev"; \
	  docker build -q -f deploy/docker/$$i.Dockerfile -t rbee/$$i:dev $(DOCKER_CTX) >/dev/null || exit 1; \
	done

e2e: images ## docker-compose cluster (3 NATS, 2 queens, 2 hives) broken on purpose, checked end to end
	@project=rbee-e2e-$$$$; \
	trap '$(COMPOSE) -p "$$project" -f docker-compose.yml down -v --remove-orphans -t 1 >/dev/null 2>&1 || true' EXIT; \
	RBEE_COMPOSE='$(COMPOSE)' RBEE_E2E_PROJECT=$$project go test -tags e2e -count=1 -timeout 9m -v rbee.dev/queen/e2e

clean: ## remove binaries, image build context and local cluster data
	rm -rf $(BIN) $(DOCKER_CTX) $(DATA)
