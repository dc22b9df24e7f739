#!/usr/bin/env bash
# The end-to-end suite on a multi-node kind cluster (1 control plane + 3 workers), as CI runs it:
#
#   e2e/kind.sh                        # images, cluster, chart, the whole suite (both RBAC scopes)
#   e2e/kind.sh t02                    # only the tests matching a filter (no namespace-scoped pass)
#   KEEP_CLUSTER=1 e2e/kind.sh         # leave the cluster up (kind delete cluster --name tradestore-e2e)
#
# The same command on a laptop with Docker and kind from the internet and in CI here; only where
# the images come from differs:
#   KIND_OFFLINE=0 (default when docker can reach a registry: set it yourself)
#       images: docker build -f {sidecar,operator}/Containerfile . (compiled in the builder stage)
#       node image: kind's default kindest/node; busybox:1.36 and redis:7 pulled
#   KIND_OFFLINE=1 (CI here, no registry)
#       images: e2e/images.sh (the same Containerfiles, host-built binaries), the project's dockerd
#       node image: e2e/kind/node-image.sh (built offline); busybox/redis: e2e/images/test-images.sh
#       kind itself: `go install sigs.k8s.io/kind@v0.33.0` (Go module proxy)
# Steps: images; `kind create cluster`, images loaded into every node; helm install with
# rbac.scope=cluster; the suite (tests several at a time, t14/t15 stopping and draining a worker
# kept for them, then t08 alone: it freezes the operator's leader); helm upgrade to rbac.scope=namespace and t01/t06/t07 in the watched namespace;
# on failure diagnostics into $TS_CACHE_DIR/e2e-artifacts/<time>/; the cluster deleted (trap).
# E2E_SKIP_BUILD=1 (offline) uses the sidecar/operator binaries already in $CARGO_TARGET_DIR/release;
# E2E_TEST_THREADS (default 3) tests run at once beside t14/t15; E2E_SKIP_SCOPED=1 skips the second pass.
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
# shellcheck source=e2e/kind/cluster.sh
source e2e/kind/cluster.sh
((KIND_WORKERS >= 2)) || { echo "kind.sh: KIND_WORKERS must be at least 2 (one is kept for node faults: t14, t15)" >&2; exit 2; }

export KIND_OFFLINE # e2e/kind/node.sh (t14, t15) reaches the same docker
if ((KIND_OFFLINE)); then
  # The project's own dockerd (a user's docker otherwise: DOCKER_HOST and PATH as they are).
  # shellcheck source=e2e/docker.sh
  source e2e/docker.sh
  docker_up
  # kubectl (and kubeadm in the node image) from the project's multi-call Kubernetes binary.
  k8s_bin="$(e2e/k8s/build.sh)"
  export PATH="$TS_CACHE_DIR/bin:$k8s_bin:$PATH"
  if ! command -v kind >/dev/null || [[ $(kind version) != "kind $KIND_VERSION "* ]]; then
    log "go install sigs.k8s.io/kind@$KIND_VERSION"
    ensure_go
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
  if [[ -n ${lost_node_test:-} ]]; then kill "$lost_node_test" 2>/dev/null || true; fi
  if ((rc != 0)); then
    e2e_collect "$NS"
    if [[ -s ${suite_log:-} ]]; then e2e_failures "$suite_log"; fi
  fi
  if [[ ${KEEP_CLUSTER:-0} == 1 ]]; then
    log "KEEP_CLUSTER=1: cluster $KIND_CLUSTER stays (KUBECONFIG=$KUBECONFIG)"
  else
    kind_cluster_down
    if ((KIND_OFFLINE)); then docker_down; fi
  fi
  log "done: exit $rc after $((SECONDS - start)) s"
  exit "$rc"
}
trap cleanup EXIT

log "images"
if ((KIND_OFFLINE)); then
  if [[ ${E2E_SKIP_BUILD:-0} == 1 ]]; then TS_KEEP_DOCKER=1 e2e/images.sh; else TS_KEEP_DOCKER=1 e2e/images.sh --build; fi
  # shellcheck source=/dev/null
  source "$TS_CACHE_DIR/images/images.env"
  node_image="$(e2e/kind/node-image.sh)"
  { read -r busybox; read -r redis; } < <(e2e/test-images/build.sh)
  APP_IMAGE="${TRADESTORE_E2E_APP_IMAGE:-$busybox}"
  REDIS_IMAGE="${TRADESTORE_E2E_REDIS_IMAGE:-$redis}"
else
  version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
  tag="${TS_IMAGE_TAG:-$version-g$(git rev-parse --short=10 HEAD)}"
  SIDECAR_IMAGE="tradestore/sidecar:$tag" OPERATOR_IMAGE="tradestore/operator:$tag"
  docker build -f sidecar/Containerfile -t "$SIDECAR_IMAGE" .
  docker build -f operator/Containerfile -t "$OPERATOR_IMAGE" .
  # kind's own node image for its version (kind v0.33.0: kindest/node:v1.37.0), unless named.
  node_image="${KIND_NODE_IMAGE:-}"
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
# t14 and t15 stop and drain a node while the other tests run: the last worker is kept for them
# (nothing else is scheduled there; their stores tolerate the taint and have their volumes made
# there).
fault_node="$KIND_CLUSTER-worker$KIND_WORKERS"
kubectl taint node "$fault_node" tradestore.io/e2e-node-faults=true:NoSchedule --overwrite >/dev/null

# helm_install [EXTRA HELM ARGS...]: install/upgrade the chart with the fresh operator image.
helm_install() {
  helm upgrade --install "$RELEASE" charts/tradestore-operator --namespace "$NS" --create-namespace \
    --set image.repository="${OPERATOR_IMAGE%:*}" --set image.tag="${OPERATOR_IMAGE##*:}" \
    --set image.pullPolicy=IfNotPresent --set operator.resyncSeconds=10 "$@" --wait --timeout 300s
  kubectl -n "$NS" rollout status "deployment/$RELEASE" --timeout=120s
}

log "helm install $RELEASE into $NS (rbac.scope=cluster)"
helm_install

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
# Node faults (t14, t15): docker stop/start of a node container, drain, uncordon.
export TRADESTORE_E2E_NODE_TOOL="$ROOT/e2e/kind/node.sh"
export TRADESTORE_E2E_FAULT_NODE="$fault_node"
suite_bin="$(e2e_suite_binary)" || { log "could not find the e2e suite binary"; exit 1; }
# The suite's output also goes to a log whose failures cleanup prints last, where a CI tail shows
# them; anyhow's backtraces (RUST_BACKTRACE set by a caller) would only push them out of view.
suite_log="$TS_CACHE_DIR/kind/suite.log"
: >"$suite_log"
suite() { RUST_LIB_BACKTRACE=0 "$suite_bin" --ignored --nocapture "$@" 2>&1 | tee -a "$suite_log"; }
if (($#)); then
  suite --test-threads=1 "$@"
  log "suite passed (filter: $*)"
  exit 0
fi
# Every test has a namespace of its own; t14 (stops a node) and t15 (drains it) share the worker
# kept for node faults, one after the other, in a process of their own that starts at once beside
# the others instead of last in name order (t14 is the longest: it waits for its node to go
# NotReady). t08 freezes the operator's leader, which would stall the others: alone, after them.
suite --test-threads=1 t14_ t15_ &
lost_node_test=$!
suite --test-threads="${E2E_TEST_THREADS:-3}" --skip t08_ --skip t14_ --skip t15_
wait "$lost_node_test"
suite --test-threads=1 t08_
log "suite passed"

# Second pass: the chart with namespace-scoped RBAC (a Role in one watched namespace), and the
# tests that create, serve, delete and check RBAC in that namespace.
if [[ ${E2E_SKIP_SCOPED:-0} != 1 ]]; then
  scoped=e2e-scoped
  # The first pass's namespaces hold TradeStores with finalizers: let the cluster-wide operator
  # finish deleting them before it stops watching those namespaces.
  for _ in $(seq 120); do
    [[ -z $(kubectl get ns -l tradestore.io/e2e=true -o name 2>/dev/null) ]] && break
    sleep 1
  done
  log "helm upgrade: rbac.scope=namespace, watchNamespaces=[$scoped]"
  kubectl create namespace "$scoped" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  helm_install --set rbac.scope=namespace --set-json "watchNamespaces=[\"$scoped\"]"
  TRADESTORE_E2E_NAMESPACE="$scoped" TRADESTORE_E2E_RBAC_SCOPE=namespace suite --test-threads=1 t01_ t06_ t07_
  log "namespace-scoped pass passed"
fi
