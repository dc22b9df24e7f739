#!/usr/bin/env bash
# Checks the CRD and the operator against a real, throwaway kube-apiserver (etcd + apiserver only:
# no scheduler, kubelet or controller-manager, so pods never run; their status is patched by hand
# to simulate readiness and restarts). Uses the multi-call Kubernetes binary of the kind node
# image (e2e/k8s/build.sh); skips when there is none. Not part of CI.
#
#   operator/scripts/apiserver-check.sh        # prints "apiserver-check: N passed, N failed"
#
# Environment: TS_K8S_BIN (directory with etcd, kube-apiserver, kubectl), TS_CHECK_PORT_BASE
# (default 26000: etcd +379/+380, apiserver +443, operator metrics +90/+91).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh

CACHE="${TS_CACHE_DIR:-$HOME/.cache/tradestore}"
BIN="${TS_K8S_BIN:-$(ls -d "$CACHE"/k8s-v*/bin 2>/dev/null | head -1)}"
if [[ -z "$BIN" || ! -x "$BIN/kube-apiserver" ]]; then
  echo "apiserver-check: skipped (no Kubernetes binary; build it with e2e/k8s/build.sh)"
  exit 0
fi
BASE="${TS_CHECK_PORT_BASE:-26000}"
ETCD_PORT=$((BASE + 379)) PEER_PORT=$((BASE + 380)) API_PORT=$((BASE + 443))
M1=$((BASE + 90)) M2=$((BASE + 91))

cargo build --release --locked -p tradestore-operator >&2
OP="$CARGO_TARGET_DIR/release/operator"

DIR="$(mktemp -d)"
PIDS=()
cleanup() {
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[$i]}" 2>/dev/null || true; sleep 0.5; done
  rm -rf "$DIR"
}
trap cleanup EXIT

pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
check() { local name="$1"; shift; if "$@" >/dev/null 2>&1; then ok "$name"; else bad "$name"; fi; }
# wait_for NAME SECONDS CMD...: retries CMD until it succeeds
wait_for() {
  local name="$1" secs="$2"; shift 2
  for ((t = 0; t < secs * 2; t++)); do if "$@" >/dev/null 2>&1; then ok "$name"; return; fi; sleep 0.5; done
  bad "$name"
}

openssl genrsa -out "$DIR/sa.key" 2048 2>/dev/null
echo 'checktoken,admin,admin,"system:masters"' >"$DIR/tokens.csv"
"$BIN/etcd" --data-dir "$DIR/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" --listen-peer-urls "http://127.0.0.1:$PEER_PORT" \
  >"$DIR/etcd.log" 2>&1 &
PIDS+=($!)
"$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" --secure-port "$API_PORT" \
  --bind-address 127.0.0.1 --cert-dir "$DIR/certs" --token-auth-file "$DIR/tokens.csv" \
  --authorization-mode AlwaysAllow --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$DIR/sa.key" --service-account-signing-key-file "$DIR/sa.key" \
  --service-cluster-ip-range 10.97.0.0/16 >"$DIR/apiserver.log" 2>&1 &
PIDS+=($!)
cat >"$DIR/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:$API_PORT", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: checktoken}}]
contexts: [{name: c, context: {cluster: c, user: u, namespace: default}}]
current-context: c
EOF
export KUBECONFIG="$DIR/kubeconfig"
k() { "$BIN/kubectl" "$@"; }
wait_for "apiserver up" 60 k get --raw /readyz

# --- the CRD -------------------------------------------------------------------------------
check "CRD accepted" k apply --server-side -f crds/tradestore.yaml
wait_for "CRD established" 20 k wait --for condition=Established crd/tradestores.tradestore.io --timeout=1s
k create namespace trading >/dev/null
k -n trading create serviceaccount default >/dev/null # no controller-manager here
# Schema errors stop CEL evaluation, so one object for each.
out="$(k apply -f - 2>&1 <<'EOF' || true
apiVersion: tradestore.io/v1alpha1
kind: TradeStore
metadata: {name: bad-schema, namespace: trading}
spec: {image: x, storage: {size: 1Gi, accessMode: Bogus}, duckdb: {threads: 0}}
EOF
)"
out+="$(k apply -f - 2>&1 <<'EOF' || true
apiVersion: tradestore.io/v1alpha1
kind: TradeStore
metadata: {name: bad-cel, namespace: trading}
spec:
  image: x
  storage: {size: 1Gi}
  duckdb: {maxWalBytes: 70000}
  probes: {periodSeconds: 20}
  backup: {schedule: "0 * * * *", target: {volume: {claimName: a}, s3: {bucket: abc, credentialsSecretName: c}}}
EOF
)"
for msg in "maxWalBytes must be >= checkpointThresholdBytes" "unresponsiveSeconds must be >= periodSeconds" \
  "exactly one of volume and s3 must be set" 'Unsupported value: "Bogus"' "greater than or equal to 1"; do
  if grep -qF "$msg" <<<"$out"; then ok "rejected: $msg"; else bad "rejected: $msg"; fi
done
check "valid store accepted" k apply -f operator/tests/fixtures/minimal.yaml
check "defaults filled" test "$(k -n trading get ts minimal -o jsonpath='{.spec.probes.periodSeconds}/{.spec.restartPolicy.maxRestarts}')" = "5/3"
# Where the commit log is is fixed when the store is created (CEL transition rule).
check "store with a commit-log volume accepted" k apply -f operator/tests/fixtures/commit-log-volume.yaml
out="$(k -n trading patch ts fast-log --type=merge -p '{"spec":{"commitLogStorage":null}}' 2>&1 || true)"
out+="$(k -n trading patch ts minimal --type=merge -p '{"spec":{"commitLogStorage":{"size":"1Gi"}}}' 2>&1 || true)"
check "commitLogStorage neither removed nor added" test "$(grep -o 'commitLogStorage can only be set when the store is created' <<<"$out" | wc -l)" = 2

# --- the operator --------------------------------------------------------------------------
POD_NAME=replica-a "$OP" run --metrics-addr "127.0.0.1:$M1" --probe-sidecar false --lease-namespace default \
  --log-format text >"$DIR/op1.log" 2>&1 &
OP1=$!
PIDS+=($OP1)
wait_for "replica-a leads" 30 bash -c "curl -sf 127.0.0.1:$M1/metrics | grep -q '^tradestore_operator_leader 1'"
POD_NAME=replica-b "$OP" run --metrics-addr "127.0.0.1:$M2" --probe-sidecar false --lease-namespace default \
  --log-format text >"$DIR/op2.log" 2>&1 &
OP2=$!
PIDS+=($OP2)
wait_for "replica-b ready as standby" 30 curl -sf "127.0.0.1:$M2/readyz"
check "replica-b does not lead" bash -c "curl -sf 127.0.0.1:$M2/metrics | grep -q '^tradestore_operator_leader 0'"

for obj in pod/minimal pvc/minimal-data service/minimal configmap/minimal-config secret/minimal-token; do
  wait_for "created $obj" 30 k -n trading get "$obj"
done
for obj in pvc/fast-log-data pvc/fast-log-commit-log pod/fast-log; do
  wait_for "created $obj" 30 k -n trading get "$obj"
done
check "the data claim records the commit-log claim" test "$(k -n trading get pvc fast-log-data -o jsonpath='{.metadata.annotations.tradestore\.io/commit-log-claim}')" = fast-log-commit-log
SIDECAR="$CARGO_TARGET_DIR/release/sidecar"
if [[ -x "$SIDECAR" ]]; then
  for store in minimal fast-log; do
    k -n trading get configmap "$store-config" -o jsonpath='{.data.sidecar\.yaml}' >"$DIR/sidecar.yaml"
    check "the sidecar accepts the rendered config ($store)" env LD_LIBRARY_PATH="${DUCKDB_LIB_DIR:-}" "$SIDECAR" --config "$DIR/sidecar.yaml" config
  done
fi
check "pod is owned by the store" test "$(k -n trading get pod minimal -o jsonpath='{.metadata.ownerReferences[0].kind}')" = TradeStore
check "token is 48 characters" test "$(k -n trading get secret minimal-token -o jsonpath='{.data.token}' | base64 -d | wc -c)" = 48

pod_status() { # RESTARTS
  k -n trading patch pod minimal --subresource=status --type=merge -p "{\"status\":{\"phase\":\"Running\",\"podIP\":\"10.0.0.9\",\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}],\"containerStatuses\":[{\"name\":\"sidecar\",\"restartCount\":$1,\"ready\":true,\"image\":\"x\",\"imageID\":\"\",\"state\":{\"running\":{}}}]}}" >/dev/null
}
pod_status 0
wait_for "phase Running when the pod is ready" 30 bash -c "[[ \$('$BIN/kubectl' -n trading get ts minimal -o jsonpath='{.status.phase}') == Running ]]"
pod_status 1
sleep 2
pod_status 3
wait_for "fenced after 3 restarts" 30 bash -c "[[ \$('$BIN/kubectl' -n trading get ts minimal -o jsonpath='{.status.phase}') == Fenced ]]"
wait_for "fenced store has no pod" 30 bash -c "! '$BIN/kubectl' -n trading get pod minimal"
check "Degraded=TooManyRestarts" test "$(k -n trading get ts minimal -o jsonpath='{.status.conditions[?(@.type=="Degraded")].reason}')" = TooManyRestarts
sleep 3
check "stays fenced" bash -c "! '$BIN/kubectl' -n trading get pod minimal"
k -n trading annotate ts minimal tradestore.io/clear-fence=check >/dev/null
wait_for "pod back after clear-fence" 30 k -n trading get pod minimal
check "fence gone from status" test -z "$(k -n trading get ts minimal -o jsonpath='{.status.fence}')"

old_hash="$(k -n trading get pod minimal -o jsonpath='{.metadata.annotations.tradestore\.io/pod-spec-hash}')"
k -n trading patch ts minimal --type=merge -p '{"spec":{"image":"registry.local/tradestore-sidecar:9.9.9"}}' >/dev/null
wait_for "rollout to the new image" 30 bash -c "[[ \$('$BIN/kubectl' -n trading get pod minimal -o jsonpath='{.spec.containers[0].image}') == registry.local/tradestore-sidecar:9.9.9 ]]"
check "new pod-spec hash" test "$(k -n trading get pod minimal -o jsonpath='{.metadata.annotations.tradestore\.io/pod-spec-hash}')" != "$old_hash"

k -n trading patch ts minimal --type=merge -p '{"spec":{"stopped":true}}' >/dev/null
wait_for "stopped: phase Stopped" 30 bash -c "[[ \$('$BIN/kubectl' -n trading get ts minimal -o jsonpath='{.status.phase}') == Stopped ]]"
check "stopped: no pod" bash -c "! '$BIN/kubectl' -n trading get pod minimal"
check "stopped: volume kept" k -n trading get pvc minimal-data

# Leader hand-over on SIGTERM.
kill -TERM "$OP1"
if wait "$OP1"; then ok "replica-a exits 0 on SIGTERM"; else bad "replica-a exits 0 on SIGTERM"; fi
wait_for "replica-b takes over" 40 bash -c "curl -sf 127.0.0.1:$M2/metrics | grep -q '^tradestore_operator_leader 1'"

k -n trading delete ts minimal --wait=false >/dev/null
wait_for "deletion finishes (finalizer removed)" 30 bash -c "! '$BIN/kubectl' -n trading get ts minimal"
check "retained volume has no owner" test -z "$(k -n trading get pvc minimal-data -o jsonpath='{.metadata.ownerReferences}')"
k apply -f operator/tests/fixtures/minimal.yaml >/dev/null
wait_for "a new store adopts the retained volume" 30 bash -c "[[ \$('$BIN/kubectl' -n trading get pvc minimal-data -o jsonpath='{.metadata.ownerReferences[0].name}') == minimal ]]"
check "adopted volume keeps its access mode" test "$(k -n trading get pvc minimal-data -o jsonpath='{.spec.accessModes[0]}')" = ReadWriteOncePod

if ((fail > 0)); then
  echo "--- operator logs (tail)"
  tail -n 20 "$DIR/op1.log" "$DIR/op2.log" | cut -c1-300
fi
echo "apiserver-check: $pass passed, $fail failed"
((fail == 0))
