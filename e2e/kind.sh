#!/usr/bin/env bash
# The same end-to-end suite on kind, for machines with Docker (Linux; NOT exercised in this
# project's CI, which has no Docker engine: see docs/e2e.md).
#
#   e2e/kind.sh            # create the kind cluster, build + load images, install the chart, test, delete
#   KEEP_CLUSTER=1 e2e/kind.sh
#
# Needs: docker, kind, kubectl, cargo, python3 (helm is fetched like e2e/chart-check.sh does), and
# root or sudo for one host route: the tests talk to Services by ClusterIP, so the script routes
# the kind Service CIDR via the node's Docker IP (kube-proxy on the node DNATs it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CLUSTER="${KIND_CLUSTER:-tradestore-e2e}"
NS="${TS_E2E_NAMESPACE:-tradestore-system}"
RELEASE="${TS_E2E_RELEASE:-tradestore-operator}"
SERVICE_CIDR="10.96.0.0/16"
log() { printf '[e2e-kind %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo

for t in docker kind kubectl cargo python3; do
  command -v "$t" >/dev/null || { echo "kind.sh: $t not found" >&2; exit 1; }
done
# shellcheck source=e2e/tools.sh
source e2e/tools.sh
ensure_helm

version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
tag="${TS_IMAGE_TAG:-$version-g$(git rev-parse --short=10 HEAD)}"
SIDECAR_IMAGE="tradestore/sidecar:$tag"
OPERATOR_IMAGE="tradestore/operator:$tag"

route_added=0
cleanup() {
  local rc=$?
  if ((rc != 0)); then
    log "failure: objects and operator logs"
    kubectl get all,tradestores,pvc,leases -A -o wide || true
    kubectl -n "$NS" logs -l app.kubernetes.io/name=tradestore-operator --all-containers --tail=200 || true
  fi
  if ((route_added)); then $SUDO ip route del "$SERVICE_CIDR" 2>/dev/null || true; fi
  if [[ ${KEEP_CLUSTER:-0} != 1 ]]; then kind delete cluster --name "$CLUSTER" || true; fi
  exit "$rc"
}
trap cleanup EXIT

log "images (docker build from the Containerfiles)"
docker build -f sidecar/Containerfile -t "$SIDECAR_IMAGE" .
docker build -f operator/Containerfile -t "$OPERATOR_IMAGE" .

log "kind cluster $CLUSTER"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 120s --config - <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  serviceSubnet: "$SERVICE_CIDR"
EOF
fi
kubectl config use-context "kind-$CLUSTER"
APP_IMAGE="${TRADESTORE_E2E_APP_IMAGE:-docker.io/library/busybox:1.36}"
REDIS_IMAGE="${TRADESTORE_E2E_REDIS_IMAGE:-docker.io/library/redis:7}"
for img in "$APP_IMAGE" "$REDIS_IMAGE"; do
  docker image inspect "$img" >/dev/null 2>&1 || docker pull "$img"
done
kind load docker-image --name "$CLUSTER" "$SIDECAR_IMAGE" "$OPERATOR_IMAGE" "$APP_IMAGE" "$REDIS_IMAGE"

node_ip="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$CLUSTER-control-plane")"
$SUDO ip route replace "$SERVICE_CIDR" via "$node_ip" && route_added=1

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
# SIGKILL of a container goes through containerd inside the kind node.
export TRADESTORE_E2E_CTR="docker exec $CLUSTER-control-plane ctr"
cargo test --release -p tradestore-e2e -- --ignored --test-threads=1 --nocapture "$@"
log "suite passed"
