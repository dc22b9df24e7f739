#!/usr/bin/env bash
# Import an image tarball (docker-archive, e.g. `docker save`/`podman save`/
# `skopeo copy ... docker-archive:`, or an OCI archive) into the e2e
# cluster's containerd (namespace k8s.io), so pods can use it with
# imagePullPolicy: Never or IfNotPresent.
#
#   e2e/cluster/load-image.sh IMAGE.tar [NAME:TAG]
#
# With NAME:TAG the imported image is (also) tagged NAME:TAG; names without
# a registry host get containerd's "docker.io/library/" normalisation, the
# same normalisation the kubelet applies to pod image fields.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/cluster/lib.sh
source "$HERE/lib.sh"

tarball="${1:?usage: load-image.sh IMAGE.tar [NAME:TAG]}"
want="${2:-}"
[[ -f $tarball ]] || die "no such file: $tarball"
sock="$TS_RUN/containerd/containerd.sock"
[[ -S $sock ]] || die "containerd socket $sock not found; run e2e/cluster/up.sh first"
ctr_() { ctr --address "$sock" -n k8s.io "$@"; }

# normalize NAME: docker-style reference normalisation.
normalize() {
  local r=$1 first="${1%%/*}"
  if [[ $r != */* ]]; then
    r="docker.io/library/$r"
  elif [[ $first != *.* && $first != *:* && $first != localhost ]]; then
    r="docker.io/$r"
  fi
  [[ ${r##*/} == *:* || $r == *@* ]] || r="$r:latest"
  echo "$r"
}

out="$(ctr_ images import --digests --skip-digest-for-named "$tarball" 2>&1)" ||
  die "import failed: $out"
# Lines look like: "unpacking NAME (sha256:...)...done"
mapfile -t names < <(sed -n 's/^unpacking \(.*\) (sha256:[0-9a-f]*).*/\1/p' <<<"$out")
((${#names[@]})) || die "nothing imported from $tarball: $out"
if [[ -n $want ]]; then
  ref="$(normalize "$want")"
  src="${names[0]}"
  [[ $src == "$ref" ]] || ctr_ images tag --force "$src" "$ref" >/dev/null
  names=("$ref")
fi
for n in "${names[@]}"; do
  # The CRI plugin only lists images whose layers are unpacked for its
  # snapshotter; import did that. Print what pods should reference.
  echo "$n"
done
