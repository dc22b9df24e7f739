#!/usr/bin/env bash
# Build the sidecar and operator images offline from the already built release binaries
# (no Docker, no registry) and, with --load, import them into the local e2e cluster.
#
#   e2e/images.sh [--build] [--load] [--out DIR]
#
#   --build   run `cargo build --release -p tradestore-sidecar -p tradestore-operator` first
#   --load    import both images into the running e2e cluster (e2e/cluster/load-image.sh)
#   --out     where the docker-archive tarballs go (default $TS_CACHE_DIR/images)
#
# The file tree is the one sidecar/Containerfile and operator/Containerfile produce (see
# docs/e2e.md, "Images"): binary in /usr/local/bin, libduckdb in /usr/local/lib (the sidecar's
# RUNPATH is $ORIGIN/../lib), glibc/libstdc++/libgcc_s at their Debian 12 paths, the CA bundle,
# e2e/image/{passwd,group,nsswitch.conf}, user 65532:65532. The libraries come from this
# Debian 12 host instead of debian:bookworm-slim. The script fails if `ldd` finds a library
# that is not in the lists below (keep them equal to the Containerfiles' ARG LIBS).
#
# Tags: tradestore/{sidecar,operator}:<workspace version>-<git short hash>[-dirty], or $TS_IMAGE_TAG.
# The chosen references are written to $OUT/images.env (SIDECAR_IMAGE=..., OPERATOR_IMAGE=...).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source scripts/env.sh

build=0 load=0 out="$TS_CACHE_DIR/images"
while (($#)); do
  case "$1" in
    --build) build=1; shift ;;
    --load) load=1; shift ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "images.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

log() { printf '[images %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

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

LIBDIR=/lib/x86_64-linux-gnu
# Keep equal to ARG LIBS (+ the loader) in the libs stage of sidecar/Containerfile and operator/Containerfile.
SIDECAR_LIBS=(/lib64/ld-linux-x86-64.so.2 "$LIBDIR/libc.so.6" "$LIBDIR/libm.so.6" "$LIBDIR/libdl.so.2"
  "$LIBDIR/libpthread.so.0" "$LIBDIR/libgcc_s.so.1" "$LIBDIR/libstdc++.so.6")
OPERATOR_LIBS=(/lib64/ld-linux-x86-64.so.2 "$LIBDIR/libc.so.6" "$LIBDIR/libm.so.6" "$LIBDIR/libgcc_s.so.1")

# The Containerfiles' ARG LIBS must name the same libraries (same definition, two builds).
containerfile_libs() { sed -n 's/^ARG LIBS="\(.*\)"$/\1/p' "$1"; }
same_libs() { # CONTAINERFILE LIB...
  local file=$1; shift
  local want have
  want="$(printf '%s\n' "${@##*/}" | grep -v '^ld-linux' | sort | tr '\n' ' ')"
  have="$(containerfile_libs "$file" | tr ' ' '\n' | sort | tr '\n' ' ')"
  [[ $want == "$have" ]] || { echo "images.sh: $file ARG LIBS ($have) != images.sh list ($want)" >&2; exit 1; }
}
same_libs sidecar/Containerfile "${SIDECAR_LIBS[@]}"
same_libs operator/Containerfile "${OPERATOR_LIBS[@]}"

# check_libs BINARY LIB...: every library ldd resolves (except libduckdb) is in the list.
check_libs() {
  local bin=$1; shift
  local want=" $* " lib
  while read -r lib; do
    [[ $lib == */libduckdb.so ]] && continue
    lib="$(realpath -s "$lib")"
    case "$lib" in /usr/lib/x86_64-linux-gnu/*) lib="$LIBDIR/${lib##*/}" ;; esac
    [[ $want == *" $lib "* ]] || { echo "images.sh: $bin needs $lib, which the image lists lack" >&2; exit 1; }
  done < <(ldd "$bin" | awk '/=> \// {print $3} /^\t\// {print $1}')
}

# stage NAME BINARY LIBS...: the rootfs tree of one image in $work/NAME.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
stage() {
  local name=$1 bin=$2; shift 2
  local r="$work/$name"
  mkdir -p "$r/usr/local/bin" "$r/etc/ssl/certs" "$r/lib64" "$r$LIBDIR"
  cp "$bin" "$r/usr/local/bin/$name"
  local lib
  for lib in "$@"; do cp -L "$lib" "$r$lib"; done
  cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/"
  cp e2e/image/passwd e2e/image/group e2e/image/nsswitch.conf "$r/etc/"
  echo "$r"
}

bin_dir="$CARGO_TARGET_DIR/release"
for b in sidecar operator; do
  [[ -x $bin_dir/$b ]] || { echo "images.sh: $bin_dir/$b missing; run with --build" >&2; exit 1; }
done
check_libs "$bin_dir/sidecar" "${SIDECAR_LIBS[@]}"
check_libs "$bin_dir/operator" "${OPERATOR_LIBS[@]}"

mkdir -p "$out"
sidecar_ref="tradestore/sidecar:$tag"
operator_ref="tradestore/operator:$tag"

r="$(stage sidecar "$bin_dir/sidecar" "${SIDECAR_LIBS[@]}")"
mkdir -p "$r/usr/local/lib"
cp "$DUCKDB_LIB_DIR/libduckdb.so" "$r/usr/local/lib/libduckdb.so"
e2e/cluster/make-image.sh -t "$sidecar_ref" -o "$out/sidecar.tar" --rootfs "$r" \
  --user 65532:65532 --entrypoint /usr/local/bin/sidecar

r="$(stage operator "$bin_dir/operator" "${OPERATOR_LIBS[@]}")"
e2e/cluster/make-image.sh -t "$operator_ref" -o "$out/operator.tar" --rootfs "$r" \
  --user 65532:65532 --entrypoint /usr/local/bin/operator --cmd run

printf 'SIDECAR_IMAGE=%s\nOPERATOR_IMAGE=%s\nIMAGE_TAG=%s\n' "$sidecar_ref" "$operator_ref" "$tag" >"$out/images.env"
if ((load)); then
  e2e/cluster/load-image.sh "$out/sidecar.tar" "$sidecar_ref"
  e2e/cluster/load-image.sh "$out/operator.tar" "$operator_ref"
fi
log "SIDECAR_IMAGE=$sidecar_ref OPERATOR_IMAGE=$operator_ref ($out/images.env)"
