#!/usr/bin/env bash
# scripts/demo.sh: the tutorial end to end. Starts two servers of the "math"
# namespace, runs the client against them, stops the servers. Run it through
# `make demo`, which builds bin/ and brings up the broker first.
set -euo pipefail
cd "$(dirname "$0")/.."

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

bin/server & pids+=($!)
bin/server & pids+=($!)
bin/client
# The same namespace from a terminal, as a user would poke it (cmd/amqprpc).
echo "\$ amqprpc call math Math.SumNumbers '[1,2,3,4]'"
bin/amqprpc call math Math.SumNumbers '[1,2,3,4]'
echo '$ amqprpc ping math -n 100 -c 4'
bin/amqprpc ping math -n 100 -c 4
