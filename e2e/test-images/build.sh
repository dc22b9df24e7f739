#!/usr/bin/env bash
# Build, offline, the two images the suite runs besides ours, from Debian's packages with the
# project's dockerd (e2e/docker.sh), and print their references:
#   tradestore.local/busybox:e2e   (busybox.Containerfile)   online: busybox:1.36
#   tradestore.local/redis:e2e     (redis.Containerfile)     online: redis:7
# Docker's layer cache makes a second run take seconds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source scripts/env.sh
# shellcheck source=e2e/docker.sh
source e2e/docker.sh
docker version >/dev/null 2>&1 || { docker_up; trap docker_down EXIT; }
e2e/base-images.sh >&2
for name in busybox redis; do
  # --network host: apt-get in a RUN step; the project's dockerd has no bridge or NAT.
  docker build -q --network host -t "tradestore.local/$name:e2e" -f "e2e/test-images/$name.Containerfile" \
    e2e/test-images >/dev/null
  echo "tradestore.local/$name:e2e"
done
