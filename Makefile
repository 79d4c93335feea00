# make test  — bring up a broker and run the whole suite with -race, vet and gofmt.
# make demo  — bring up a broker and run the tutorial: two servers and a client.
# make broker — only make sure a broker answers at $(AMQP_URL).

AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672/
export AMQP_URL
GO ?= go

.PHONY: all broker test lint demo clean

all: test

broker:
	@bash scripts/broker.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

test: broker lint
	AMQPRPC_REQUIRE_BROKER=1 $(GO) test -race -count=1 -timeout 10m ./...

demo: broker
	@mkdir -p bin
	$(GO) build -o bin/ ./examples/tutorial/server ./examples/tutorial/client
	@bash scripts/demo.sh

clean:
	rm -rf bin
