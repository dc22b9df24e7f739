#!/usr/bin/env bash
# Build the sidecar and operator images with a real engine (Docker's BuildKit) from
# sidecar/Containerfile and operator/Containerfile, using the release binaries already built on
# this host, into the project's dockerd (e2e/kind.sh loads them into the kind nodes from there).
#
#   e2e/images.sh [--build] [--out DIR]
#
#   --build   run `cargo build --release -p tradestore-sidecar -p tradestore-operator` first
#   --out     where the build context and images.env go (default $TS_CACHE_DIR/images)
#
# Steps: start the project's dockerd if none answers (e2e/docker.sh; stopped again at the end
# unless TS_KEEP_DOCKER=1), make the base images offline (e2e/base-images.sh, cached), lay the
# binaries (+ libduckdb) out in a small build context under prebuilt/<name>/, and run
#   docker build --build-arg BINARIES=prebuilt -f <name>/Containerfile <context>
# The Containerfiles are the only image definition: a user with a registry builds the same files
# without the build arg and gets the binaries compiled in the Rust builder stage.
#
# Checks: every library `ldd` resolves for a host binary is in that Containerfile's ARG LIBS (so
# the image's libraries cover it; libduckdb aside), and each image runs its binary's --version
# (loader, libraries and RUNPATH in place).
#
# Tags: tradestore/{sidecar,operator}:<workspace version>-g<git short hash>[-dirty], or $TS_IMAGE_TAG.
# The chosen references are written to $OUT/images.env (SIDECAR_IMAGE=..., OPERATOR_IMAGE=...).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source scripts/env.sh
# shellcheck source=e2e/docker.sh
source e2e/docker.sh

build=0 out="$TS_CACHE_DIR/images"
while (($#)); do
  case "$1" in
    --build) build=1; shift ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "images.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

start=$SECONDS
log() { printf '[images %(%H:%M:%S)T +%ss] %s\n' -1 "$((SECONDS - start))" "$*" >&2; }

if ((build)); then
  log "cargo build --release -p tradestore-sidecar -p tradestore-operator"
  cargo build --release --locked -p tradestore-sidecar -p tradestore-operator
fi

version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
if [[ -n ${TS_IMAGE_TAG:-} ]]; then
  tag="$TS_IMAGE_TAG"
else
  tag="$version-g$(git rev-parse --short=10 HEAD)"
  git diff --quiet HEAD -- sidecar operator migrations Cargo.toml Cargo.lock 2>/dev/null || tag="$tag-dirty"
fi
[[ $tag != latest ]] || { echo "images.sh: refusing the tag 'latest' (it implies imagePullPolicy Always)" >&2; exit 2; }

# check_libs BINARY CONTAINERFILE: every library ldd resolves (but libduckdb and the loader) is
# named in the Containerfile's ARG LIBS.
check_libs() {
  local bin=$1 file=$2 libs lib
  libs=" $(sed -n 's/^ARG LIBS="\(.*\)"$/\1/p' "$file") "
  [[ -n ${libs// /} ]] || { echo "images.sh: no ARG LIBS in $file" >&2; exit 1; }
  while read -r lib; do
    case "${lib##*/}" in libduckdb.so | ld-linux-x86-64.so.2) continue ;; esac
    [[ $libs == *" ${lib##*/} "* ]] ||
      { echo "images.sh: $bin needs ${lib##*/}, which ARG LIBS in $file lacks" >&2; exit 1; }
  done < <(ldd "$bin" | awk '/=> \// {print $3} /^\t\// {print $1}')
}

bin_dir="$CARGO_TARGET_DIR/release"
for b in sidecar operator; do
  [[ -x $bin_dir/$b ]] || { echo "images.sh: $bin_dir/$b missing; run with --build" >&2; exit 1; }
  check_libs "$bin_dir/$b" "$b/Containerfile"
done

if ! docker version >/dev/null 2>&1; then
  docker_up
  trap docker_down EXIT
fi
e2e/base-images.sh

# The build context: what the Containerfiles COPY in the prebuilt path, nothing else (no .git,
# no sources). A fixed place, so BuildKit's context transfer sends only what changed.
ctx="$out/context"
mkdir -p "$ctx/e2e/image" "$ctx/prebuilt/sidecar/usr/local/bin" "$ctx/prebuilt/sidecar/usr/local/lib" \
  "$ctx/prebuilt/operator/usr/local/bin"
cp e2e/image/passwd e2e/image/group e2e/image/nsswitch.conf "$ctx/e2e/image/"
cp "$bin_dir/sidecar" "$ctx/prebuilt/sidecar/usr/local/bin/sidecar"
cp "$DUCKDB_LIB_DIR/libduckdb.so" "$ctx/prebuilt/sidecar/usr/local/lib/libduckdb.so"
cp "$bin_dir/operator" "$ctx/prebuilt/operator/usr/local/bin/operator"

mkdir -p "$out"
declare -A ref=([sidecar]="tradestore/sidecar:$tag" [operator]="tradestore/operator:$tag")
for name in sidecar operator; do
  log "docker build -f $name/Containerfile --build-arg BINARIES=prebuilt -t ${ref[$name]}"
  # --network host: the libs stage runs apt-get; the project's dockerd has no bridge or NAT.
  docker build --network host --build-arg BINARIES=prebuilt -f "$name/Containerfile" \
    -t "${ref[$name]}" "$ctx"
  # The image's own loader, libraries and RUNPATH, with nothing from the host.
  v="$(docker run --rm --network none "${ref[$name]}" --version)" ||
    { echo "images.sh: ${ref[$name]} does not run its binary" >&2; exit 1; }
  log "${ref[$name]} runs: ${v%%$'\n'*}"
done

# The data root is kept across runs: drop the images of earlier tags (each commit makes a new
# one, ~370 MB) and cap BuildKit's cache, so it does not grow without bound.
for name in sidecar operator; do
  docker image ls --format '{{.Repository}}:{{.Tag}}' "tradestore/$name" | grep -vxF "${ref[$name]}" |
    xargs -r "$TS_DOCKER_CLI" rmi >/dev/null || true
done
docker image prune -f >/dev/null || true
docker builder prune -f --keep-storage "${TS_DOCKER_BUILD_CACHE:-8GB}" >/dev/null || true

printf 'SIDECAR_IMAGE=%s\nOPERATOR_IMAGE=%s\nIMAGE_TAG=%s\n' "${ref[sidecar]}" "${ref[operator]}" "$tag" >"$out/images.env"
log "SIDECAR_IMAGE=${ref[sidecar]} OPERATOR_IMAGE=${ref[operator]} ($out/images.env)"
