#!/usr/bin/env bash
# Build and run the sidecar standalone on the embedded defaults: a DuckDB file under
# ./data, HTTP on 127.0.0.1:8080, no Redis/ClickHouse/cluster. Extra arguments go to
# the sidecar (e.g. `--config my.yaml`). Works on a fresh machine with Rust and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --locked -p tradestore-sidecar
exec "$CARGO_TARGET_DIR/release/sidecar" "$@"
