#!/usr/bin/env bash
# scripts/cluster.sh: a local 3-node RabbitMQ cluster for the cluster tests, next to the machine's broker.
#
#   scripts/cluster.sh start          start the three nodes (forming the cluster the first time), wait for all
#   scripts/cluster.sh stop           stop the three nodes; their data stays, the next start is quicker
#   scripts/cluster.sh status         each node's state and the cluster's view (exit 1 unless all three run)
#   scripts/cluster.sh urls           print the three AMQP URLs, comma-separated
#   scripts/cluster.sh ctl N ARGS…    rabbitmqctl against node N (1-3) only (also: queues N, diagnostics N)
#   scripts/cluster.sh stop-node N    stop node N only (graceful), for fault tests
#   scripts/cluster.sh kill-node N    kill node N only (SIGKILL, a crash), for fault tests
#   scripts/cluster.sh start-node N   start node N again and wait until it is back in the cluster
#   scripts/cluster.sh clean          stop, then delete every node's data (the next start forms a new cluster)
#
# The nodes run the machine's own rabbitmq-server (Debian bookworm: 3.10), as root, beside the
# broker that scripts/broker.sh starts and without touching it: node names rabbit-c1..3@localhost,
# AMQP ports 5701-5703, distribution ports 25701-25703, no plugins (so no management listener),
# data and logs under $CLUSTER_DIR (default /var/lib/amqprpc-cluster) and an Erlang cookie of their
# own there (the CLI finds it through HOME, so the broker's cookie is never read or changed). Nodes 2
# and 3 join node 1 with stop_app, join_cluster, start_app. They share the machine's epmd (port 4369)
# with every other Erlang node, as any nodes on one machine do, and never stop it.
#
# Settings (environment): CLUSTER_DIR, CLUSTER_BASE_PORT (5700: node N listens on base + N).
# start is idempotent and prints nothing when all three nodes are already up.
set -euo pipefail

base=${CLUSTER_DIR:-/var/lib/amqprpc-cluster}
base_port=${CLUSTER_BASE_PORT:-5700}
bin=/usr/lib/rabbitmq/bin # the real scripts; /usr/sbin's wrappers would switch to the broker's user and cookie
nodes=(1 2 3)

die() { echo "cluster.sh: $*" >&2; exit 1; }
say() { echo "cluster.sh: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
  if ! { command -v sudo >/dev/null && sudo -n true 2>/dev/null; }; then die "needs root (or sudo without a password)"; fi
  exec sudo -n --preserve-env=CLUSTER_DIR,CLUSTER_BASE_PORT "$0" "$@"
fi

name() { echo "rabbit-c$1@localhost"; }
port() { echo $((base_port + $1)); }
url() { echo "amqp://guest:guest@127.0.0.1:$(port "$1")/"; }
dir() { echo "$base/n$1"; }

check_n() { [[ ${1:-} =~ ^[123]$ ]] || die "node must be 1, 2 or 3, not '${1:-}'"; }

# The node's environment, into envv: nothing from the machine's broker (its rabbitmq-env.conf,
# config, plugins, cookie) applies.
node_env() {
  local d
  d=$(dir "$1")
  envv=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 HOME="$base"
    RABBITMQ_CONF_ENV_FILE="$base/rabbitmq-env.conf" RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf"
    RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins"
    RABBITMQ_NODENAME="$(name "$1")" RABBITMQ_NODE_PORT="$(port "$1")" RABBITMQ_DIST_PORT=$(($(port "$1") + 20000))
    RABBITMQ_MNESIA_BASE="$d/mnesia" RABBITMQ_LOG_BASE="$d/log" RABBITMQ_PID_FILE="$d/rabbit.pid")
}

# A CLI tool aimed at node N only, with the cluster's cookie.
cli() {
  local tool=$1 n=$2 envv
  shift 2
  node_env "$n"
  "${envv[@]}" "$bin/$tool" -n "$(name "$n")" "$@"
}

running() { cli rabbitmqctl "$1" -q -t 5 status >/dev/null 2>&1; }

port_taken() { timeout 2 bash -c ">/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

ensure_installed() {
  [[ -x $bin/rabbitmq-server ]] && return 0
  command -v apt-get >/dev/null || die "rabbitmq-server is not installed and there is no apt-get"
  say "installing rabbitmq-server with apt-get (once per machine)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null; } ||
    die "apt-get install rabbitmq-server failed"
}

# The cluster's own cookie, made before any CLI call (Erlang would otherwise make one in HOME).
cookie() {
  mkdir -p "$base"
  if [[ ! -s $base/.erlang.cookie ]]; then
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$base/.erlang.cookie")
  fi
  chmod 400 "$base/.erlang.cookie"
}

setup_files() {
  cookie
  : >"$base/rabbitmq-env.conf"
  echo '[].' >"$base/enabled_plugins"
  local n d
  for n in "${nodes[@]}"; do
    d=$(dir "$n")
    mkdir -p "$d/log"
    {
      echo "# written by amqprpc's scripts/cluster.sh at every start"
      echo "listeners.tcp.default = $(port "$n")"
    } >"$d/rabbitmq.conf"
  done
}

# Starts node N's VM in the background, its pid in launched.
launch() {
  local n=$1 d envv
  d=$(dir "$n")
  port_taken "$(port "$n")" && die "port $(port "$n") is taken, and not by $(name "$n"): set CLUSTER_BASE_PORT"
  port_taken $(($(port "$n") + 20000)) && die "distribution port $(($(port "$n") + 20000)) is taken: set CLUSTER_BASE_PORT"
  node_env "$n"
  # setsid: the node outlives this script and ignores its terminal's signals; 9>&-: not our lock.
  # ulimit: as Debian's service unit (LimitNOFILE=65536); see scripts/broker.sh.
  (cd "$d" && { ulimit -n 65536 2>/dev/null || true; } && exec setsid "${envv[@]}" "$bin/rabbitmq-server" </dev/null >>"$d/log/startup.log" 2>&1 9>&-) &
  launched=$!
}

# Waits until node N (whose VM is pid) has booted.
await() {
  local n=$1 pid=$2 t0=$SECONDS
  while ! cli rabbitmqctl "$n" -q -t 10 await_startup >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$(dir "$n")/log/startup.log" >&2
      die "$(name "$n") exited while booting; logs in $(dir "$n")/log (a broken cluster: $0 clean)"
    fi
    if ((SECONDS - t0 > 300)); then
      kill -TERM "$pid" 2>/dev/null || true # the server script, which stops its VM
      die "$(name "$n") did not boot within 300 s; logs in $(dir "$n")/log"
    fi
    sleep 1
  done
}

start() {
  local n pids=() all=1
  for n in "${nodes[@]}"; do running "$n" || all=0; done
  ((all)) && return 0
  ensure_installed
  local t0=$SECONDS formed=0
  [[ -f $base/.formed ]] && formed=1
  if ((!formed)); then
    # A start cut short before the cluster formed: begin again from empty nodes.
    for n in 3 2 1; do stop_node "$n"; done
    rm -rf "${base:?}"/n[123]
  fi
  setup_files
  # All at once: nodes of a formed cluster wait for each other's tables when they boot.
  for n in "${nodes[@]}"; do
    pids[n]=
    running "$n" || { launch "$n"; pids[n]=$launched; }
  done
  for n in "${nodes[@]}"; do [[ -z ${pids[n]} ]] || await "$n" "${pids[n]}"; done
  if ((!formed)); then
    for n in 2 3; do
      cli rabbitmqctl "$n" -q stop_app >/dev/null || die "stop_app failed on $(name "$n")"
      cli rabbitmqctl "$n" -q join_cluster "$(name 1)" >/dev/null || die "$(name "$n") could not join $(name 1)"
      cli rabbitmqctl "$n" -q start_app >/dev/null || die "start_app failed on $(name "$n")"
    done
    touch "$base/.formed"
  fi
  local members
  members=$(running_nodes 1)
  [[ $members == *"$(name 1)"*"$(name 2)"*"$(name 3)"* ]] || die "the cluster runs only: $members"
  say "3 nodes up in $((SECONDS - t0)) s at $(urls)"
}

# The running nodes as node N sees them, one line.
running_nodes() {
  cli rabbitmqctl "$1" -q cluster_status --formatter json 2>/dev/null |
    sed -n 's/.*"running_nodes":\[\([^]]*\)\].*/\1/p' | tr -d '"' | tr ',' '\n' | sort | tr '\n' ' '
}

stop_node() {
  local n=$1
  running "$n" || return 0
  cli rabbitmqctl "$n" -q stop "$(dir "$n")/rabbit.pid" >/dev/null 2>&1 || die "rabbitmqctl stop failed for $(name "$n")"
}

kill_node() {
  local n=$1 pid
  pid=$(cat "$(dir "$n")/rabbit.pid" 2>/dev/null) || die "$(name "$n") has no pid file"
  # Only if that pid is still this node's VM, never a recycled pid.
  tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qx "RABBITMQ_NODENAME=$(name "$n")" ||
    die "$(name "$n") is not running"
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

start_node() {
  local n=$1 t0=$SECONDS
  running "$n" && return 0
  [[ -f $base/.formed ]] || die "no cluster yet: run $0 start"
  setup_files
  launch "$n"
  await "$n" "$launched"
  say "$(name "$n") back in $((SECONDS - t0)) s; running nodes: $(running_nodes "$n")"
}

status() {
  local n ok=1 seen=""
  for n in "${nodes[@]}"; do
    if running "$n"; then
      echo "$(name "$n"): running at $(url "$n")"
      [[ -n $seen ]] || seen=$n
    else
      echo "$(name "$n"): not running"
      ok=0
    fi
  done
  [[ -n $seen ]] && echo "running nodes seen by $(name "$seen"): $(running_nodes "$seen")"
  ((ok))
}

urls() { echo "$(url 1),$(url 2),$(url 3)"; }

usage() { die "usage: $0 start|stop|status|urls|clean|stop-node N|kill-node N|start-node N|ctl N ARGS…|queues N ARGS…|diagnostics N ARGS…"; }

# One start or stop at a time (two CI jobs may share a machine).
lock() { cookie && exec 9>"$base/.lock" && flock 9; }

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case $cmd in
  start) lock; start ;;
  # Node 1 last: the last node of a cluster to stop is the one that may boot without its peers.
  stop) lock; for n in 3 2 1; do stop_node "$n"; done ;;
  status) status ;;
  urls) urls ;;
  clean) lock; for n in 3 2 1; do stop_node "$n"; done; rm -rf "${base:?}"/n[123] "$base/.formed" ;;
  stop-node) check_n "${1:-}"; stop_node "$1" ;;
  kill-node) check_n "${1:-}"; kill_node "$1" ;;
  start-node) check_n "${1:-}"; lock; start_node "$1" ;;
  ctl) check_n "${1:-}"; n=$1; shift; cli rabbitmqctl "$n" "$@" ;;
  queues) check_n "${1:-}"; n=$1; shift; cli rabbitmq-queues "$n" "$@" ;;
  diagnostics) check_n "${1:-}"; n=$1; shift; cli rabbitmq-diagnostics "$n" "$@" ;;
  *) usage ;;
esac
