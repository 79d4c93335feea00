#!/usr/bin/env bash
# scripts/bench-amqp091-patched.sh: how much of the gap to the floor is
# amqp091-go's, measured (issue 15). It builds the benchmark twice, with
# amqp091-go as bench/go.mod requires it and with that same version patched
# by bench/amqp091-go-allocs.patch, and runs the two builds in turns.
#
# The patch is an experiment, not a fork we ship: amqp091-go reads and
# writes short strings (every name and most properties) without allocating,
# reads a frame in one allocation rather than in 64 KiB steps, and hands out
# a body that came in one frame without copying it.
#
# Usage: scripts/bench-amqp091-patched.sh [PAIRS [amqprpc-bench flags...]]
#   PAIRS (default 3) runs of each build, alternating; the flags default to
#   -only "amqprpc|floor" -c 64 -body 16,65536 -rounds 6. AMQP_URL picks the
#   broker, as for make bench. Each row is prefixed with its build.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
pairs=${1:-3}
shift || true
if [[ $# -eq 0 ]]; then
	set -- -only "amqprpc|floor" -c 64 -body 16,65536 -rounds 6
fi
url=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd "$root/bench"
go mod download github.com/rabbitmq/amqp091-go # go list -m does not
src=$(go list -m -f '{{.Dir}}' github.com/rabbitmq/amqp091-go)
cp -r "$src" "$work/amqp091-go"
chmod -R u+w "$work/amqp091-go"
(cd "$work/amqp091-go" && git apply -p1 "$root/bench/amqp091-go-allocs.patch")

# The same module, amqp091-go replaced: -modfile leaves bench/go.mod alone.
sed "s#=> \.\./\?\$#=> $root#" go.mod > "$work/go.mod"
cp go.sum "$work/go.sum"
echo "replace github.com/rabbitmq/amqp091-go => $work/amqp091-go" >> "$work/go.mod"

go build -o "$work/upstream" ./cmd/amqprpc-bench
go build -modfile="$work/go.mod" -o "$work/patched" ./cmd/amqprpc-bench

for _ in $(seq "$pairs"); do
	for build in upstream patched; do
		"$work/$build" -url "$url" "$@" | grep '^| [0-9]' | sed "s/^/| $build /"
	done
done
