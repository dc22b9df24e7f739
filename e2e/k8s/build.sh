#!/usr/bin/env bash
# Build (or reuse from cache) the multi-call Kubernetes binary of the offline kind node image
# (e2e/kind/node-image.sh) from the Go module proxy. Prints the directory holding the binary and
# its symlinks.
#
#   e2e/k8s/build.sh            # build if not cached
#   FORCE=1 e2e/k8s/build.sh    # rebuild
#
# Cache layout (outside the clone, keyed by version and module content):
#   $TS_CACHE_DIR/k8s-<version>-<hash>/bin/{k8s,kube-apiserver,...,etcd}
#   $TS_CACHE_DIR/go/{mod,build}            Go module + build caches
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=e2e/tools.sh
source "$ROOT/e2e/tools.sh"
log() { printf '[k8s %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

ensure_go

src="$ROOT/e2e/k8s"
hash="$(cd "$src" && export LC_ALL=C && cat go.mod go.sum ./*.go | sha256sum | cut -c1-12)"
out="$TS_CACHE_DIR/k8s-$K8S_VERSION-$hash"
bin="$out/bin"

if [[ -x "$bin/k8s" && -z "${FORCE:-}" ]]; then
  log "using cached Kubernetes $K8S_VERSION binary: $bin/k8s"
  echo "$bin"
  exit 0
fi

mkdir -p "$bin"
export GOFLAGS="-modcacherw -mod=readonly -buildvcs=false" CGO_ENABLED=0

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

log "building Kubernetes $K8S_VERSION multi-call binary (cold: 10-25 min on 2 cores; log: $out/build.log)"
start=$(date +%s)
(
  cd "$src"
  go mod download
  # nice: this shares 2 cores with other builds; -p 2 keeps memory bounded.
  nice -n 10 go build -p "${GO_BUILD_P:-2}" -trimpath -tags selinux,notest \
    -ldflags "$ldflags" -o "$bin/k8s.tmp" .
) >"$out/build.log" 2>&1 || { tail -50 "$out/build.log" >&2; log "go build failed (see $out/build.log)"; exit 1; }
mv "$bin/k8s.tmp" "$bin/k8s"
for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl kubeadm etcd; do
  ln -sfn k8s "$bin/$c"
done
log "built $bin/k8s in $(( $(date +%s) - start ))s"
# Keep only this build (other versions / older module contents).
for d in "$TS_CACHE_DIR"/k8s-v*; do
  [[ $d == "$out" ]] || rm -rf "$d"
done
echo "$bin"
