#!/usr/bin/env bash
# Offline checks of charts/tradestore-operator (no cluster needed; a few seconds once the tools are
# cached in ~/.cache/tradestore/tools):
#   1. the chart's crds/ is the generated crds/ (symlink, same bytes);
#   2. helm lint --strict with the default and with non-default values;
#   3. helm template with several value sets, each validated by kubernetes-validate --strict
#      against the Kubernetes version of the e2e cluster (CRD-based kinds are checked by helm only);
#   4. values the schema or the templates must reject are rejected.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=e2e/tools.sh
source e2e/tools.sh
ensure_helm
ensure_kubernetes_validate

CHART=charts/tradestore-operator
K8S_VERSION="${CHART_CHECK_K8S_VERSION:-1.33.0}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fails=0
ok() { printf 'chart-check: ok   %s\n' "$*"; }
bad() { printf 'chart-check: FAIL %s\n' "$*" >&2; fails=$((fails + 1)); }

# 1. One source of truth for the CRDs.
for f in crds/*.yaml; do
  c="$CHART/crds/$(basename "$f")"
  if [[ -L $c ]] && cmp -s "$f" "$c"; then ok "$c -> $f"; else bad "$c is not a symlink to $f"; fi
done
for c in "$CHART"/crds/*.yaml; do
  [[ -e crds/$(basename "$c") ]] || bad "$c has no source in crds/"
done

# Value sets: name and helm flags.
declare -A sets=(
  [default]=""
  [namespaced]="--set rbac.scope=namespace --set-json watchNamespaces=[\"team-a\",\"team-b\"]"
  [namespaced-release]="--set rbac.scope=namespace"
  [single]="--set replicaCount=1 --set leaderElection.enabled=false --set podDisruptionBudget.enabled=false"
  [monitoring]="--set metrics.serviceMonitor.enabled=true --set image.tag=0.1.0-dev --set image.pullPolicy=Never --set operator.logFormat=text --set-json operator.extraEnv=[{\"name\":\"RUST_BACKTRACE\",\"value\":\"1\"}]"
  [no-rbac]="--set rbac.create=false --set serviceAccount.create=false --set serviceAccount.name=existing --set metrics.service.enabled=false"
)

for name in "${!sets[@]}"; do
  # shellcheck disable=SC2086
  if out="$(helm lint --strict "$CHART" --namespace tradestore-system ${sets[$name]} 2>&1)"; then
    ok "helm lint --strict ($name)"
  else
    bad "helm lint --strict ($name)"; echo "$out" >&2
  fi
  # shellcheck disable=SC2086
  if helm template ts "$CHART" --namespace tradestore-system --include-crds ${sets[$name]} >"$work/$name.yaml" 2>"$work/$name.err"; then
    ok "helm template ($name): $(grep -c '^kind:' "$work/$name.yaml") objects"
  else
    bad "helm template ($name)"; cat "$work/$name.err" >&2; continue
  fi
  # kubernetes-validate knows the built-in kinds only: split out the ServiceMonitor.
  python3 - "$work/$name.yaml" "$work/$name.builtin.yaml" <<'PY'
import sys
docs = open(sys.argv[1]).read().split("\n---")
keep = [d for d in docs if "kind: ServiceMonitor" not in d and d.strip()]
open(sys.argv[2], "w").write("\n---".join(keep) + "\n")
PY
  if out="$(kubernetes-validate --strict --quiet -k "$K8S_VERSION" "$work/$name.builtin.yaml" 2>&1)"; then
    ok "kubernetes-validate --strict -k $K8S_VERSION ($name)"
  else
    bad "kubernetes-validate --strict ($name)"; echo "$out" >&2
  fi
done

# Content checks on the default rendering.
# check DESCRIPTION COMMAND...: ok when the command succeeds.
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
d="$work/default.yaml" n="$work/namespaced.yaml"
check "2 replicas by default" grep -q 'replicas: 2' "$d"
check "securityContext: read-only root fs" grep -q 'readOnlyRootFilesystem: true' "$d"
check "securityContext: non-root" grep -q 'runAsNonRoot: true' "$d"
check "securityContext: seccomp RuntimeDefault" grep -q 'type: RuntimeDefault' "$d"
check "cluster RBAC by default" grep -q '^kind: ClusterRole$' "$d"
check "namespaced: a Role per watched namespace + leader election" test "$(grep -c '^kind: Role$' "$n")" = 3
check "namespaced: TRADESTORE_NAMESPACES=team-a,team-b" grep -A1 -q 'name: TRADESTORE_NAMESPACES' "$n"
check "namespaced: value team-a,team-b" grep -q 'value: "team-a,team-b"' "$n"
check "ServiceMonitor when enabled" grep -q 'kind: ServiceMonitor' "$work/monitoring.yaml"

# The NOTES name the sidecar image of the operator image's build (helm template skips NOTES).
notes="$(helm install ts "$CHART" --dry-run=client --namespace tradestore-system \
  --set image.repository=registry.local/tradestore/operator --set image.tag=0.1.0-g0123456789 2>&1)"
check "NOTES: the sidecar image of the same build" \
  grep -q 'image: registry.local/tradestore/sidecar:0.1.0-g0123456789$' <<<"$notes"

# 4. Values that must be rejected.
reject() {
  local what=$1; shift
  if helm template ts "$CHART" "$@" >/dev/null 2>&1; then bad "accepted $what"; else ok "rejects $what"; fi
}
reject "image.tag=latest" --set image.tag=latest
reject "rbac.scope=global" --set rbac.scope=global
reject "unknown value key" --set nosuchkey=1
reject "operator.logFormat=xml" --set operator.logFormat=xml
reject "resyncSeconds=1" --set operator.resyncSeconds=1
reject "serviceAccount.create=false without a name" --set serviceAccount.create=false

if ((fails)); then echo "chart-check: $fails failed" >&2; exit 1; fi
echo "chart-check: all passed"
