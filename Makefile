# make test  — bring up a broker and run the whole suite with -race, vet and gofmt,
#              with the modules bench/, oteltest/ (traces and metrics) and
#              cmd/amqprpc (the command, run as a binary).
# make demo  — bring up a broker and run the tutorial: two servers and a client,
#              then the amqprpc command against them.
# make install — install the amqprpc command (cmd/amqprpc).
# make bench — bring up a broker and print the comparison table (amqprpc vs
#              hand-written amqp091-go, plain and with amqprpc's broker
#              features, vs net/rpc over TCP, vs the peer 0x4b53/amqp-rpc);
#              BENCHFLAGS adds flags. make bench-4x: the same on RabbitMQ 4.3.
# make fuzz  — run each codec fuzzer for FUZZTIME (default 50000x; make test runs it).
# make broker — only make sure a broker answers at $(AMQP_URL).
# make test-4x — the whole suite again on RabbitMQ 4.3 (Debian forky, in a
#              debootstrap chroot: scripts/rabbitmq4.sh) with every
#              deprecated feature denied; rabbitmqctl reaches that node only.
# make test-cluster — start a local 3-node cluster (scripts/cluster.sh) and
#              run the cluster tests: each node stopped for 20 s under load,
#              quorum and classic request queues, a fanout server (about
#              7 minutes).

AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672/
# Modules of their own beside the library's, so that what only they need
# (the OpenTelemetry SDK, a CLI library) stays out of amqprpc's go.mod. The
# command's tests need the management plugin (status), which only the 3.10
# broker of make test has: test-4x runs the others.
MODULES4 = bench oteltest
MODULES = $(MODULES4) cmd/amqprpc
export AMQP_URL
GO ?= go

# A count, not a duration: a time-limited fuzz run can fail with "context
# deadline exceeded" when it stops during a slow input (seen in CI).
FUZZTIME ?= 50000x
FUZZERS = FuzzMsgPack FuzzJSON FuzzGob

.PHONY: all broker test test-4x test-cluster lint fuzz demo bench bench-4x install clean

all: test

broker:
	@bash scripts/broker.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags cluster .
	for m in $(MODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done

# -p 1: the fault tests restart the broker and cut every connection, which
# must not hit another package's tests running at the same time.
test: broker lint
	@bash scripts/interop.sh
	AMQPRPC_REQUIRE_BROKER=1 $(GO) test -p 1 -race -count=1 -timeout 10m ./...
	for m in $(MODULES); do (cd $$m && AMQPRPC_REQUIRE_BROKER=1 $(GO) test -p 1 -race -count=1 -timeout 5m ./...) || exit 1; done
	@$(MAKE) --no-print-directory fuzz

# The 4.3 node listens on 5673 beside the 3.10 one and stays up for the next
# run (scripts/rabbitmq4.sh stop ends it).
test-4x: lint
	@bash scripts/interop.sh
	@bash scripts/rabbitmq4.sh start
	AMQP_URL=$$(bash scripts/rabbitmq4.sh url) AMQPRPC_RABBITMQCTL="$(CURDIR)/scripts/rabbitmq4.sh ctl" \
	  AMQPRPC_REQUIRE_BROKER=1 $(GO) test -p 1 -race -count=1 -timeout 10m ./...
	for m in $(MODULES4); do (cd $$m && AMQP_URL=$$(bash $(CURDIR)/scripts/rabbitmq4.sh url) AMQPRPC_RABBITMQCTL="$(CURDIR)/scripts/rabbitmq4.sh ctl" \
	  AMQPRPC_REQUIRE_BROKER=1 $(GO) test -p 1 -race -count=1 -timeout 5m ./...) || exit 1; done

# The cluster tests are behind the build tag "cluster": the other test runs
# neither build nor skip them. The nodes stay up for the next run
# (scripts/cluster.sh stop ends them).
test-cluster: lint
	@bash scripts/cluster.sh start
	AMQP_URL=$$(bash scripts/cluster.sh urls | cut -d, -f1) AMQPRPC_RABBITMQCTL="$(CURDIR)/scripts/cluster.sh ctl 1" \
	  AMQPRPC_REQUIRE_BROKER=1 $(GO) test -tags cluster -race -count=1 -run '^TestCluster' -v -timeout 25m .

fuzz:
	@for f in $(FUZZERS); do \
	  echo "$(GO) test -run=^$$ -fuzz=^$$f\$$ -fuzztime=$(FUZZTIME) ./codec/"; \
	  $(GO) test -run='^$$' -fuzz="^$$f\$$" -fuzztime=$(FUZZTIME) ./codec/ || exit 1; \
	done

bench: broker
	cd bench && $(GO) run ./cmd/amqprpc-bench $(BENCHFLAGS)

bench-4x:
	@bash scripts/rabbitmq4.sh start
	cd bench && $(GO) run ./cmd/amqprpc-bench -url "$$(bash $(CURDIR)/scripts/rabbitmq4.sh url)" $(BENCHFLAGS)

demo: broker
	@mkdir -p bin
	$(GO) build -o bin/ ./examples/tutorial/server ./examples/tutorial/client
	cd cmd/amqprpc && $(GO) build -o ../../bin/amqprpc .
	@bash scripts/demo.sh

# install puts the amqprpc command in $(GOBIN) (or ~/go/bin).
install:
	cd cmd/amqprpc && $(GO) install .

clean:
	rm -rf bin
