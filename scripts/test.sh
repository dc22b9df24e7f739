#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, builds
# once (release profile only), runs unit, integration and crash tests.
# Environment knobs: TRADESTORE_CRASH_KILLS (default 50).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

step() { printf '\n==> %s (%ss)\n' "$*" "$SECONDS"; }

step "toolchain"
if command -v rustup >/dev/null; then rustup component add clippy rustfmt >/dev/null 2>&1 || true; fi
cargo --version
rustc --version

step "system packages"
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v clickhouse-server >/dev/null || need+=(clickhouse-server)
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi
# The tests start their own redis-server and clickhouse-server processes on free
# ports; the packaged services are not needed.
redis-server --version

step "S3-compatible server (moto, from PyPI)"
# moto's server mode is a real HTTP S3 implementation; the snapshot tests start it.
MOTO_VERSION=5.2.5
moto_venv="$TS_CACHE_DIR/moto-$MOTO_VERSION"
if [[ ! -x $moto_venv/bin/moto_server ]]; then
  rm -rf "$moto_venv"
  python3 -m venv "$moto_venv"
  "$moto_venv/bin/pip" install -q "moto[server]==$MOTO_VERSION"
fi
export MOTO_SERVER=$moto_venv/bin/moto_server
"$MOTO_SERVER" --help >/dev/null

step "format and lint"
cargo fmt --all --check
cargo clippy --release --locked --workspace --all-targets -- -D warnings

step "tests"
cargo test --release --locked --workspace --no-fail-fast 2>&1 | tee "$TS_CACHE_DIR/last-test.log"
test "${PIPESTATUS[0]}" -eq 0

step "root-only tests (full disk on a tmpfs)"
if [[ $(id -u) -ne 0 ]]; then
  echo "error: the full-disk test mounts a tmpfs and needs root" >&2
  exit 1
fi
# Same package selection as the run above, so nothing is rebuilt with other features.
full_disk=disk_full::a_full_disk_refuses_writes_and_loses_nothing_acknowledged
cargo test --release --locked --workspace -- --ignored --exact "$full_disk" 2>&1 | tee "$TS_CACHE_DIR/last-root-test.log"
test "${PIPESTATUS[0]}" -eq 0
# A renamed test would match nothing and pass silently.
grep -q "^test $full_disk \.\.\. ok$" "$TS_CACHE_DIR/last-root-test.log"

step "benchmark smoke (PostgreSQL and wrk from Debian; correctness only, no timing)"
BENCH_SMOKE=1 scripts/bench.sh

step "Helm chart checks"
e2e/chart-check.sh

step "end-to-end on a kind cluster of four nodes (built offline; chart; suite)"
# The release binaries were built by the test step above; no registry is reachable here, so
# e2e/kind.sh builds every image (ours, kind's node image, the suite's) from local parts.
KIND_OFFLINE=1 E2E_SKIP_BUILD=1 e2e/kind.sh

step "done"
