#!/usr/bin/env bash
# The e2e suite on a multi-node kind cluster (1 control plane + 3 workers).
#
#   e2e/kind.sh [TEST FILTER...]       # images, cluster, chart, suite, delete
#   KEEP_CLUSTER=1 e2e/kind.sh
#
# The same command on a laptop with Docker and kind from the internet and in CI here; only where
# the images come from differs:
#   KIND_OFFLINE=0 (default when docker can reach a registry: set it yourself)
#       images: docker build -f {sidecar,operator}/Containerfile . (compiled in the builder stage)
#       node image: kind's default kindest/node; busybox:1.36 and redis:7 pulled
#   KIND_OFFLINE=1 (CI here, no registry)
#       images: e2e/images.sh (the same Containerfiles, host-built binaries), the project's dockerd
#       node image: e2e/kind/node-image.sh (built offline); busybox/redis: e2e/cluster/images
#       kind itself: `go install sigs.k8s.io/kind@v0.33.0` (Go module proxy)
# Needs root for one host route: the tests reach Services by ClusterIP, routed via the control-plane
# node's IP on the docker network (removed at the end).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
start=$SECONDS
log() { printf '[e2e-kind %(%H:%M:%S)T +%ss] %s\n' -1 "$((SECONDS - start))" "$*" >&2; }
NS="${TS_E2E_NAMESPACE:-tradestore-system}"
RELEASE="${TS_E2E_RELEASE:-tradestore-operator}"
KIND_OFFLINE="${KIND_OFFLINE:-0}"
KIND_VERSION="${KIND_VERSION:-v0.33.0}"
[[ $(id -u) == 0 ]] || { echo "kind.sh: run as root (a host route to the Service CIDR)" >&2; exit 1; }

# shellcheck source=scripts/env.sh
source scripts/env.sh
# shellcheck source=e2e/tools.sh
source e2e/tools.sh
ensure_helm
# shellcheck source=e2e/docker.sh
source e2e/docker.sh
# shellcheck source=e2e/kind/cluster.sh
source e2e/kind/cluster.sh

if ((KIND_OFFLINE)); then
  docker_up
  # kubectl (and kubeadm in the node image) from the project's multi-call Kubernetes binary.
  export TS_CACHE="${TS_CACHE:-$TS_CACHE_DIR}"
  k8s_bin="$(e2e/cluster/build-k8s.sh)"
  export PATH="$TS_CACHE_DIR/bin:$k8s_bin:$PATH"
  if ! command -v kind >/dev/null || [[ $(kind version) != "kind $KIND_VERSION "* ]]; then
    log "go install sigs.k8s.io/kind@$KIND_VERSION"
    [[ -x /usr/local/go/bin/go ]] && export PATH="$PATH:/usr/local/go/bin"
    GOBIN="$TS_CACHE_DIR/bin" GOFLAGS=-modcacherw go install "sigs.k8s.io/kind@$KIND_VERSION"
  fi
fi
for t in docker kind kubectl cargo python3; do
  command -v "$t" >/dev/null || { echo "kind.sh: $t not found" >&2; exit 1; }
done

export KUBECONFIG="$TS_CACHE_DIR/kind/kubeconfig"
mkdir -p "${KUBECONFIG%/*}"

cleanup() {
  local rc=$?
  if ((rc != 0)); then
    log "failure: objects and operator logs"
    kubectl get nodes,all,tradestores,pvc,leases -A -o wide || true
    kubectl -n "$NS" logs -l app.kubernetes.io/name=tradestore-operator --all-containers --tail=200 || true
  fi
  if [[ ${KEEP_CLUSTER:-0} == 1 ]]; then
    log "KEEP_CLUSTER=1: cluster $KIND_CLUSTER stays (KUBECONFIG=$KUBECONFIG)"
  else
    kind_cluster_down
    docker_down
  fi
  log "done: exit $rc after $((SECONDS - start)) s"
  exit "$rc"
}
trap cleanup EXIT

log "images"
if ((KIND_OFFLINE)); then
  TS_KEEP_DOCKER=1 e2e/images.sh
  # shellcheck source=/dev/null
  source "$TS_CACHE_DIR/images/images.env"
  node_image="$(e2e/kind/node-image.sh)"
  tmp="$(mktemp -d)"
  e2e/cluster/images/build.sh "$tmp" >/dev/null
  for t in busybox redis; do docker load -i "$tmp/$t.tar" >/dev/null; done
  rm -rf "$tmp"
  APP_IMAGE="${TRADESTORE_E2E_APP_IMAGE:-tradestore.local/busybox:e2e}"
  REDIS_IMAGE="${TRADESTORE_E2E_REDIS_IMAGE:-tradestore.local/redis:e2e}"
else
  version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
  tag="${TS_IMAGE_TAG:-$version-g$(git rev-parse --short=10 HEAD)}"
  SIDECAR_IMAGE="tradestore/sidecar:$tag" OPERATOR_IMAGE="tradestore/operator:$tag"
  docker build -f sidecar/Containerfile -t "$SIDECAR_IMAGE" .
  docker build -f operator/Containerfile -t "$OPERATOR_IMAGE" .
  node_image="${KIND_NODE_IMAGE:-kindest/node:v1.33.1}"
  APP_IMAGE="${TRADESTORE_E2E_APP_IMAGE:-docker.io/library/busybox:1.36}"
  REDIS_IMAGE="${TRADESTORE_E2E_REDIS_IMAGE:-docker.io/library/redis:7}"
  for img in "$APP_IMAGE" "$REDIS_IMAGE"; do
    docker image inspect "$img" >/dev/null 2>&1 || docker pull "$img"
  done
fi

log "cluster"
kind_cluster_up "$node_image"
kind load docker-image --name "$KIND_CLUSTER" "$SIDECAR_IMAGE" "$OPERATOR_IMAGE" "$APP_IMAGE" "$REDIS_IMAGE"
kubectl wait --for=condition=Ready nodes --all --timeout=180s

log "helm install"
helm upgrade --install "$RELEASE" charts/tradestore-operator --namespace "$NS" --create-namespace \
  --set image.repository="${OPERATOR_IMAGE%:*}" --set image.tag="${OPERATOR_IMAGE##*:}" \
  --set image.pullPolicy=IfNotPresent --set operator.resyncSeconds=10 --wait --timeout 300s

log "suite"
export TRADESTORE_E2E_SIDECAR_IMAGE="$SIDECAR_IMAGE"
export TRADESTORE_E2E_OPERATOR_IMAGE="$OPERATOR_IMAGE"
export TRADESTORE_E2E_OPERATOR_NAMESPACE="$NS"
export TRADESTORE_E2E_OPERATOR_SA="$RELEASE"
export TRADESTORE_E2E_IMAGE_PULL_POLICY=IfNotPresent
export TRADESTORE_E2E_APP_IMAGE="$APP_IMAGE"
export TRADESTORE_E2E_REDIS_IMAGE="$REDIS_IMAGE"
# kind's local-path provisioner: ReadWriteOnce.
export TRADESTORE_E2E_ACCESS_MODE=ReadWriteOnce
# SIGKILL/pause of a container goes through containerd inside the pod's node.
export TRADESTORE_E2E_CTR="docker exec {node} ctr"
# Node faults (t14): docker stop/start of a node container, drain.
export TRADESTORE_E2E_NODE_TOOL="$ROOT/e2e/kind/node.sh"
suite_bin="$(e2e_suite_binary)" || { log "could not find the e2e suite binary"; exit 1; }
"$suite_bin" --ignored --test-threads=1 --nocapture "$@"
log "suite passed"
