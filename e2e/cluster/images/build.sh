#!/usr/bin/env bash
# Build the e2e cluster's own images offline (docker-archive tarballs):
#   OUTDIR/pause.tar    tradestore.local/pause:e2e    static C pause (pod sandbox)
#   OUTDIR/busybox.tar  tradestore.local/busybox:e2e  static busybox (tests)
#   OUTDIR/redis.tar    tradestore.local/redis:e2e    Debian's redis-server and its libraries (journal test)
#
#   e2e/cluster/images/build.sh OUTDIR
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:?usage: build.sh OUTDIR}"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

gcc -static -Os -s -o "$work/pause" "$HERE/pause.c"
"$HERE/../make-image.sh" -t tradestore.local/pause:e2e -o "$out/pause.tar" \
  --add "$work/pause:/pause" --entrypoint /pause --user 65535:65535

"$HERE/../make-image.sh" -t tradestore.local/busybox:e2e -o "$out/busybox.tar" \
  --busybox --cmd /bin/sh

redis="$(command -v redis-server)" || { echo "build.sh: redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
"$HERE/../make-image.sh" -t tradestore.local/redis:e2e -o "$out/redis.tar" \
  --add "$(readlink -f "$redis"):/usr/bin/redis-server" --libs --entrypoint /usr/bin/redis-server --user 65534:65534
