#!/usr/bin/env bash
# The benchmark suite: the sidecar against PostgreSQL and raw DuckDB in one run
# (sidecar/benches/peers), after installing what it needs from Debian: PostgreSQL 15
# (the peer) and wrk (a second HTTP load generator, beside the bench's own). Run it on a quiet machine.
#   BENCH_SECONDS=10   seconds per phase
#   BENCH_SMOKE=1      1 s phases, correctness only (what CI runs)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

export PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
need=()
command -v wrk >/dev/null || need+=(wrk)
[[ -x $PG_BIN/pgbench && -x $PG_BIN/initdb ]] || need+=(postgresql-15)
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi
# Debian's package starts a cluster of its own; the bench makes a throwaway one.
exec cargo bench --locked --workspace --bench peers
