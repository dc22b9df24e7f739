#!/usr/bin/env bash
# Make, offline, the base images the Containerfiles name that a registry would otherwise give,
# under the very names the Containerfiles use, so they build unchanged here and on a machine with
# a registry (where `docker build` pulls the real ones instead):
#
#   docker.io/library/debian:bookworm-slim   mmdebstrap --variant=minbase bookworm (the host's
#                                            apt sources, Debian's packages only) + docker import
#   docker.io/library/rust:1-bookworm        --builder: that base + gcc/libc6-dev/make/pkg-config
#                                            + the host's Rust toolchain (the one the project
#                                            builds with) as /usr/local/cargo/bin/{cargo,rustc,...}
#
#   e2e/base-images.sh [--builder]      (needs the daemon of e2e/docker.sh; sources it itself)
#
# Each image is also tagged tradestore.local/base/<name>:<key>, the key being a hash of this
# script (and the Rust version for the builder): when that tag exists nothing is rebuilt, so the
# image ID, and with it the BuildKit cache of every stage built on it, stays the same across runs.
# CI builds the images from host-built binaries (see the Containerfiles' ARG BINARIES), so it
# needs only the Debian base; the builder is for trying the from-source path here.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source scripts/env.sh
# shellcheck source=e2e/docker.sh
source e2e/docker.sh

builder=0
case "${1:-}" in
  --builder) builder=1 ;;
  "") ;;
  *) echo "base-images.sh: unknown argument $1" >&2; exit 2 ;;
esac
log() { printf '[base-images %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

docker version >/dev/null 2>&1 || { docker_up; trap docker_down EXIT; }

have() { docker image inspect "$1" >/dev/null 2>&1; }

# Bump when the recipes below change in a way the key does not see.
BASE_REVISION=1
# The host's apt sources for Debian (this machine reaches Debian's packages, nothing else).
sources=""
for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
  [[ -s $f ]] && { sources=$f; break; }
done
[[ -n $sources ]] || { echo "base-images.sh: no Debian apt sources on this host" >&2; exit 1; }
# Like the registry's -slim: no man pages, docs or locales; apt lists removed. ($1 is the hook's
# argument, the root directory, hence the single quotes.)
# shellcheck disable=SC2016
MMDEBSTRAP_ARGS=(--quiet --variant=minbase --format=tar
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin')
# The cache key: the recipe, not this file (a comment edit must not rebuild the base, which would
# also invalidate every BuildKit cache entry built on it).
key="$( { echo "$BASE_REVISION"; printf '%s\n' "${MMDEBSTRAP_ARGS[@]}"; cat "$sources"; } | sha256sum | cut -c1-12)"

# ---- debian:bookworm-slim ----
DEBIAN_REF=docker.io/library/debian:bookworm-slim
debian_key_ref="tradestore.local/base/debian:bookworm-slim-$key"
if have "$debian_key_ref"; then
  log "$DEBIAN_REF: cached ($debian_key_ref)"
else
  command -v mmdebstrap >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
  }
  work="$(mktemp -d)"
  trap 'rm -rf "$work"; docker_down' EXIT
  log "mmdebstrap --variant=minbase bookworm (sources: $sources)"
  mmdebstrap "${MMDEBSTRAP_ARGS[@]}" \
    bookworm "$work/rootfs.tar" "$sources"
  docker import --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$work/rootfs.tar" "$debian_key_ref" >/dev/null
  rm -rf "$work"
  log "$debian_key_ref imported ($(docker image inspect -f '{{.Size}}' "$debian_key_ref" | numfmt --to=iec))"
fi
docker tag "$debian_key_ref" "$DEBIAN_REF"
# Bases of other keys are stale.
docker image ls --format '{{.Repository}}:{{.Tag}}' tradestore.local/base/debian | grep -vxF "$debian_key_ref" |
  xargs -r "$TS_DOCKER_CLI" rmi >/dev/null || true

# ---- rust:1-bookworm (on request) ----
if ((builder)); then
  RUST_REF=docker.io/library/rust:1-bookworm
  sysroot="$(rustc --print sysroot)"
  rust_version="$(rustc --version | cut -d' ' -f2)"
  # A machine behind a TLS-inspecting proxy trusts extra CAs (/usr/local/share/ca-certificates):
  # the builder's cargo and npm reach the registries through it, so it gets them too. (The
  # runtime images keep Debian's bundle.)
  extra_cas=(/usr/local/share/ca-certificates/*.crt)
  [[ -e ${extra_cas[0]} ]] || extra_cas=()
  cas_key="$(cat "${extra_cas[@]}" /dev/null | sha256sum | cut -c1-8)"
  rust_key_ref="tradestore.local/base/rust:$rust_version-bookworm-$key-$cas_key"
  if have "$rust_key_ref"; then
    log "$RUST_REF: cached ($rust_key_ref)"
  else
    ctx="$(mktemp -d)"
    trap 'rm -rf "$ctx"; docker_down' EXIT
    log "$RUST_REF from $DEBIAN_REF + the host's Rust $rust_version ($sysroot)"
    # Hard links (same file system) or copies; docs are left out.
    mkdir -p "$ctx/rust"
    cp -al "$sysroot/." "$ctx/rust/" 2>/dev/null || cp -a "$sysroot/." "$ctx/rust/"
    rm -rf "$ctx/rust/share/doc"
    mkdir -p "$ctx/ca"
    ((${#extra_cas[@]} == 0)) || cp "${extra_cas[@]}" "$ctx/ca/"
    docker build --network host -t "$rust_key_ref" -f - "$ctx" <<'EOF'
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev make pkg-config git \
 && rm -rf /var/lib/apt/lists/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
COPY rust/ /usr/local/rust/
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
RUN mkdir -p /usr/local/cargo/bin && for b in /usr/local/rust/bin/*; do ln -s "$b" /usr/local/cargo/bin/; done \
 && cargo --version && rustc --version
EOF
    rm -rf "$ctx"
  fi
  docker tag "$rust_key_ref" "$RUST_REF"
  docker image ls --format '{{.Repository}}:{{.Tag}}' tradestore.local/base/rust | grep -vxF "$rust_key_ref" |
    xargs -r "$TS_DOCKER_CLI" rmi >/dev/null || true
fi
log "done"
