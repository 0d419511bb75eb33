# egress: eBPF egress discovery (egress-learn) and nftables enforcement
# (egress-enforce). `make help` lists the targets.

GO        ?= go
FUZZTIME  ?= 20s
# The eBPF programs' compiler, and the multiarch include directory of its
# target, where the kernel's UAPI headers are (asm/types.h).
BPF_CC      ?= clang
BPF_INCLUDE ?= /usr/include/$(shell $(BPF_CC) -print-multiarch 2>/dev/null)
# Debian packages the tools, the tests and the demo need.
DEB_PKGS  := clang llvm libbpf-dev nftables bpftool dnsmasq-base bind9-dnsutils socat curl iproute2 util-linux systemd

.DEFAULT_GOAL := help
.PHONY: help deps generate check-generate build test fuzz lint check demo bench clean

help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-15s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## Install the Debian packages that are missing (as root; apt-get)
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

generate: ## Rebuild the eBPF objects and Go bindings from bpf/*.c (bpf2go, clang)
	BPF_INCLUDE=$(BPF_INCLUDE) $(GO) generate ./bpf/

check-generate: generate ## Fail if regenerating changes the committed eBPF output
	@git diff --exit-code --stat -- bpf/ || { echo "bpf/: the committed bpf2go output differs from bpf/*.c; run make generate and commit"; exit 1; }

build: ## Build egress-learn and egress-enforce into bin/
	$(GO) build -o bin/ ./cmd/...

lint: ## go vet and gofmt
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); [ -z "$$out" ] || { echo "gofmt needed: $$out"; exit 1; }

test: ## Run every test (kernel tests need root; with CI=true they fail instead of skipping)
	$(GO) test -count=1 -timeout 15m ./...

fuzz: ## Fuzz the DNS answer parser, the nft script generator, the opening of corrupted stores and crontab lines, FUZZTIME each (default 20s)
	$(GO) test ./internal/dnsanswer/ -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)
	$(GO) test ./enforce/baseline/ -run '^$$' -fuzz '^FuzzGenerate$$' -fuzztime $(FUZZTIME)
	$(GO) test ./store/ -run '^$$' -fuzz '^FuzzOpenCorrupt$$' -fuzztime $(FUZZTIME)
	$(GO) test ./coverage/ -run '^$$' -fuzz '^FuzzCronLine$$' -fuzztime $(FUZZTIME)

check: deps check-generate lint test fuzz ## What CI runs: deps, generate check, vet, gofmt, tests, a short fuzz

demo: deps build ## Learn on a throw-away lab of two namespaces and print the report (as root)
	./demo/demo.sh

bench: deps ## Learner overhead and memory benchmark (as root; a few minutes)
	$(GO) run ./bench/learnbench

clean: ## Remove build output
	rm -rf bin
