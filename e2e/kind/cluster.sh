# shellcheck shell=bash
# kind cluster helpers for e2e/kind.sh (sourced; needs docker: the project's daemon of
# e2e/docker.sh offline, the user's otherwise).
#
#   kind_cluster_up [NODE_IMAGE]   create $KIND_CLUSTER: 1 control plane + $KIND_WORKERS workers on
#                                  the docker network $KIND_NETWORK (kind's default node image when
#                                  none is named), pod networking, route to Services
#   kind_cluster_down              delete it, remove the host route
#   kind_node_stop/start/pause/unpause/drain/uncordon NODE: fault tools for the suite
#
# Networking without kindnetd (not on the Go proxy), the same with kind's own node image: on every
# node the ptp + host-local + portmap CNI plugins (what kindnetd configures; Debian's plugins in the
# offline node image, kind's in kindest/node, which has no bridge plugin) with that node's podCIDR,
# and on every node a route to each other node's podCIDR via that node's IP. The host gets one
# route, the Service CIDR via the control-plane node (kube-proxy there DNATs, and masquerades what
# comes from outside the pod CIDR); nothing else on the host changes (no iptables rule, ip_forward
# as it is).

KIND_CLUSTER="${KIND_CLUSTER:-tradestore-e2e}"
KIND_WORKERS="${KIND_WORKERS:-3}"
KIND_NETWORK="${KIND_NETWORK:-tradestore-kind}"
KIND_SERVICE_CIDR="${KIND_SERVICE_CIDR:-10.96.0.0/16}"
KIND_POD_CIDR="${KIND_POD_CIDR:-10.244.0.0/16}"
_kind_route_added=0

_klog() { printf '[kind %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

kind_nodes() { kind get nodes --name "$KIND_CLUSTER" 2>/dev/null | sort; }
kind_node_ip() { docker inspect -f "{{(index .NetworkSettings.Networks \"$KIND_NETWORK\").IPAddress}}" "$1"; }

kind_cluster_up() {
  local image=${1:-} i workers="" image_args=()
  [[ -z $image ]] || image_args=(--image "$image")
  for ((i = 0; i < KIND_WORKERS; i++)); do workers+=$'\n'"- role: worker"; done
  export KIND_EXPERIMENTAL_DOCKER_NETWORK="$KIND_NETWORK"
  local config
  config="$(cat <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  serviceSubnet: "$KIND_SERVICE_CIDR"
  podSubnet: "$KIND_POD_CIDR"
  disableDefaultCNI: true
  ipFamily: ipv4
nodes:
- role: control-plane$workers
kubeadmConfigPatches:
- |
  kind: KubeletConfiguration
  oomScoreAdj: 0
- |
  kind: KubeProxyConfiguration
  oomScoreAdj: 0
EOF
)"
  # Seen once in three: kubeadm init's `systemctl daemon-reload` failed in the fresh node (systemd
  # still starting) and the kubelet never started. A second attempt on new nodes is made.
  local attempt
  for attempt in 1 2; do
    _klog "kind create cluster $KIND_CLUSTER (1 control plane + $KIND_WORKERS workers, ${image:-the default node image of kind}), attempt $attempt"
    if kind create cluster --name "$KIND_CLUSTER" "${image_args[@]}" --wait 0s --config - <<<"$config"; then
      break
    fi
    ((attempt < 2)) || return 1
    kind delete cluster --name "$KIND_CLUSTER" >/dev/null 2>&1 || true
  done
  local cp_ip
  cp_ip="$(kind_node_ip "$KIND_CLUSTER-control-plane")"
  # kind's kubeconfig names a port published on 127.0.0.1; the node's own address needs no
  # port forwarding (the API server's certificate includes it).
  kubectl config set-cluster "kind-$KIND_CLUSTER" --server="https://$cp_ip:6443" >/dev/null
  kind_pod_network || return 1
  ip route replace "$KIND_SERVICE_CIDR" via "$cp_ip" && _kind_route_added=1
  _klog "route $KIND_SERVICE_CIDR via $cp_ip (the control-plane node)"
}

# kind_pod_network: CNI config with each node's podCIDR, routes between the nodes' pod CIDRs.
kind_pod_network() {
  local n cidr other ocidr oip
  declare -A cidrs ips
  for n in $(kind_nodes); do
    for _ in $(seq 60); do
      cidr="$(kubectl get node "$n" -o jsonpath='{.spec.podCIDR}' 2>/dev/null)" && [[ -n $cidr ]] && break
      sleep 1
    done
    [[ -n $cidr ]] || { _klog "node $n has no podCIDR"; return 1; }
    cidrs[$n]=$cidr
    ips[$n]="$(kind_node_ip "$n")"
  done
  for n in "${!cidrs[@]}"; do
    docker exec -i "$n" sh -c 'mkdir -p /etc/cni/net.d && cat >/etc/cni/net.d/10-tradestore.conflist' <<EOF
{"cniVersion": "0.4.0", "name": "tradestore", "plugins": [
  {"type": "ptp", "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "${cidrs[$n]}"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
EOF
    # The node routes for other nodes' pods and for Services reached from the host (its own
    # network namespace; the host's ip_forward is not touched).
    docker exec "$n" sysctl -qw net.ipv4.ip_forward=1
    for other in "${!cidrs[@]}"; do
      [[ $other == "$n" ]] && continue
      ocidr=${cidrs[$other]} oip=${ips[$other]}
      docker exec "$n" ip route replace "$ocidr" via "$oip"
    done
    _klog "node $n: pod CIDR ${cidrs[$n]}, IP ${ips[$n]}"
  done
}

kind_cluster_down() {
  if ((_kind_route_added)); then ip route del "$KIND_SERVICE_CIDR" 2>/dev/null || true; _kind_route_added=0; fi
  kind delete cluster --name "$KIND_CLUSTER" >/dev/null 2>&1 || true
}

# Node faults, for the suite (e2e/tests: t14) and by hand.
kind_node_stop() { docker stop "$1" >/dev/null; }
kind_node_start() {
  docker start "$1" >/dev/null
  # The routes into the other nodes' pod CIDRs live in the node's network namespace: re-add them.
  kind_pod_network
}
kind_node_pause() { docker pause "$1" >/dev/null; }
kind_node_unpause() { docker unpause "$1" >/dev/null; }
# local-path-provisioner makes and removes a volume's directory with a helper pod that has no
# controller, which `kubectl drain` refuses to evict. One deleting an earlier test's volume can
# start at any moment, so no wait before the drain closes the race; they finish in seconds, so a drain refused for one is run again (it is idempotent: cordon, evictions).
kind_node_drain() {
  local out try
  for try in $(seq 10); do
    if out=$(kubectl drain "$1" --ignore-daemonsets --delete-emptydir-data --timeout=120s 2>&1); then
      echo "$out"
      return 0
    fi
    echo "$out" >&2
    grep -q 'local-path-storage/helper-pod' <<<"$out" || return 1
    echo "drain $1: refused for a local-path helper pod (try $try), again in 3 s" >&2
    sleep 3
  done
  return 1
}
kind_node_uncordon() { kubectl uncordon "$1"; }
