#!/usr/bin/env bash
# scripts/interop.sh: install what the interop tests (examples/interop) need
# to run the Python and Node examples against Go:
#   1. python3-pika for Debian's /usr/bin/python3, with apt-get (as root, or
#      through sudo -n), if `import pika` fails there;
#   2. amqplib in examples/node/node_modules, with `npm ci`, if missing.
# It is idempotent and prints nothing when both are there already.
set -euo pipefail
cd "$(dirname "$0")/.."

python=/usr/bin/python3

sudo_cmd=()
[[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null && sudo_cmd=(sudo -n)

if ! "$python" -c 'import pika' >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && { [[ $(id -u) -eq 0 ]] || ((${#sudo_cmd[@]})); }; then
    echo "interop.sh: installing python3-pika with apt-get (once per machine)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq >/dev/null
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends python3 python3-pika >/dev/null
  fi
  if ! "$python" -c 'import pika' >/dev/null 2>&1; then
    echo "interop.sh: $python cannot import pika; install Debian's python3-pika (apt-get install python3-pika)." >&2
    exit 1
  fi
fi

if [[ ! -d examples/node/node_modules/amqplib ]]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "interop.sh: npm not found; install Node.js 18 or later with npm (apt-get install nodejs npm)." >&2
    exit 1
  fi
  echo "interop.sh: installing amqplib in examples/node with npm ci..." >&2
  (cd examples/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
