#!/usr/bin/env bash
# Smoke test for the e2e cluster (run after up.sh): a PVC + a locked-down
# non-root pod from the offline busybox image + a ClusterIP Service + a
# headless Service.
# Checks: pod Running/Ready (HTTP readiness, exec liveness), PVC Bound and
# writable by a non-root UID, logs, exec, Service reachable from the host and
# from a pod (kube-proxy), cluster DNS names, and clean deletion (PV
# reclaimed).
#
#   e2e/cluster/smoke.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/cluster/lib.sh
source "$HERE/lib.sh"
export KUBECONFIG="${KUBECONFIG:-$TS_KUBECONFIG}"
K8SBIN="$(dirname "$(ls -d "$TS_CACHE"/k8s-"$K8S_VERSION"-*/bin/kubectl | head -n1)")"
export PATH="$K8SBIN:$PATH"
NS=tradestore-smoke
T0=$(date +%s)
pass=0 fail=0
ok() { pass=$((pass + 1)); log "ok: $*"; }
bad() { fail=$((fail + 1)); log "FAIL: $*"; }

kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null
# The namespace's default service account appears asynchronously.
wait_for 60 "service account" kubectl -n "$NS" get serviceaccount default

kubectl -n "$NS" apply -f - >/dev/null <<'EOF_YAML'
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: smoke-data
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 16Mi
---
apiVersion: v1
kind: Pod
metadata:
  name: smoke
  labels: {app: smoke}
spec:
  hostname: smoke
  subdomain: smoke-hl
  terminationGracePeriodSeconds: 2
  securityContext:
    runAsNonRoot: true
    runAsUser: 65534
    runAsGroup: 65534
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: web
    image: tradestore.local/busybox:e2e
    imagePullPolicy: Never
    command: ["/bin/sh", "-c"]
    args:
    - |
      echo "hello from $(hostname)" > /data/hello.txt
      echo smoke-started
      exec httpd -f -p 8080 -h /data
    ports:
    - containerPort: 8080
    readinessProbe:
      httpGet: {path: /hello.txt, port: 8080}
      periodSeconds: 1
    livenessProbe:
      exec: {command: ["cat", "/data/hello.txt"]}
      periodSeconds: 5
    resources:
      requests: {cpu: 10m, memory: 16Mi}
      limits: {cpu: 200m, memory: 64Mi}
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL]}
    volumeMounts:
    - {name: data, mountPath: /data}
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: smoke-data}
---
apiVersion: v1
kind: Service
metadata:
  name: smoke
spec:
  selector: {app: smoke}
  ports:
  - {port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: smoke-hl
spec:
  clusterIP: None
  selector: {app: smoke}
  ports:
  - {name: http, port: 8080}
EOF_YAML

if kubectl -n "$NS" wait --for=jsonpath='{.status.phase}'=Bound pvc/smoke-data --timeout=60s >/dev/null; then
  ok "PVC bound to $(kubectl -n "$NS" get pvc smoke-data -o jsonpath='{.spec.volumeName}') (storage class $(kubectl -n "$NS" get pvc smoke-data -o jsonpath='{.spec.storageClassName}'))"
else bad "PVC not bound"; fi

if kubectl -n "$NS" wait --for=condition=Ready pod/smoke --timeout=120s >/dev/null; then
  ok "pod Running and Ready"
else
  bad "pod not Ready"; kubectl -n "$NS" describe pod smoke | tail -30 >&2
fi

if kubectl -n "$NS" logs smoke | grep -q smoke-started; then ok "logs"; else bad "logs"; fi
if [[ "$(kubectl -n "$NS" exec smoke -- cat /data/hello.txt)" == "hello from smoke" ]]; then
  ok "exec + PVC written by uid 65534"
else bad "exec / PVC content"; fi
if [[ "$(kubectl -n "$NS" exec smoke -- id -u)" == 65534 ]]; then ok "runs as non-root"; else bad "uid"; fi
if kubectl -n "$NS" exec smoke -- touch /rootfs-write 2>/dev/null; then bad "rootfs writable"; else ok "read-only rootfs"; fi

pod_ip="$(kubectl -n "$NS" get pod smoke -o jsonpath='{.status.podIP}')"
svc_ip="$(kubectl -n "$NS" get svc smoke -o jsonpath='{.spec.clusterIP}')"
if [[ "$(curl -fsS --max-time 5 "http://$pod_ip:8080/hello.txt")" == "hello from smoke" ]]; then
  ok "pod IP $pod_ip reachable from the host"
else bad "pod IP $pod_ip from host"; fi
# kube-proxy programs the Service asynchronously.
if retry 30 curl -fsS --max-time 2 "http://$svc_ip/hello.txt"; then
  ok "ClusterIP Service $svc_ip:80 reachable from the host"
else bad "ClusterIP from host"; fi
# (busybox-static's wget segfaults on this kernel; nc is fine.)
http_get() { kubectl -n "$NS" exec smoke -- sh -c "printf 'GET $3 HTTP/1.0\r\n\r\n' | nc -w 5 $1 $2" 2>&1; }
if http_get "$svc_ip" 80 /hello.txt | grep -q 'hello from smoke'; then
  ok "ClusterIP Service reachable from a pod (hairpin)"
else bad "ClusterIP from pod"; fi
# Plain HTTP to the TLS port: the API server answers "400 Bad Request",
# which proves the connection through the Service IP worked.
if http_get "$(svc_first_ip)" 443 / | grep -q '400 Bad Request'; then
  ok "kubernetes Service ($(svc_first_ip):443) reachable from a pod"
else bad "kubernetes Service from pod"; fi
# cluster-dns (busybox nslookup reads the pod's resolv.conf).
dns() { kubectl -n "$NS" exec smoke -- nslookup "$1" 2>&1 | sed -n 's/^Address: //p' | head -n1; }
if [[ "$(dns "smoke.$NS.svc.cluster.local")" == "$svc_ip" ]]; then
  ok "DNS: Service name resolves to its ClusterIP"
else bad "DNS: Service name"; fi
if retry 20 bash -c "[[ \"\$(kubectl -n $NS exec smoke -- nslookup smoke.smoke-hl.$NS.svc.cluster.local 2>&1 | sed -n 's/^Address: //p' | head -n1)\" == $pod_ip ]]"; then
  ok "DNS: headless Service pod hostname resolves to the pod IP"
else bad "DNS: headless pod hostname"; fi

if kubectl -n "$NS" exec smoke -- cat /var/run/secrets/kubernetes.io/serviceaccount/token >/dev/null; then
  ok "service account token mounted"
else bad "service account token"; fi

pv="$(kubectl -n "$NS" get pvc smoke-data -o jsonpath='{.spec.volumeName}')"
kubectl delete namespace "$NS" --wait=true --timeout=120s >/dev/null || bad "namespace deletion"
if [[ -n $pv ]] && retry 60 bash -c "! kubectl get pv $pv"; then
  ok "PV $pv reclaimed"
else bad "PV not reclaimed"; fi

log "smoke test took $(( $(date +%s) - T0 ))s"
echo "smoke: $pass passed, $fail failed"
((fail == 0))
