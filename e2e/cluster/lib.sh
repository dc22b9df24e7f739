# shellcheck shell=bash
# Shared settings and helpers for the e2e cluster scripts. Sourced, not run.

K8S_VERSION="${K8S_VERSION:-v1.33.13}"
# CI may run with a minimal environment.
if [[ -z ${HOME:-} ]]; then HOME="$(getent passwd "$(id -u)" | cut -d: -f6)"; export HOME; fi
TS_CACHE="${TS_CACHE:-$HOME/.cache/tradestore}"
# Runtime state of the cluster (certs, etcd data, containerd root, logs, pids).
TS_STATE="${TS_STATE:-/var/lib/tradestore-e2e}"
# Volatile runtime state (pid files, sockets, containerd state).
TS_RUN="${TS_RUN:-/run/tradestore-e2e}"
# Admin kubeconfig for the host (kubectl, the Rust e2e tests).
TS_KUBECONFIG="${TS_KUBECONFIG:-$TS_STATE/kubeconfig}"

# Network layout. Everything except the API server lives in network
# namespace $TS_NETNS. A veth pair links it to the host:
#   host side  $TS_VETH_HOST  $TS_HOST_IP/30
#   netns side $TS_VETH_NS    $TS_NODE_IP/30   (the node IP, default route)
# The API server listens on 127.0.0.1:$TS_API_PORT (for kubectl and tests on
# the host) and on $TS_HOST_IP:$TS_API_PORT (for kubelet/kube-proxy/pods).
TS_NETNS="${TS_NETNS:-tradestore-e2e}"
TS_VETH_HOST="${TS_VETH_HOST:-ts-e2e-host}"
TS_VETH_NS="${TS_VETH_NS:-ts-e2e-node}"
TS_HOST_IP="${TS_HOST_IP:-10.231.0.1}"
TS_NODE_IP="${TS_NODE_IP:-10.231.0.2}"
TS_API_PORT="${TS_API_PORT:-6443}"
TS_ETCD_PORT="${TS_ETCD_PORT:-23790}"
TS_ETCD_PEER_PORT="${TS_ETCD_PEER_PORT:-23800}"
TS_POD_CIDR="${TS_POD_CIDR:-10.232.0.0/24}"
TS_SERVICE_CIDR="${TS_SERVICE_CIDR:-10.233.0.0/24}"
TS_NODE_NAME="${TS_NODE_NAME:-tradestore-e2e}"
TS_NETNS_PATH="/run/netns/$TS_NETNS"

log() { printf '[e2e-cluster %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# go >= 1.24 is needed for Kubernetes 1.33.
ensure_go() {
  if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
    export PATH="$PATH:/usr/local/go/bin"
  fi
  command -v go >/dev/null 2>&1 || die "Go toolchain (>= 1.24) not found; install Go (e.g. /usr/local/go)"
  local v
  v="$(go env GOVERSION)"; v="${v#go}"
  local major="${v%%.*}" rest="${v#*.}"; local minor="${rest%%.*}"
  if (( major < 1 || (major == 1 && minor < 24) )); then
    die "Go $v is too old; Kubernetes ${K8S_VERSION} needs Go >= 1.24"
  fi
}

# Run a command inside the cluster network namespace. nsenter (not
# `ip netns exec`, which remounts /sys and hides the cgroup hierarchy).
in_ns() { nsenter --net="$TS_NETNS_PATH" -- "$@"; }

# First usable address of the Service CIDR (the "kubernetes" Service).
svc_first_ip() { local n="${TS_SERVICE_CIDR%/*}"; echo "${n%.*}.$(( ${n##*.} + 1 ))"; }

pid_of() { local f="$TS_RUN/pids/$1.pid"; [[ -s $f ]] && cat "$f"; }

# proc_alive NAME: the pid file's process exists and is still NAME (guards
# against pid reuse by checking its command line).
proc_alive() {
  local pid; pid="$(pid_of "$1")" || return 1
  pid_running "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$1"
}

# start_proc NAME host|ns CMD...: start CMD in its own session (so it
# survives the calling shell), log to $TS_STATE/logs/NAME.log, record its
# pid in $TS_RUN/pids/NAME.pid. "ns" runs it inside the cluster netns.
start_proc() {
  local name=$1 where=$2; shift 2
  local pidf="$TS_RUN/pids/$name.pid" logf="$TS_STATE/logs/$name.log"
  local pre=()
  [[ $where == ns ]] && pre=(nsenter "--net=$TS_NETNS_PATH" --)
  rm -f "$pidf"
  # setsid does not fork here (we are not a process-group leader), and bash
  # records its own pid before exec'ing the component, so the pid is exact.
  setsid "${pre[@]}" bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' \
    "$pidf" "$@" >>"$logf" 2>&1 </dev/null 9>&- &
  local i
  for i in $(seq 100); do [[ -s $pidf ]] && return 0; sleep 0.1; done
  die "failed to start $name (see $logf)"
}

# pid_running PID: exists and is not a zombie (our components are re-parented
# to PID 1 once up.sh exits, which may reap them only later).
pid_running() {
  local st
  st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n $st && $st != Z && $st != X ]]
}

# stop_proc NAME [TIMEOUT]: TERM, then KILL after TIMEOUT seconds.
stop_proc() {
  local name=$1 timeout=${2:-15} pid i
  pid="$(pid_of "$name")" || return 0
  if proc_alive "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
      pid_running "$pid" || break
      sleep 0.1
    done
    if pid_running "$pid"; then
      log "$name (pid $pid) did not stop; killing"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
  fi
  rm -f "$TS_RUN/pids/$name.pid"
}

# retry SECONDS CMD...: run CMD (quietly) every second until it succeeds;
# returns 1 on timeout.
retry() {
  local secs=$1 i; shift
  for ((i = 0; i < secs; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 1
  done
  return 1
}

# wait_for SECONDS DESCRIPTION CMD...: retry, and die on timeout.
wait_for() {
  local secs=$1 what=$2; shift 2
  retry "$secs" "$@" && return 0
  "$@" || true
  die "timed out after ${secs}s waiting for $what"
}

# port_free PORT: nothing listens on TCP PORT in the host namespace.
port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }

# pick_port PORT [EXCEPT]: PORT, or the next free port above it (not EXCEPT).
pick_port() {
  local p=$1
  while ! port_free "$p" || [[ $p == "${2:-}" ]]; do p=$((p + 1)); done
  echo "$p"
}
