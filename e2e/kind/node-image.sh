#!/usr/bin/env bash
# Build the kind node image offline (no registry): tradestore.local/kind-node:<k8s version>-<key>.
#
#   e2e/kind/node-image.sh        # prints the image reference; cached by key
#
# Parts, all from Debian's packages and the Go module proxy:
#   * the project's multi-call Kubernetes binary (e2e/k8s/build.sh, with kubeadm and a
#     CoreDNS stand-in): kubelet, kubeadm, kubectl on the node; and the control-plane images
#     kubeadm asks for (`kubeadm config images list`), each tagged with the exact name:
#     kube-apiserver, kube-controller-manager, kube-scheduler, etcd, coredns (FROM scratch + that
#     binary), kube-proxy (Debian + iptables + conntrack + it), pause (e2e/kind/node/pause.c);
#   * kind v0.33.0's node files (images/base/files of the sigs.k8s.io/kind module);
#   * Debian 12's systemd, containerd 1.6, runc 1.1, CNI plugins (e2e/kind/node/Containerfile).
# The control-plane images are saved into /kind/images and imported by containerd at boot.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source scripts/env.sh
# shellcheck source=e2e/docker.sh
source e2e/docker.sh
# shellcheck source=e2e/tools.sh
source e2e/tools.sh

KIND_VERSION="${KIND_VERSION:-v0.33.0}"
log() { printf '[kind-node %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

docker version >/dev/null 2>&1 || { docker_up; trap docker_down EXIT; }
e2e/base-images.sh >&2

ensure_go
export GOFLAGS="-modcacherw"
kind_dir="$(go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"

bin="$(e2e/k8s/build.sh)"
k8s="$bin/k8s"
key="$( { sha256sum <"$k8s"; echo "$KIND_VERSION"; cat e2e/kind/node/Containerfile; find e2e/kind/node/overlay -type f -print0 | sort -z | xargs -0 cat; cat e2e/kind/node/pause.c e2e/test-images/busybox.Containerfile "$0"; } | sha256sum | cut -c1-12)"
ref="tradestore.local/kind-node:$K8S_VERSION-$key"
if docker image inspect "$ref" >/dev/null 2>&1; then
  log "cached: $ref"
  echo "$ref"
  exit 0
fi

ctx="$TS_CACHE_DIR/kind/node-context"
rm -rf "$ctx"
mkdir -p "$ctx/bin" "$ctx/images" "$ctx/kind" "$ctx/cp/usr/local/bin"
cp -a "$kind_dir/images/base/files" "$ctx/kind/files"
chmod -R u+w "$ctx/kind"
cp -a e2e/kind/node/overlay "$ctx/overlay"
cp "$k8s" "$ctx/bin/k8s"
for c in kubelet kubeadm kubectl; do ln -s k8s "$ctx/bin/$c"; done

mapfile -t want < <("$k8s" kubeadm config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null)
((${#want[@]} >= 6)) || { echo "node-image.sh: kubeadm config images list gave: ${want[*]}" >&2; exit 1; }
log "control-plane images: ${want[*]}"

# One context for the control-plane images: the binary under every name, pause.
cp "$k8s" "$ctx/cp/usr/local/bin/k8s"
for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd; do
  ln -s k8s "$ctx/cp/usr/local/bin/$c"
done
ln -s usr/local/bin/k8s "$ctx/cp/coredns"
gcc -static -Os -s -o "$ctx/cp/pause" e2e/kind/node/pause.c
refs=()
for img in "${want[@]}"; do
  name="${img##*/}"; name="${name%%:*}"
  case "$name" in
    kube-proxy)
      docker build -q --network host -t "$img" -f - "$ctx/cp" >/dev/null <<'EOF'
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends iptables conntrack ipset kmod \
 && rm -rf /var/lib/apt/lists/*
COPY usr/local/bin/ /usr/local/bin/
EOF
      ;;
    pause)
      docker build -q -t "$img" -f - "$ctx/cp" >/dev/null <<'EOF'
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
EOF
      ;;
    coredns)
      docker build -q -t "$img" -f - "$ctx/cp" >/dev/null <<'EOF'
FROM scratch
COPY usr/local/bin/k8s /usr/local/bin/k8s
COPY coredns /coredns
ENTRYPOINT ["/coredns"]
EOF
      ;;
    *)
      docker build -q -t "$img" -f - "$ctx/cp" >/dev/null <<EOF
FROM scratch
COPY usr/local/bin/ /usr/local/bin/
ENV PATH=/usr/local/bin
ENTRYPOINT ["/usr/local/bin/$name"]
EOF
      ;;
  esac
  refs+=("$img")
done
# Storage: rancher's local-path-provisioner v0.0.30 (the Go proxy refuses later tags) with kind's
# own manifest (from its Go source), the helper pod on the suite's static busybox image (e2e/test-images).
LPP_VERSION=v0.0.30
lpp_ref="tradestore.local/local-path-provisioner:$LPP_VERSION"
helper_ref="tradestore.local/busybox:e2e"
GOBIN="$TS_CACHE_DIR/bin" CGO_ENABLED=0 go install "github.com/rancher/local-path-provisioner@$LPP_VERSION"
mkdir -p "$ctx/lpp/usr/local/bin"
cp "$TS_CACHE_DIR/bin/local-path-provisioner" "$ctx/lpp/usr/local/bin/"
docker build -q -t "$lpp_ref" -f - "$ctx/lpp" >/dev/null <<'EOF'
FROM scratch
COPY usr/local/bin/ /usr/local/bin/
ENV PATH=/usr/local/bin
ENTRYPOINT ["/usr/local/bin/local-path-provisioner"]
EOF
e2e/test-images/build.sh >/dev/null
refs+=("$lpp_ref" "$helper_ref")
mkdir -p "$ctx/overlay/kind/manifests"
python3 e2e/kind/storage-manifest.py "$kind_dir/pkg/build/nodeimage/const_storage.go" "$lpp_ref" "$helper_ref" \
  >"$ctx/overlay/kind/manifests/default-storage.yaml"

log "saving ${#refs[@]} images into the node image's /kind/images"
docker save -o "$ctx/images/control-plane.tar" "${refs[@]}"

log "docker build the node image $ref"
docker build --network host --build-arg "K8S_VERSION=$K8S_VERSION" -t "$ref" -f e2e/kind/node/Containerfile "$ctx" >&2
# Drop older node images.
docker image ls --format '{{.Repository}}:{{.Tag}}' tradestore.local/kind-node | grep -vxF "$ref" |
  xargs -r "$TS_DOCKER_CLI" rmi >/dev/null || true
echo "$ref"
