# shellcheck shell=bash
# A private Docker Engine for building the images (sourced by e2e/images.sh, e2e/base-images.sh).
#
#   source e2e/docker.sh
#   docker_up      # install Debian's docker.io if missing, start dockerd unless it already answers
#   docker ...     # Debian's docker CLI (20.10, BuildKit built in) against that daemon
#   docker_down    # stop dockerd if docker_up started it (TS_KEEP_DOCKER=1 leaves it running)
#
# Containers run through e2e/kind/runc-nosysresource (runc minus CAP_SYS_RESOURCE, which this
# VM's bounding set lacks): privileged containers such as kind's nodes fail with plain runc.
#
# The daemon is the project's own, not the machine's: no systemd, its own socket, exec root and
# pid file under /run/tradestore-docker, its data root (images, BuildKit cache) under
# $TS_DOCKER_ROOT (default $TS_CACHE_DIR/docker, kept across runs so builds stay warm). It touches
# no host networking: no iptables rules, no NAT, no ip_forward change, no docker0 bridge; builds
# that need the network (apt-get in a RUN step) run with `docker build --network host`.

_ts_docker_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TS_DOCKER_ROOT="${TS_DOCKER_ROOT:-${TS_CACHE_DIR:?source scripts/env.sh first}/docker}"
TS_DOCKER_RUN="${TS_DOCKER_RUN:-/run/tradestore-docker}"
export DOCKER_HOST="unix://$TS_DOCKER_RUN/docker.sock"
# The machine may have a newer docker CLI first on PATH that insists on the buildx plugin for
# BuildKit; Debian's CLI has BuildKit built in.
TS_DOCKER_CLI=/usr/bin/docker
export DOCKER_BUILDKIT=1
_ts_docker_started=0

docker() { "$TS_DOCKER_CLI" "$@"; }

_docker_log() { printf '[docker %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

docker_up() {
  if ! command -v dockerd >/dev/null || [[ ! -x $TS_DOCKER_CLI ]]; then
    _docker_log "installing Debian's docker.io"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    # (This machine's /usr/sbin/policy-rc.d keeps the packaged service from starting.)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
  fi
  if docker version >/dev/null 2>&1; then
    _docker_log "dockerd already answers on $DOCKER_HOST"
    return 0
  fi
  mkdir -p "$TS_DOCKER_ROOT" "$TS_DOCKER_RUN"
  local logf="$TS_DOCKER_ROOT/dockerd.log"
  _docker_log "starting dockerd (data root $TS_DOCKER_ROOT, log $logf)"
  # --oom-score-adjust=0: the VM lacks CAP_SYS_RESOURCE, a negative score cannot be set.
  setsid dockerd \
    --data-root "$TS_DOCKER_ROOT/data" --exec-root "$TS_DOCKER_RUN/exec" \
    --pidfile "$TS_DOCKER_RUN/dockerd.pid" -H "$DOCKER_HOST" \
    --storage-driver overlay2 --exec-opt native.cgroupdriver=cgroupfs \
    --iptables=false --ip-masq=false --ip-forward=false --bridge=none \
    --oom-score-adjust=0 --userland-proxy=false \
    --add-runtime "ts-runc=$_ts_docker_here/kind/runc-nosysresource" --default-runtime ts-runc \
    >>"$logf" 2>&1 </dev/null &
  _ts_docker_started=1
  local i
  for i in $(seq 120); do
    docker version >/dev/null 2>&1 && { _docker_log "dockerd up (${i}x0.5 s)"; return 0; }
    sleep 0.5
  done
  _docker_log "dockerd did not answer within 60 s; last log lines:"
  tail -20 "$logf" >&2
  return 1
}

docker_down() {
  ((_ts_docker_started)) || return 0
  if [[ ${TS_KEEP_DOCKER:-0} == 1 ]]; then
    _docker_log "TS_KEEP_DOCKER=1: dockerd stays up on $DOCKER_HOST"
    return 0
  fi
  local pid
  pid="$(cat "$TS_DOCKER_RUN/dockerd.pid" 2>/dev/null)" || return 0
  [[ -n $pid ]] && kill "$pid" 2>/dev/null || return 0
  local i
  for i in $(seq 60); do
    kill -0 "$pid" 2>/dev/null || { _docker_log "dockerd stopped"; _ts_docker_started=0; return 0; }
    sleep 0.5
  done
  _docker_log "dockerd (pid $pid) still running after 30 s"
}
