#!/usr/bin/env bash
# The end-to-end run on the local cluster (e2e/cluster/), as CI runs it:
#   1. bring the cluster up (e2e/cluster/up.sh; ~15 s when its binaries are cached),
#   2. build the release binaries and the e2e test binary,
#   3. build both images with Docker from their Containerfiles, from the host-built binaries, and
#      load them (e2e/images.sh --load: its own dockerd, stopped after; base images made offline),
#   4. helm install charts/tradestore-operator into $TS_E2E_NAMESPACE (pullPolicy Never),
#   5. run the suite: cargo test --release -p tradestore-e2e -- --ignored --test-threads=1, then
#      upgrade the release to rbac.scope=namespace and run t01/t06/t07 in the watched namespace,
#   6. on failure, collect logs/events/objects into $TS_CACHE_DIR/e2e-artifacts/<time>/,
#   7. tear the cluster down (trap; E2E_KEEP_CLUSTER=1 keeps it up for debugging).
# E2E_SKIP_BUILD=1 uses the sidecar/operator binaries already built in $CARGO_TARGET_DIR/release.
# Exits non-zero when anything fails. Extra arguments go to the test binary (e.g. a test name
# filter: e2e/run.sh t01).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
start=$SECONDS
log() { printf '[e2e-run %(%H:%M:%S)T +%ss] %s\n' -1 "$((SECONDS - start))" "$*" >&2; }

NS="${TS_E2E_NAMESPACE:-tradestore-system}"
RELEASE="${TS_E2E_RELEASE:-tradestore-operator}"

# shellcheck source=scripts/env.sh
source scripts/env.sh
# shellcheck source=e2e/tools.sh
source e2e/tools.sh
ensure_helm

collect() {
  local dir
  dir="$TS_CACHE_DIR/e2e-artifacts/$(date -u +%Y%m%dT%H%M%SZ)"
  mkdir -p "$dir"
  log "collecting diagnostics into $dir"
  {
    kubectl get nodes -o wide
    kubectl get all,tradestores,pvc,leases,events -A -o wide
  } >"$dir/objects.txt" 2>&1 || true
  kubectl get tradestores -A -o yaml >"$dir/tradestores.yaml" 2>&1 || true
  kubectl get events -A --sort-by=.lastTimestamp >"$dir/events.txt" 2>&1 || true
  kubectl -n "$NS" describe pods >"$dir/operator-pods.txt" 2>&1 || true
  local p
  for p in $(kubectl -n "$NS" get pods -o name 2>/dev/null); do
    kubectl -n "$NS" logs "$p" --all-containers >"$dir/operator-${p#pod/}.log" 2>&1 || true
    kubectl -n "$NS" logs "$p" --all-containers --previous >"$dir/operator-${p#pod/}.previous.log" 2>/dev/null || true
  done
  local ns
  for ns in $(kubectl get ns -l tradestore.io/e2e=true -o name 2>/dev/null); do
    ns="${ns#namespace/}"
    kubectl -n "$ns" describe pods,tradestores >"$dir/$ns-describe.txt" 2>&1 || true
    for p in $(kubectl -n "$ns" get pods -o name 2>/dev/null); do
      kubectl -n "$ns" logs "$p" --all-containers >"$dir/$ns-${p#pod/}.log" 2>&1 || true
      kubectl -n "$ns" logs "$p" --all-containers --previous >"$dir/$ns-${p#pod/}.previous.log" 2>/dev/null || true
    done
  done
  echo "$dir" >"$TS_CACHE_DIR/e2e-artifacts/latest"
}

cleanup() {
  local rc=$?
  if ((rc != 0)) && [[ -n ${KUBECONFIG:-} ]]; then collect; fi
  if [[ ${E2E_KEEP_CLUSTER:-0} == 1 ]]; then
    log "E2E_KEEP_CLUSTER=1: leaving the cluster up (e2e/cluster/down.sh removes it)"
  else
    log "tearing down the cluster"
    KEEP_LOGS=$((rc != 0)) e2e/cluster/down.sh >/dev/null 2>&1 || log "down.sh failed"
  fi
  log "done: exit $rc after $((SECONDS - start)) s"
  exit "$rc"
}
trap cleanup EXIT

log "cluster up"
e2e/cluster/up.sh
# shellcheck source=/dev/null
source "${TS_STATE:-/var/lib/tradestore-e2e}/env"

if [[ ${E2E_SKIP_BUILD:-0} == 1 ]]; then
  log "E2E_SKIP_BUILD=1: using the binaries already in $CARGO_TARGET_DIR/release; building the e2e tests"
else
  log "building binaries and the e2e tests"
  cargo build --release --locked -p tradestore-sidecar -p tradestore-operator
fi
suite_bin="$(e2e_suite_binary)" || { log "could not find the e2e suite binary"; exit 1; }

log "images (docker build from the Containerfiles)"
e2e/images.sh --load
# shellcheck source=/dev/null
source "$TS_CACHE_DIR/images/images.env"

# helm_install [EXTRA HELM ARGS...]: install/upgrade the chart with the fresh operator image.
helm_install() {
  helm upgrade --install "$RELEASE" charts/tradestore-operator --namespace "$NS" --create-namespace \
    --set image.repository="${OPERATOR_IMAGE%:*}" --set image.tag="${OPERATOR_IMAGE##*:}" \
    --set image.pullPolicy=Never --set operator.resyncSeconds=10 "$@" --wait --timeout 180s
  kubectl -n "$NS" rollout status "deployment/$RELEASE" --timeout=120s
}

log "helm install $RELEASE into $NS (rbac.scope=cluster)"
helm_install

log "running the suite"
export TRADESTORE_E2E_SIDECAR_IMAGE="$SIDECAR_IMAGE"
export TRADESTORE_E2E_OPERATOR_IMAGE="$OPERATOR_IMAGE"
export TRADESTORE_E2E_OPERATOR_NAMESPACE="$NS"
export TRADESTORE_E2E_OPERATOR_SA="$RELEASE"
export TRADESTORE_E2E_IMAGE_PULL_POLICY=Never
# t14 (a lost node) needs several nodes and node fault tools: e2e/kind.sh runs it.
"$suite_bin" --ignored --test-threads=1 --nocapture --skip t14_ "$@"
log "suite passed"

# Second pass: the chart with namespace-scoped RBAC (a Role in one watched namespace), and the
# tests that create, serve, delete and check RBAC in that namespace. Skipped when a test filter is
# given or with E2E_SKIP_SCOPED=1.
if (($# == 0)) && [[ ${E2E_SKIP_SCOPED:-0} != 1 ]]; then
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
  TRADESTORE_E2E_NAMESPACE="$scoped" TRADESTORE_E2E_RBAC_SCOPE=namespace \
    "$suite_bin" --ignored --test-threads=1 --nocapture t01_ t06_ t07_
  log "namespace-scoped pass passed"
fi
