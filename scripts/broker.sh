#!/usr/bin/env bash
# scripts/broker.sh: make sure a RabbitMQ broker answers at $AMQP_URL.
#
# Order of attempts, stopping at the first that works:
#   1. AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/) is already reachable;
#   2. an installed rabbitmq-server is started with -detached;
#   3. rabbitmq-server is installed with apt-get (as root, or through sudo), then started;
#   4. otherwise it prints how to get a broker and exits 1.
# On a broker of this machine it also enables the management plugin (for `amqprpc status`).
# It is idempotent, and prints nothing when the broker is already up with its management plugin.
set -euo pipefail

url=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
# host and port from amqp[s]://user:pass@host:port/vhost
hostport=${url#*://}
hostport=${hostport##*@}
hostport=${hostport%%/*}
host=${hostport%%:*}
port=${hostport##*:}
[[ $port == "$hostport" ]] && { [[ $url == amqps://* ]] && port=5671 || port=5672; }

reachable() { timeout 2 bash -c ">/dev/tcp/$host/$port" 2>/dev/null; }

# A broker that accepts TCP may still be booting; wait until it answers AMQP-level status too.
wait_ready() {
  local i
  for i in $(seq 1 120); do
    if reachable && { ! command -v rabbitmqctl >/dev/null || rabbitmqctl -q status >/dev/null 2>&1; }; then
      return 0
    fi
    sleep 1
  done
  return 1
}

local_host() { [[ $host == 127.* || $host == localhost || $host == "::1" ]]; }
sudo_cmd=()
[[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null && sudo_cmd=(sudo -n)

# The management plugin, on a broker of this machine: the amqprpc command's status subcommand
# reads its HTTP API (port 15672), and its tests need it. Enabling it is remembered by the node.
# Best effort: without the rights to enable it, the broker still serves everything but status.
enable_management() {
  local plugins
  plugins=$(PATH=$PATH:/usr/sbin:/usr/lib/rabbitmq/bin command -v rabbitmq-plugins) || return 0
  local_host || return 0
  if ! "${sudo_cmd[@]}" "$plugins" -q is_enabled rabbitmq_management >/dev/null 2>&1; then
    echo "broker.sh: enabling the management plugin (once per machine)..." >&2
    "${sudo_cmd[@]}" "$plugins" -q enable rabbitmq_management >/dev/null ||
      echo "broker.sh: could not enable the management plugin; amqprpc status will say so" >&2
  fi
}

if reachable; then
  enable_management
  exit 0
fi

if ! local_host; then
  echo "broker.sh: $host:$port is not reachable, and it is not this machine: start the broker there." >&2
  exit 1
fi

if ! command -v rabbitmq-server >/dev/null 2>&1 && [[ ! -x /usr/sbin/rabbitmq-server ]]; then
  if command -v apt-get >/dev/null 2>&1 && { [[ $(id -u) -eq 0 ]] || ((${#sudo_cmd[@]})); }; then
    echo "broker.sh: installing rabbitmq-server with apt-get (once per machine)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq >/dev/null
    # policy-rc.d keeps the package's own service start from racing ours on machines without systemd.
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
  else
    cat >&2 <<MSG
broker.sh: no RabbitMQ at $host:$port and no way to install one here.
Get one of:
  - Debian/Ubuntu:  sudo apt-get install rabbitmq-server && sudo rabbitmq-server -detached
  - a container:    docker run -d -p 5672:5672 -p 15672:15672 rabbitmq:3-management
then run again, or point AMQP_URL at a broker you have.
MSG
    exit 1
  fi
fi
export PATH=$PATH:/usr/sbin:/usr/lib/rabbitmq/bin

# The Debian package may have started the broker already (systemd hosts): only start it if not.
# Started by hand, the broker gets 1024 open files: Debian's wrapper switches to the rabbitmq
# user with su, whose PAM session resets the limit. RabbitMQ 3.10 then stalls at boot when it
# has more durable queues to recover than file handles ("Recovering N queues, available file
# handles: M"). Debian's service unit sets LimitNOFILE=65536; we raise the limit as far as this
# machine allows and switch user with setpriv, which keeps it.
start_broker() {
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  if command -v setpriv >/dev/null && id rabbitmq >/dev/null 2>&1; then
    cd /var/lib/rabbitmq &&
      exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
        env HOME=/var/lib/rabbitmq rabbitmq-server -detached
  fi
  exec rabbitmq-server -detached
}
if ! reachable; then
  "${sudo_cmd[@]}" bash -c "$(declare -f start_broker); start_broker" >/dev/null 2>&1 || true
fi
if ! wait_ready; then
  echo "broker.sh: rabbitmq-server did not come up on $host:$port within 120 s; see /var/log/rabbitmq/." >&2
  exit 1
fi

enable_management
