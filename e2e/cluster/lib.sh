# shellcheck shell=bash
# Shared settings and helpers for the e2e cluster scripts. Sourced, not run.

K8S_VERSION="${K8S_VERSION:-v1.33.13}"
TS_CACHE="${TS_CACHE:-$HOME/.cache/tradestore}"
# Runtime state of the cluster (certs, etcd data, containerd root, logs, pids).
TS_STATE="${TS_STATE:-/var/lib/tradestore-e2e}"

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
