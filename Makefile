# probed: the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
# The linter is built from the Go module proxy at this version (.golangci.yml).
GOLANGCI_LINT ?= $(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: build run test bench demo fmt vet

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/probed ./cmd/probed

# Runs the daemon on the loopback mesh (needs root or CAP_NET_RAW / ping_group_range for ICMP).
run:
	$(GO) run ./cmd/probed --config.file=configs/local.yaml

# The whole test suite. Root tests (namespaces, raw sockets) fail instead of
# skipping when CI=true. Packages run one at a time: timing tests must not
# share the two cores with a compiler.
test:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo 'gofmt: files above are not formatted'; exit 1)
	$(GO) vet ./...
	$(GOLANGCI_LINT) run ./...
	$(GO) test -race -count=1 -p 1 -timeout 28m ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./probe/... ./exporter/... ./awsstate/... ./sla/...
	$(GO) test -run '^$$' -bench DelayError -benchtime=4000x ./internal/netlab

# The 7-site WAN lab with one probed per site, the AWS test server and (if
# installed) Prometheus on 127.0.0.1:9490. Needs root (namespaces, TUN).
demo:
	$(GO) run ./cmd/netlab demo
