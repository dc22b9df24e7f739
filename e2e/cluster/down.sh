#!/usr/bin/env bash
# Tear down the e2e cluster started by up.sh: stops every process it started
# (by pid file), removes all pod sandboxes, unmounts everything under the
# state directories, deletes the network namespace, the veth pair (and with
# it the host routes) and all runtime state. Safe to run when nothing is up.
#
#   e2e/cluster/down.sh
#   KEEP_LOGS=1 e2e/cluster/down.sh   # keep $TS_STATE/logs (copied to $TS_CACHE/last-logs)
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/cluster/lib.sh
source "$HERE/lib.sh"
[[ $EUID -eq 0 ]] || die "must run as root"
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
if [[ -z ${TS_LOCK_HELD:-} ]]; then
  mkdir -p "$TS_CACHE"
  exec 9>"$TS_CACHE/cluster.lock"
  flock -w 900 9 || die "another up.sh/down.sh holds $TS_CACHE/cluster.lock"
fi

CTRD_SOCK="$TS_RUN/containerd/containerd.sock"
K8S="$(ls -d "$TS_CACHE"/k8s-"$K8S_VERSION"-*/bin/k8s 2>/dev/null | head -n1)"

# Baseline recorded by up.sh.
run_netns_mounted=1 var_lib_cni=1 var_log_containers=1 var_log_pods=1
baseline_netns=()
if [[ -f $TS_RUN/baseline ]]; then
  eval "$(grep -E '^[a-z_]+=[01]$' "$TS_RUN/baseline")"
  mapfile -t baseline_netns < <(sed -n 's/^netns //p' "$TS_RUN/baseline")
fi

# 1. Node: stop the kubelet first (it would restart pods), then remove every
#    pod sandbox through CRI (runs CNI DEL, frees the pod netns), then stop
#    containerd's shims and containerd itself.
stop_proc kube-proxy
stop_proc kubelet
if [[ -S $CTRD_SOCK ]] && proc_alive containerd; then
  if [[ -n $K8S ]]; then
    "$K8S" cri-cleanup --endpoint "unix://$CTRD_SOCK" --timeout 90s >/dev/null ||
      log "warning: cri-cleanup reported errors"
  fi
  # Anything CRI did not remove (e.g. containers created with ctr).
  for t in $(ctr --address "$CTRD_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr --address "$CTRD_SOCK" -n k8s.io tasks kill -s KILL "$t" >/dev/null 2>&1
    ctr --address "$CTRD_SOCK" -n k8s.io tasks delete -f "$t" >/dev/null 2>&1
  done
fi
stop_proc containerd
# Shims are containerd's children that re-parent away; they are ours when
# their command line names our containerd socket.
for p in /proc/[0-9]*; do
  cmd="$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)" || continue
  if [[ $cmd == *containerd-shim* && $cmd == *"$CTRD_SOCK"* ]]; then
    log "killing leftover shim ${p#/proc/}"
    kill -KILL "${p#/proc/}" 2>/dev/null
  fi
done

# 2. Control plane.
for c in cluster-dns hostpath-provisioner kube-scheduler kube-controller-manager kube-apiserver etcd; do
  stop_proc "$c"
done

# Any process still running inside our network namespace (e.g. container
# processes whose shim was killed) is ours too.
if [[ -e $TS_NETNS_PATH ]]; then
  ns_ino="$(stat -L -c %i "$TS_NETNS_PATH" 2>/dev/null)"
  for p in /proc/[0-9]*; do
    [[ "$(stat -L -c %i "$p/ns/net" 2>/dev/null)" == "$ns_ino" ]] || continue
    log "killing leftover process in $TS_NETNS: ${p#/proc/} ($(tr '\0' ' ' <"$p/cmdline" | cut -c1-80))"
    kill -KILL "${p#/proc/}" 2>/dev/null
  done
  sleep 0.2
fi

# 3. Pod network namespaces containerd created and did not remove.
if [[ -d /run/netns ]]; then
  for n in /run/netns/cni-*; do
    [[ -e $n ]] || continue
    b="$(basename "$n")"
    printf '%s\n' "${baseline_netns[@]}" | grep -qxF "$b" && continue
    umount "$n" 2>/dev/null; rm -f "$n"
  done
fi

# 4. Mounts under our state directories (deepest first).
unmount_under() {
  local dir=$1 m
  [[ -d $dir ]] || return 0
  for m in $(awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: cannot unmount $m"
  done
}
unmount_under "$TS_STATE"
unmount_under "$TS_RUN"

# 5. Network namespace, veth pair (its host routes go with it).
ip link del "$TS_VETH_HOST" 2>/dev/null
if [[ -e $TS_NETNS_PATH ]]; then
  ip netns del "$TS_NETNS" 2>/dev/null || { umount "$TS_NETNS_PATH" 2>/dev/null; rm -f "$TS_NETNS_PATH"; }
fi
if [[ $run_netns_mounted == 0 ]] && mountpoint -q /run/netns && [[ -z "$(ls -A /run/netns 2>/dev/null)" ]]; then
  umount /run/netns 2>/dev/null; umount /run/netns 2>/dev/null
  rmdir /run/netns 2>/dev/null
fi

# 6. cgroups created by the kubelet / containerd for pods (cgroup v1).
for h in /sys/fs/cgroup/*/; do
  [[ -d ${h}kubepods ]] || continue
  find "${h}kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null
done

# 7. Files the kubelet / CNI put outside our state dirs.
if [[ -d /var/log/containers ]]; then
  find /var/log/containers -maxdepth 1 -type l -lname "$TS_STATE/*" -delete 2>/dev/null
  [[ $var_log_containers == 0 ]] && rmdir /var/log/containers 2>/dev/null
fi
[[ $var_log_pods == 0 ]] && rmdir /var/log/pods 2>/dev/null
if [[ -d /var/lib/cni ]]; then
  rm -f /var/lib/cni/results/tradestore-e2e-* 2>/dev/null
  if [[ $var_lib_cni == 0 ]]; then
    find /var/lib/cni -depth -type d -empty -delete 2>/dev/null
  fi
fi

# 8. State.
if [[ -n ${KEEP_LOGS:-} && -d $TS_STATE/logs ]]; then
  rm -rf "$TS_CACHE/last-logs"; mkdir -p "$TS_CACHE"
  cp -a "$TS_STATE/logs" "$TS_CACHE/last-logs"
  log "logs kept in $TS_CACHE/last-logs"
fi
rm -rf --one-file-system "$TS_STATE" "$TS_RUN" 2>/dev/null
if [[ -e $TS_STATE || -e $TS_RUN ]]; then
  log "warning: could not remove everything under $TS_STATE / $TS_RUN"
  exit 1
fi
log "cluster down"
