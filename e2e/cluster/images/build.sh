#!/usr/bin/env bash
# Build the e2e cluster's images offline as docker-archive tarballs (no
# registry, no image tooling): a static "pause" sandbox image and a static
# busybox test image, each a single-layer scratch rootfs.
#
#   e2e/cluster/images/build.sh OUTDIR
# writes OUTDIR/pause.tar   (tradestore.local/pause:e2e)
#        OUTDIR/busybox.tar (tradestore.local/busybox:e2e)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:?usage: build.sh OUTDIR}"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# make_archive NAME:TAG ROOTFS_DIR CONFIG_JSON_FRAGMENT OUT.tar
make_archive() {
  local ref="$1" rootfs="$2" cfg="$3" dest="$4"
  local d="$work/archive-$(basename "$dest" .tar)"
  mkdir -p "$d"
  # Deterministic layer: sorted, numeric root ownership, fixed mtime.
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='@0' \
      -C "$rootfs" -cf "$d/layer.tar" .
  local diff; diff="$(sha256sum "$d/layer.tar" | cut -d' ' -f1)"
  mkdir -p "$d/$diff"; mv "$d/layer.tar" "$d/$diff/layer.tar"
  printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$cfg" "$diff" > "$d/config.json"
  local cfgsum; cfgsum="$(sha256sum "$d/config.json" | cut -d' ' -f1)"
  mv "$d/config.json" "$d/$cfgsum.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' \
    "$cfgsum" "$ref" "$diff" > "$d/manifest.json"
  # Archive members without a "./" prefix (manifest.json at the top level).
  (cd "$d" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
    tar --no-recursion --owner=0 --group=0 --numeric-owner --mtime='@0' \
        -cf "$dest.tmp" -T -)
  mv "$dest.tmp" "$dest"
}

# --- pause -----------------------------------------------------------------
mkdir -p "$work/pause"
gcc -static -Os -s -o "$work/pause/pause" "$HERE/pause.c"
make_archive tradestore.local/pause:e2e "$work/pause" \
  '{"Entrypoint":["/pause"],"User":"65535:65535"}' "$out/pause.tar"

# --- busybox ---------------------------------------------------------------
bb=/bin/busybox
[[ -x $bb ]] || bb=/usr/bin/busybox
file -L "$bb" 2>/dev/null | grep -q 'statically linked' || \
  ldd "$bb" 2>&1 | grep -q 'not a dynamic executable' || {
    echo "busybox at $bb is not static (install busybox-static)" >&2; exit 1; }
r="$work/busybox"
mkdir -p "$r/bin" "$r/etc" "$r/tmp" "$r/data" "$r/root"
chmod 1777 "$r/tmp"
cp "$bb" "$r/bin/busybox"
for app in $("$bb" --list); do
  [[ $app == busybox ]] || ln -s busybox "$r/bin/$app"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/tmp:/bin/sh\n' > "$r/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$r/etc/group"
make_archive tradestore.local/busybox:e2e "$r" \
  '{"Env":["PATH=/bin"],"Cmd":["/bin/sh"],"WorkingDir":"/"}' "$out/busybox.tar"
ls -l "$out"/*.tar >&2
