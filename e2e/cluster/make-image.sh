#!/usr/bin/env bash
# Build a single-layer container image tarball (docker-archive format, which
# `ctr images import` / load-image.sh accept) from local files, with no
# registry and no image tooling: a "FROM scratch" rootfs plus what you add.
#
#   e2e/cluster/make-image.sh -t NAME:TAG -o OUT.tar [options]
#
# Options (repeatable where it makes sense):
#   --add SRC[:DEST]   copy a file or directory into the image (DEST defaults
#                      to SRC's absolute path)
#   --libs             also copy the shared libraries (per ldd) and dynamic
#                      loader of every added ELF executable/library
#   --busybox          add a static busybox with applet links in /bin
#                      (a shell for `kubectl exec`, probes, debugging)
#   --ca-certs         add /etc/ssl/certs/ca-certificates.crt
#   --rootfs DIR       start from the tree in DIR
#   --entrypoint X     JSON array ('["/bin/app","--flag"]') or a single path
#   --cmd X            JSON array or a single string
#   --env K=V          environment variable
#   --user UID[:GID]   default user
#   --workdir DIR      working directory
#   --load             also import the result into the running e2e cluster
#
# Every image gets /etc/passwd and /etc/group (root, nobody 65534),
# /etc/nsswitch.conf (hosts: files dns), a world-writable /tmp, and PATH=/usr/local/bin:/usr/bin:/bin unless --env
# PATH=... is given. Ownership is root and timestamps are fixed, so the same
# inputs give the same image ID.
#
# Used for the cluster's own images (images/build.sh: pause, busybox, redis). The project's
# sidecar and operator images come from their Containerfiles (e2e/images.sh, Docker).
#
# Example (a dynamically linked binary and a debug shell):
#   e2e/cluster/make-image.sh -t example/tool:e2e -o /tmp/tool.tar \
#     --add /usr/bin/jq:/usr/local/bin/jq \
#     --libs --busybox --entrypoint /usr/local/bin/jq --user 65534 --load
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() { sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "make-image: $*" >&2; exit 1; }

ref="" out="" libs=0 busybox=0 cacerts=0 rootfs="" load=0
entrypoint="" cmd="" user="" workdir="/"
adds=() envs=()
while (($#)); do
  case "$1" in
    -t|--tag) ref="$2"; shift 2 ;;
    -o|--output) out="$2"; shift 2 ;;
    --add) adds+=("$2"); shift 2 ;;
    --libs) libs=1; shift ;;
    --busybox) busybox=1; shift ;;
    --ca-certs) cacerts=1; shift ;;
    --rootfs) rootfs="$2"; shift 2 ;;
    --entrypoint) entrypoint="$2"; shift 2 ;;
    --cmd) cmd="$2"; shift 2 ;;
    --env) envs+=("$2"); shift 2 ;;
    --user) user="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --load) load=1; shift ;;
    -h|--help) usage ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[[ -n $ref && -n $out ]] || usage

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
r="$work/rootfs"
mkdir -p "$r"
[[ -z $rootfs ]] || cp -a "$rootfs/." "$r/"
mkdir -p "$r/etc" "$r/tmp" "$r/bin"
chmod 1777 "$r/tmp"
[[ -e $r/etc/passwd ]] || printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/tmp:/bin/sh\n' >"$r/etc/passwd"
[[ -e $r/etc/nsswitch.conf ]] || printf 'hosts: files dns\n' >"$r/etc/nsswitch.conf"
[[ -e $r/etc/group ]] || printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"

# json_array X: a JSON array as-is, or a single string wrapped.
json_array() {
  if [[ $1 == \[* ]]; then printf '%s' "$1"; else printf '["%s"]' "${1//\"/\\\"}"; fi
}
json_string() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }

copy_in() { # SRC DEST
  mkdir -p "$r$(dirname "$2")"
  cp -aL "$1" "$r$2"
}
elf_files=()
for a in "${adds[@]}"; do
  src="${a%%:*}"; dest="${a#*:}"
  [[ $a == *:* ]] || dest="$(realpath -s "$src")"
  [[ -e $src ]] || die "no such file: $src"
  [[ $dest == /* ]] || die "destination must be absolute: $dest"
  copy_in "$src" "$dest"
  while IFS= read -r -d '' f; do
    head -c4 "$f" 2>/dev/null | grep -q $'\x7fELF' && elf_files+=("$f")
  done < <(find "$(realpath "$src")" -type f -print0)
done
if ((libs)); then
  for f in "${elf_files[@]}"; do
    deps="$(ldd "$f" 2>&1 || true)"
    [[ $deps == *"not a dynamic executable"* ]] && continue
    while read -r lib; do
      [[ -e $r$lib ]] || copy_in "$lib" "$lib"
    done < <(awk '/=> \// {print $3} /^\t\// {print $1}' <<<"$deps")
  done
fi
if ((busybox)); then
  bb=/bin/busybox; [[ -x $bb ]] || bb=/usr/bin/busybox
  deps="$(ldd "$bb" 2>&1 || true)"
  [[ $deps == *"not a dynamic executable"* ]] || die "$bb is not static (apt-get install busybox-static)"
  cp "$bb" "$r/bin/busybox"
  for app in $("$bb" --list); do
    [[ $app == busybox || -e $r/bin/$app ]] || ln -s busybox "$r/bin/$app"
  done
fi
((cacerts)) && copy_in /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt

# Image config.
env_json="" has_path=0
for e in "${envs[@]}"; do
  [[ $e == PATH=* ]] && has_path=1
  env_json+="${env_json:+,}$(json_string "$e")"
done
((has_path)) || env_json="\"PATH=/usr/local/bin:/usr/bin:/bin\"${env_json:+,}$env_json"
cfg="{\"Env\":[$env_json],\"WorkingDir\":$(json_string "$workdir")"
[[ -z $entrypoint ]] || cfg+=",\"Entrypoint\":$(json_array "$entrypoint")"
[[ -z $cmd ]] || cfg+=",\"Cmd\":$(json_array "$cmd")"
[[ -z $user ]] || cfg+=",\"User\":$(json_string "$user")"
cfg+="}"

# docker-archive: manifest.json, <config>.json, <diffid>/layer.tar.
d="$work/archive"
mkdir -p "$d"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='@0' -C "$r" -cf "$d/layer.tar" .
diff="$(sha256sum "$d/layer.tar" | cut -d' ' -f1)"
mkdir -p "$d/$diff"; mv "$d/layer.tar" "$d/$diff/layer.tar"
printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$cfg" "$diff" >"$d/config.json"
cfgsum="$(sha256sum "$d/config.json" | cut -d' ' -f1)"
mv "$d/config.json" "$d/$cfgsum.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$cfgsum" "$ref" "$diff" >"$d/manifest.json"
mkdir -p "$(dirname "$out")"
(cd "$d" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
  tar --no-recursion --owner=0 --group=0 --numeric-owner --mtime='@0' -cf "$out.tmp" -T -)
mv "$out.tmp" "$out"
echo "make-image: $ref -> $out ($(du -h "$out" | cut -f1), image id sha256:$cfgsum)" >&2
if ((load)); then
  "$HERE/load-image.sh" "$out" "$ref"
fi
