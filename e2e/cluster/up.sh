#!/usr/bin/env bash
# Bring up a local single-node Kubernetes cluster for the TradeStore e2e tests.
#
#   sudo e2e/cluster/up.sh          # prints the kubeconfig path at the end
#   export KUBECONFIG=/var/lib/tradestore-e2e/kubeconfig
#
# Idempotent: if the cluster is already up and healthy it only re-prints the
# kubeconfig; if a previous run left a partial cluster it is torn down first.
# See README.md next to this file for the layout.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/cluster/lib.sh
source "$HERE/lib.sh"

[[ $EUID -eq 0 ]] || die "must run as root (creates a network namespace, runs containerd and kubelet)"
T0=$(date +%s)
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

# One up.sh / down.sh at a time.
mkdir -p "$TS_CACHE"
exec 9>"$TS_CACHE/cluster.lock"
flock -w 900 9 || die "another up.sh/down.sh holds $TS_CACHE/cluster.lock"
export TS_LOCK_HELD=1

# --------------------------------------------------------------------------
# 1. Packages (Debian).
# --------------------------------------------------------------------------
PKGS=(containerd runc containernetworking-plugins iptables conntrack
      busybox-static openssl iproute2 util-linux procps curl ca-certificates gcc libc6-dev tar)
install_packages() {
  local missing=() p
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}
install_packages

# --------------------------------------------------------------------------
# 2. Binaries and images (cached under $TS_CACHE).
# --------------------------------------------------------------------------
BIN="$("$HERE/build-k8s.sh" | tail -n1)"
[[ -x $BIN/k8s ]] || die "no Kubernetes binary in $BIN"
export PATH="$BIN:$PATH"

command -v redis-server >/dev/null || die "redis-server is needed for the cluster's redis image: apt-get install redis-server"
img_hash="$(cat "$HERE/images/build.sh" "$HERE/images/pause.c" /bin/busybox "$(readlink -f "$(command -v redis-server)")" | sha256sum | cut -c1-12)"
IMAGES="$TS_CACHE/images-$img_hash"
if [[ ! -f $IMAGES/busybox.tar || ! -f $IMAGES/pause.tar || ! -f $IMAGES/redis.tar ]]; then
  log "building images into $IMAGES"
  "$HERE/images/build.sh" "$IMAGES"
  for d in "$TS_CACHE"/images-*; do [[ $d == "$IMAGES" ]] || rm -rf "$d"; done
fi

# --------------------------------------------------------------------------
# 3. Already running?
# --------------------------------------------------------------------------
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler hostpath-provisioner containerd cluster-dns kubelet kube-proxy)

kctl() { kubectl --kubeconfig "$TS_KUBECONFIG" "$@"; }

print_result() {
  # Everything a test harness needs, in one sourceable file.
  cat >"$TS_STATE/env" <<EOF
export KUBECONFIG=$TS_KUBECONFIG
export PATH=$BIN:\$PATH
export TRADESTORE_E2E_API_SERVER=https://127.0.0.1:$TS_API_PORT
export TRADESTORE_E2E_STORAGE_CLASS=standard
export TRADESTORE_E2E_NODE=$TS_NODE_NAME
export TRADESTORE_E2E_CONTAINERD_SOCK=$TS_RUN/containerd/containerd.sock
EOF
  log "cluster ready in $(( $(date +%s) - T0 ))s (kubectl: $BIN/kubectl; env: source $TS_STATE/env)"
  echo "KUBECONFIG=$TS_KUBECONFIG"
  echo "export KUBECONFIG=$TS_KUBECONFIG"
}

if [[ -f $TS_KUBECONFIG ]]; then
  healthy=1
  for c in "${COMPONENTS[@]}"; do proc_alive "$c" || { healthy=0; break; }; done
  if ((healthy)) && kctl get --raw /readyz >/dev/null 2>&1 &&
     [[ "$(kctl get node "$TS_NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]; then
    log "cluster already up"
    print_result
    exit 0
  fi
fi
if [[ -e $TS_NETNS_PATH || -d $TS_RUN || -d $TS_STATE ]]; then
  log "found a previous (partial) cluster; tearing it down first"
  "$HERE/down.sh"
fi

# The API server port is part of the interface (kubeconfig): it must be free.
# The other host ports are internal, so take the next free one if needed.
port_free "$TS_API_PORT" ||
  die "TCP port $TS_API_PORT (API server) is already in use on the host (ss -ltnp 'sport = :$TS_API_PORT'); set TS_API_PORT"
ETCD_PORT="$(pick_port "$TS_ETCD_PORT")"
ETCD_PEER_PORT="$(pick_port "$TS_ETCD_PEER_PORT" "$ETCD_PORT")"
KCM_PORT="$(pick_port 10257)"
SCHED_PORT="$(pick_port 10259 "$KCM_PORT")"

# --------------------------------------------------------------------------
# 4. Network: namespace, veth pair to the host, blackhole default route.
# --------------------------------------------------------------------------
mkdir -p "$TS_RUN/pids" "$TS_STATE"/{logs,pki,kubeconfigs,etcd,containerd,kubelet,volumes,cni/net.d,cni/ipam,pod-logs}
chmod 0700 "$TS_STATE/pki" "$TS_STATE/etcd"
LOGS="$TS_STATE/logs"
PKI="$TS_STATE/pki"

# Remember what existed before, so down.sh only removes what we created.
{ mountpoint -q /run/netns && echo "run_netns_mounted=1" || echo "run_netns_mounted=0"
  [[ -d /var/lib/cni ]] && echo "var_lib_cni=1" || echo "var_lib_cni=0"
  [[ -d /var/log/containers ]] && echo "var_log_containers=1" || echo "var_log_containers=0"
  [[ -d /var/log/pods ]] && echo "var_log_pods=1" || echo "var_log_pods=0"
} > "$TS_RUN/baseline"
ls /run/netns 2>/dev/null | sed 's/^/netns /' >> "$TS_RUN/baseline" || true

log "creating network namespace $TS_NETNS (node IP $TS_NODE_IP, host side $TS_HOST_IP)"
ip netns add "$TS_NETNS"
ip link add "$TS_VETH_HOST" type veth peer name "$TS_VETH_NS"
ip link set "$TS_VETH_NS" netns "$TS_NETNS"
ip addr add "$TS_HOST_IP/30" dev "$TS_VETH_HOST"
ip link set "$TS_VETH_HOST" up
in_ns ip link set lo up
in_ns ip addr add "$TS_NODE_IP/30" dev "$TS_VETH_NS"
in_ns ip link set "$TS_VETH_NS" up
# Default route: a blackhole. Anything a pod (or the node) sends to an address
# outside the cluster is rejected right here, so no traffic can leave the
# machine. (This VM kernel has no "dummy" link type; a blackhole route does
# the same job, and the kubelet is given --node-ip explicitly.)
in_ns ip route add blackhole default
# Host -> pods and Services go through the veth into the namespace.
ip route add "$TS_POD_CIDR" via "$TS_NODE_IP" dev "$TS_VETH_HOST"
ip route add "$TS_SERVICE_CIDR" via "$TS_NODE_IP" dev "$TS_VETH_HOST"
in_ns sysctl -qw net.ipv4.ip_forward=1
in_ns sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || log "warning: bridge-nf-call-iptables not settable"

# --------------------------------------------------------------------------
# 5. PKI (openssl) and kubeconfigs.
# --------------------------------------------------------------------------
log "generating certificates"
gen_key() { openssl genrsa -out "$PKI/$1.key" 2048 2>/dev/null; chmod 600 "$PKI/$1.key"; }
# sign NAME SUBJECT EXTENSIONS
sign() {
  local name=$1 subj=$2 ext=$3
  gen_key "$name"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -out "$PKI/$name.crt" \
    -extfile <(printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n%s\n' "$ext") 2>/dev/null
  rm -f "$PKI/$name.csr"
}
gen_key ca
openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=tradestore-e2e-ca" -days 3650 -sha256 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
  -out "$PKI/ca.crt" 2>/dev/null
svc_ip="$(svc_first_ip)"
sign apiserver "/CN=kube-apiserver" \
  "extendedKeyUsage=serverAuth
subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$TS_HOST_IP,IP:$svc_ip"
client="extendedKeyUsage=clientAuth"
sign admin "/O=system:masters/CN=tradestore-e2e-admin" "$client"
sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
sign kubelet "/O=system:nodes/CN=system:node:$TS_NODE_NAME" "$client"
sign kube-proxy "/CN=system:kube-proxy" "$client"
sign controller-manager "/CN=system:kube-controller-manager" "$client"
sign scheduler "/CN=system:kube-scheduler" "$client"
gen_key sa
openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null

# write_kubeconfig FILE SERVER CERTNAME
write_kubeconfig() {
  local file=$1 server=$2 name=$3
  umask 077
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tradestore-e2e
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$name.crt")
    client-key-data: $(base64 -w0 "$PKI/$name.key")
contexts:
- name: tradestore-e2e
  context:
    cluster: tradestore-e2e
    user: $name
    namespace: default
current-context: tradestore-e2e
EOF
  umask 022
}
API_LOCAL="https://127.0.0.1:$TS_API_PORT"     # from the host
API_NODE="https://$TS_HOST_IP:$TS_API_PORT"    # from inside the namespace
KC="$TS_STATE/kubeconfigs"
write_kubeconfig "$KC/controller-manager.kubeconfig" "$API_LOCAL" controller-manager
write_kubeconfig "$KC/scheduler.kubeconfig" "$API_LOCAL" scheduler
write_kubeconfig "$KC/kubelet.kubeconfig" "$API_NODE" kubelet
write_kubeconfig "$KC/kube-proxy.kubeconfig" "$API_NODE" kube-proxy
write_kubeconfig "$KC/admin.kubeconfig" "$API_LOCAL" admin
write_kubeconfig "$KC/admin-node.kubeconfig" "$API_NODE" admin

# --------------------------------------------------------------------------
# 6. Control plane (host network namespace).
# --------------------------------------------------------------------------
log "starting etcd"
start_proc etcd host etcd --name tradestore-e2e --data-dir "$TS_STATE/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "tradestore-e2e=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync --log-level warn
wait_for 60 "etcd" curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

log "starting kube-apiserver"
start_proc kube-apiserver host kube-apiserver \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=0.0.0.0 --secure-port="$TS_API_PORT" --advertise-address="$TS_HOST_IP" \
  --anonymous-auth=false \
  --service-cluster-ip-range="$TS_SERVICE_CIDR" \
  --client-ca-file="$PKI/ca.crt" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types=InternalIP \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" \
  --service-account-signing-key-file="$PKI/sa.key" \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true --profiling=false --v=1
wait_for 120 "kube-apiserver" curl -fsS --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
  "$API_LOCAL/readyz"
cp "$KC/admin.kubeconfig" "$TS_KUBECONFIG"; chmod 600 "$TS_KUBECONFIG"

log "starting kube-controller-manager, kube-scheduler, hostpath-provisioner"
start_proc kube-controller-manager host kube-controller-manager \
  --kubeconfig="$KC/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$KC/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$KC/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --leader-elect=false \
  --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" \
  --use-service-account-credentials=true \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --service-cluster-ip-range="$TS_SERVICE_CIDR" --profiling=false --v=1
start_proc kube-scheduler host kube-scheduler \
  --kubeconfig="$KC/scheduler.kubeconfig" \
  --authentication-kubeconfig="$KC/scheduler.kubeconfig" \
  --authorization-kubeconfig="$KC/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --leader-elect=false --profiling=false --v=1
start_proc hostpath-provisioner host k8s hostpath-provisioner \
  --kubeconfig="$KC/admin.kubeconfig" --name=tradestore.local/hostpath --root="$TS_STATE/volumes"

# --------------------------------------------------------------------------
# 7. Node: containerd, kubelet, kube-proxy (inside the namespace).
# --------------------------------------------------------------------------
CTRD_SOCK="$TS_RUN/containerd/containerd.sock"
cat >"$TS_STATE/containerd/config.toml" <<EOF
version = 2
root = "$TS_STATE/containerd/root"
state = "$TS_RUN/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD_SOCK.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$TS_STATE/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "tradestore.local/pause:e2e"
  # The VM lacks CAP_SYS_RESOURCE: negative oom_score_adj would fail runc.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # cgroup v1 and PID 1 is not systemd.
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$TS_STATE/cni/net.d"
EOF
cat >"$TS_STATE/cni/net.d/10-tradestore-e2e.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "tradestore-e2e",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "ts-cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$TS_STATE/cni/ipam",
        "ranges": [[{"subnet": "$TS_POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

log "starting containerd (in $TS_NETNS)"
mkdir -p "$TS_RUN/containerd"
start_proc containerd ns containerd --config "$TS_STATE/containerd/config.toml"
wait_for 60 "containerd" ctr --address "$CTRD_SOCK" version

log "importing images"
for t in "$IMAGES/pause.tar" "$IMAGES/busybox.tar" "$IMAGES/redis.tar"; do
  "$HERE/load-image.sh" "$t" >/dev/null
done

log "starting cluster-dns on $TS_NODE_IP:53 (in $TS_NETNS)"
start_proc cluster-dns ns k8s cluster-dns --kubeconfig="$KC/admin-node.kubeconfig" \
  --listen="$TS_NODE_IP:53" --domain=cluster.local
wait_for 30 "cluster-dns" grep -q 'serving' "$LOGS/cluster-dns.log"

cat >"$TS_STATE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $TS_NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://$CTRD_SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [$TS_NODE_IP]
# No host resolv.conf for pods: only cluster names resolve (see cluster-dns).
resolvConf: ""
podLogsDir: $TS_STATE/pod-logs
rotateCertificates: false
serverTLSBootstrap: false
# Never garbage-collect the pre-imported images (they cannot be pulled).
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
maxPods: 110
EOF
cat >"$TS_STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $KC/kube-proxy.kubeconfig
mode: iptables
hostnameOverride: $TS_NODE_NAME
clusterCIDR: $TS_POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# NodePorts only on the node IP ($TS_NODE_IP, reachable from the host).
nodePortAddresses: ["primary"]
# Pod -> Service -> pod on the same bridge needs SNAT for the reply path.
iptables:
  masqueradeAll: true
# Leave the (VM-wide) conntrack sysctls alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF

log "starting kubelet and kube-proxy (in $TS_NETNS)"
start_proc kubelet ns kubelet --config="$TS_STATE/kubelet/config.yaml" \
  --kubeconfig="$KC/kubelet.kubeconfig" --root-dir="$TS_STATE/kubelet" \
  --hostname-override="$TS_NODE_NAME" --node-ip="$TS_NODE_IP" --v=1
start_proc kube-proxy ns kube-proxy --config="$TS_STATE/kube-proxy.yaml" --v=1

# --------------------------------------------------------------------------
# 8. Cluster objects and readiness.
# --------------------------------------------------------------------------
wait_for 120 "node $TS_NODE_NAME registered" kctl get node "$TS_NODE_NAME"
kctl apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: tradestore.local/hostpath
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF
kctl wait --for=condition=Ready "node/$TS_NODE_NAME" --timeout=180s >/dev/null ||
  die "node did not become Ready; see $LOGS/kubelet.log"
wait_for 120 "default service account" kctl -n default get serviceaccount default
for c in "${COMPONENTS[@]}"; do proc_alive "$c" || die "$c exited; see $LOGS/$c.log"; done
print_result
