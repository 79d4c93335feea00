#!/usr/bin/env bash
# scripts/rabbitmq4.sh: a RabbitMQ 4.x node next to the machine's own broker, for the strict CI run.
#
#   scripts/rabbitmq4.sh start        build the chroot if needed, start the node, wait until it answers
#   scripts/rabbitmq4.sh stop         stop the node and unmount the chroot's /proc
#   scripts/rabbitmq4.sh status       say whether the node runs, and which version (exit 1 if it does not)
#   scripts/rabbitmq4.sh url          print its AMQP URL (amqp://guest:guest@127.0.0.1:5673/)
#   scripts/rabbitmq4.sh ctl ARGS…    rabbitmqctl against this node only (also: queues, diagnostics)
#   scripts/rabbitmq4.sh clean        stop, then delete the cached chroot (the next start rebuilds it)
#
# Debian bookworm ships RabbitMQ 3.10 only; forky ships 4.3.x and trixie 4.0.5. The node runs in a
# debootstrap --variant=minbase chroot of that suite, built from the same mirror as the host's own
# apt sources, once, into $RABBITMQ4_CACHE/<suite> (default /var/cache/amqprpc/forky: ≈ 350 MB,
# 45-150 s with the mirror's speed); later starts reuse it (≈ 4 s). Only debootstrap is installed
# on the host.
#
# The node is its own: name rabbit4@localhost, AMQP port 5673, distribution port 25673, no plugins
# (so no management listener), data, logs and Erlang cookie inside the chroot. Every start begins
# with an empty node (a strict 4.x node may refuse to boot with queues left from an earlier run).
# Its config denies every deprecated feature (transient non-exclusive queues, global QoS, …); start
# then asks the node which ones it knows, and stops it and fails if one is not denied (a newer 4.x
# added one: add it to deprecated_features below). It shares the machine's epmd (port 4369) with the
# other Erlang nodes, as any two nodes on one machine do (if none runs yet, the node starts one that
# stays up); it never stops it.
#
# Settings (environment): RABBITMQ4_SUITE (forky), RABBITMQ4_PORT (5673), RABBITMQ4_DIST_PORT
# (port + 20000), RABBITMQ4_NODE (rabbit4@localhost), RABBITMQ4_MAX_MESSAGE_SIZE (bytes, read at
# boot only; default 16 MiB as 4.x's own default), RABBITMQ4_CACHE, DEBIAN_MIRROR (default: the
# first non-security Debian URI in the host's apt sources). It needs root, or sudo without a password.
# start is idempotent and prints nothing when the node is already up.
set -euo pipefail

suite=${RABBITMQ4_SUITE:-forky}
port=${RABBITMQ4_PORT:-5673}
dist_port=${RABBITMQ4_DIST_PORT:-$((port + 20000))}
node=${RABBITMQ4_NODE:-rabbit4@localhost}
max_message_size=${RABBITMQ4_MAX_MESSAGE_SIZE:-16777216}
cache=${RABBITMQ4_CACHE:-/var/cache/amqprpc}
root=$cache/$suite
url="amqp://guest:guest@127.0.0.1:$port/"

# Every deprecated feature RabbitMQ 4.x knows (rabbitmq.com/release-information/deprecated-features-list,
# 4.3 release notes); naming one a given version does not have is harmless.
deprecated_features=(
  amqp_address_v1 amqp_filter_set_bug classic_queue_mirroring global_qos
  management_metrics_collection queue_master_locator ram_node_type transient_nonexcl_queues
)

# Paths inside the chroot.
home=/var/lib/amqprpc-rabbit4 # HOME of the node and its CLI: holds the Erlang cookie
data=$home/data
logs=/var/log/amqprpc-rabbit4
conf=/etc/amqprpc-rabbit4

die() { echo "rabbitmq4.sh: $*" >&2; exit 1; }
say() { echo "rabbitmq4.sh: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
  if ! { command -v sudo >/dev/null && sudo -n true 2>/dev/null; }; then die "needs root (or sudo without a password)"; fi
  exec sudo -n --preserve-env=RABBITMQ4_SUITE,RABBITMQ4_PORT,RABBITMQ4_DIST_PORT,RABBITMQ4_NODE,RABBITMQ4_MAX_MESSAGE_SIZE,RABBITMQ4_CACHE,DEBIAN_MIRROR "$0" "$@"
fi

# The host's Debian mirror: DEBIAN_MIRROR, else the first URI of a non-security source, in
# deb822 (*.sources) or one-line (*.list) format.
mirror() {
  if [[ -n ${DEBIAN_MIRROR:-} ]]; then echo "$DEBIAN_MIRROR"; return; fi
  local m=""
  shopt -s nullglob
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    m=$(awk 'BEGIN { RS = "" } !/Suites:[^\n]*-security/ && match($0, /URIs:[ \t]*[^ \t\n]+/) {
          split(substr($0, RSTART, RLENGTH), a, /[ \t]+/); print a[2]; exit }' "$f")
    [[ -n $m ]] && break
  done
  if [[ -z $m ]]; then
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [[ -f $f ]] || continue
      m=$(awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) while (i <= NF && $i !~ /\]$/) i++; if ($2 ~ /^\[/) i++;
            if ($(i+1) !~ /-security/) { print $i; exit } }' "$f")
      [[ -n $m ]] && break
    done
  fi
  shopt -u nullglob
  [[ -n $m ]] || die "no Debian mirror found in /etc/apt/sources.list*; set DEBIAN_MIRROR"
  echo "$m"
}

in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 "$@"; }

mount_proc() { mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"; }
umount_proc() {
  if mountpoint -q "$root/proc"; then umount "$root/proc" 2>/dev/null || umount -l "$root/proc"; fi
}

# The chroot's CLI tools, as root with the node's HOME (its cookie), aimed at this node only.
cli() {
  local tool=$1
  shift
  in_root HOME=$home /usr/lib/rabbitmq/bin/"$tool" -n "$node" "$@"
}

# A finished chroot has a marker; anything else under $root is a build that was cut short.
build() {
  [[ -f $root/.amqprpc-ready ]] && return 0
  local t0=$SECONDS m
  m=$(mirror)
  if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap with apt-get..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null ||
      { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; } ||
      die "apt-get install debootstrap failed"
  fi
  if [[ -e $root ]]; then
    say "removing the unfinished chroot $root"
    umount_proc
    rm -rf --one-file-system "$root"
  fi
  mkdir -p "$root"
  # debootstrap has no script for suites newer than itself; sid's works for any testing suite.
  local script=()
  [[ -e /usr/share/debootstrap/scripts/$suite ]] || script=(/usr/share/debootstrap/scripts/sid)
  say "building a Debian $suite chroot in $root from $m (once; a few minutes, ≈ 500 MB)..."
  if ! debootstrap --variant=minbase "$suite" "$root" "$m" "${script[@]}" >"$cache/debootstrap-$suite.log" 2>&1; then
    tail -n 20 "$cache/debootstrap-$suite.log" >&2
    die "debootstrap $suite failed; full log in $cache/debootstrap-$suite.log"
  fi
  # Testing suites' Release files may be older than their Valid-Until on a mirror snapshot.
  echo 'Acquire::Check-Valid-Until "false";' >"$root/etc/apt/apt.conf.d/99amqprpc"
  # Keep the package from starting its own broker (on 5672, next to the host's) while installing.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
  cp /etc/hosts /etc/resolv.conf "$root/etc/"
  mount_proc
  if ! { in_root apt-get update -qq &&
    in_root DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rabbitmq-server &&
    in_root apt-get clean; } >"$cache/apt-$suite.log" 2>&1; then
    umount_proc
    tail -n 20 "$cache/apt-$suite.log" >&2
    die "installing rabbitmq-server in the $suite chroot failed; full log in $cache/apt-$suite.log"
  fi
  umount_proc
  # shellcheck disable=SC2016 # dpkg-query's own ${Version}, not the shell's
  in_root dpkg-query -W -f '${Version}\n' rabbitmq-server >"$root/.amqprpc-ready"
  say "chroot ready in $((SECONDS - t0)) s: rabbitmq-server $(cat "$root/.amqprpc-ready")"
}

write_config() {
  mkdir -p "$root$conf" "$root$home" "$root$logs"
  local f
  {
    echo "# written by amqprpc's scripts/rabbitmq4.sh at every start"
    echo "listeners.tcp.default = $port"
    echo "max_message_size = $max_message_size"
    for f in "${deprecated_features[@]}"; do echo "deprecated_features.permit.$f = false"; done
  } >"$root$conf/rabbitmq.conf"
  echo '[].' >"$root$conf/enabled_plugins"
  if [[ ! -s $root$home/.erlang.cookie ]]; then
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$root$home/.erlang.cookie")
  fi
  chmod 400 "$root$home/.erlang.cookie"
  cp /etc/hosts /etc/resolv.conf "$root/etc/"
}

running() { cli rabbitmqctl -q -t 5 status >/dev/null 2>&1; }

port_taken() { timeout 2 bash -c ">/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

start() {
  [[ -f $root/.amqprpc-ready ]] && mountpoint -q "$root/proc" && running && return 0
  build
  port_taken "$port" && die "port $port is taken, and not by $node: set RABBITMQ4_PORT"
  port_taken "$dist_port" && die "distribution port $dist_port is taken: set RABBITMQ4_DIST_PORT"
  mount_proc
  write_config
  rm -rf "${root:?}$data"
  local t0=$SECONDS pid
  # setsid: the node outlives this script and ignores its terminal's signals.
  setsid chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 HOME=$home \
    RABBITMQ_NODENAME="$node" RABBITMQ_NODE_PORT="$port" \
    RABBITMQ_DIST_PORT="$dist_port" RABBITMQ_CONFIG_FILE=$conf/rabbitmq.conf \
    RABBITMQ_ENABLED_PLUGINS_FILE=$conf/enabled_plugins RABBITMQ_MNESIA_BASE=$data \
    RABBITMQ_LOG_BASE=$logs RABBITMQ_PID_FILE=$home/rabbit4.pid \
    /usr/lib/rabbitmq/bin/rabbitmq-server </dev/null >"$root$logs/startup.log" 2>&1 9>&- &
  pid=$!
  disown
  while ! cli rabbitmqctl -q -t 10 await_startup >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$root$logs/startup.log" >&2
      die "$node exited while booting; logs in $root$logs"
    fi
    if ((SECONDS - t0 > 120)); then
      tail -n 30 "$root$logs/startup.log" >&2
      kill -TERM "$pid" 2>/dev/null || true # the server script, which stops its VM
      die "$node did not boot within 120 s; logs in $root$logs"
    fi
    sleep 1
  done
  check_denied
  say "$node up in $((SECONDS - t0)) s at $url"
}

# Fails when the node has a deprecated feature (not yet removed) that the config does not deny.
# Asked of the node itself, as 4.0's list_deprecated_features does not show the state.
check_denied() {
  local out permitted
  out=$(cli rabbitmqctl -q eval 'Cfg = application:get_env(rabbit, permit_deprecated_features, #{}),
    io:format("permitted:~s~n", [lists:join(" ", [atom_to_list(N) ||
      {N, P} <- maps:to_list(rabbit_deprecated_features:list(all)),
      maps:get(deprecation_phase, P) =/= removed, maps:get(N, Cfg, undefined) =/= false])]).' 2>&1) ||
    { stop; die "could not ask $node for its deprecated features: $out"; }
  [[ $out == *permitted:* ]] || { stop; die "could not ask $node for its deprecated features: $out"; }
  permitted=$(sed -n 's/^permitted://p' <<<"$out")
  if [[ -n $permitted ]]; then
    stop # a node that is not strict must not pass for one at the next start
    die "$node permits deprecated features: $permitted (add them to deprecated_features in $0)"
  fi
}

stop() {
  if [[ -f $root/.amqprpc-ready ]] && mountpoint -q "$root/proc" && running; then
    cli rabbitmqctl -q stop "$home/rabbit4.pid" >/dev/null 2>&1 || die "rabbitmqctl stop failed for $node"
  fi
  [[ -d $root ]] && umount_proc
  return 0
}

status() {
  if [[ -f $root/.amqprpc-ready ]] && mountpoint -q "$root/proc" && running; then
    local v
    v=$(cli rabbitmqctl -q status 2>/dev/null | sed -n 's/^RabbitMQ version: //p')
    echo "$node: running RabbitMQ $v ($suite chroot $root) at $url"
  else
    echo "$node: not running"
    return 1
  fi
}

usage() { die "usage: $0 start|stop|status|url|clean|ctl ARGS…|queues ARGS…|diagnostics ARGS…"; }

cmd=${1:-}
[[ $# -gt 0 ]] && shift
# One start, stop or build at a time per cache (two CI jobs may share a machine).
lock() { mkdir -p "$cache" && exec 9>"$cache/.lock" && flock 9; }
built() { [[ -f $root/.amqprpc-ready ]] || die "no $suite chroot yet: run $0 start"; }
case $cmd in
  start) lock; start ;;
  stop) lock; stop ;;
  status) status ;;
  url) echo "$url" ;;
  clean) lock; stop; rm -rf --one-file-system "${root:?}" ;;
  ctl) built; cli rabbitmqctl "$@" ;;
  queues) built; cli rabbitmq-queues "$@" ;;
  diagnostics) built; cli rabbitmq-diagnostics "$@" ;;
  *) usage ;;
esac
