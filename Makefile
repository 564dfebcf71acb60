# dstack: make help lists the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
GO ?= go
BIN := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/dstackai/dstack/version.Version=$(VERSION)
export CGO_ENABLED ?= 0

.PHONY: help build runners test test-short lint bench bench-scale bench-river demo fuzz local-image aws-prices clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/dstack and bin/dstack-runner (static)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/dstack ./cmd/dstack
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/dstack-runner ./cmd/dstack-runner

runners: ## bin/dstack-runner-linux-amd64 and -arm64, which dstack server gives out at /runner besides bin/dstack-runner
	GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/dstack-runner-linux-amd64 ./cmd/dstack-runner
	GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/dstack-runner-linux-arm64 ./cmd/dstack-runner

test: ## every test, with the race detector, on SQLite and PostgreSQL
	scripts/test-images.sh --install-only   # a static busybox for the images the Docker tests build
	scripts/chromium.sh                     # Chromium for the web UI's browser tests
	scripts/nginx.sh >/dev/null             # nginx, the load balancer of the high-availability test
	scripts/kube.sh >/dev/null              # etcd, kube-apiserver, scheduler, controller manager, kwok: the Kubernetes backend's test cluster
	DSTACK_TEST_POSTGRES_DSN="$$(scripts/postgres.sh | tail -n 1)" CGO_ENABLED=1 \
		$(GO) test -race -count=1 -timeout 20m ./...

test-short: ## unit tests only, no PostgreSQL
	CGO_ENABLED=1 $(GO) test -race -short ./...

lint: ## go vet, gofmt and golangci-lint (the version pinned in tools/go.mod)
	$(GO) vet ./...
	cd bench && $(GO) vet ./...             # the benchmarks' own module builds against the product's
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'run gofmt -w'; exit 1; }
	$(GO) tool -modfile=tools/go.mod golangci-lint run ./...

bench: ## benchmarks: pickup latency, claim throughput, log throughput, Kubernetes runner Pods
	scripts/kube.sh >/dev/null              # the Kubernetes benchmarks' test cluster
	DSTACK_TEST_POSTGRES_DSN="$$(scripts/postgres.sh | tail -n 1)" \
		$(GO) test -run '^$$' -bench . -benchtime 3s ./...

bench-river: ## dstack's queue side by side with River: 10,000 no-op jobs, 3 runs, on PostgreSQL and SQLite
	cd bench && DSTACK_TEST_POSTGRES_DSN="$$(../scripts/postgres.sh | tail -n 1)" $(GO) run ./river -runs 3

bench-scale: ## bench/scale: 1,000, 5,000 and 10,000 simulated runners on one server, on SQLite and PostgreSQL
	cd bench && $(GO) run ./scale
	cd bench && $(GO) run ./scale -db "$$(../scripts/postgres.sh | tail -n 1)"

fuzz: ## run every fuzz target for 30s each
	scripts/fuzz.sh 30s

demo: build ## run the example workflows end to end on a local server and runner
	scripts/demo.sh

local-image: build ## build the local backend's runner image (dstack-local-runner:<hash>)
	GO=$(GO) scripts/local-image.sh $(BIN)/dstack-runner

aws-prices: ## refresh backend/aws/prices.json from the AWS Price List API (AWS credentials from the environment or ~/.aws)
	$(GO) run ./cmd/dstack-aws-prices -o backend/aws/prices.json

clean: ## remove build outputs
	rm -rf $(BIN) build .demo
