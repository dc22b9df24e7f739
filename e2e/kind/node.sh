#!/usr/bin/env bash
# Node faults on the kind cluster, for the suite (TRADESTORE_E2E_NODE_TOOL) and by hand:
#
#   e2e/kind/node.sh stop|start|pause|unpause|drain|uncordon NODE
#
# stop/start: `docker stop`/`docker start` of the node container (start re-adds the routes between
# the nodes' pod CIDRs, which live in the node's network namespace); pause/unpause: `docker pause`
# (the node freezes: kubelet and pods stop, nothing is torn down); drain: `kubectl drain`;
# uncordon: `kubectl uncordon`.
# Uses the docker and KUBECONFIG e2e/kind.sh uses (KIND_OFFLINE=1: the project's dockerd).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TS_CACHE_DIR="${TS_CACHE_DIR:-${HOME:-/root}/.cache/tradestore}"
if [[ ${KIND_OFFLINE:-0} == 1 ]]; then
  # shellcheck source=e2e/docker.sh
  source "$ROOT/e2e/docker.sh"
fi
# shellcheck source=e2e/kind/cluster.sh
source "$ROOT/e2e/kind/cluster.sh"
op="${1:?usage: node.sh stop|start|pause|unpause|drain|uncordon NODE}" node="${2:?node name}"
case "$op" in
  stop) kind_node_stop "$node" ;;
  start) kind_node_start "$node" ;;
  pause) kind_node_pause "$node" ;;
  unpause) kind_node_unpause "$node" ;;
  drain) kind_node_drain "$node" ;;
  uncordon) kind_node_uncordon "$node" ;;
  *) echo "node.sh: unknown operation $op" >&2; exit 2 ;;
esac
_klog "node $node: $op done"
