# shellcheck shell=bash
# Sourced by every build/test entry point. Sets up the toolchain environment:
#   * CARGO_TARGET_DIR outside the clone (reused across clones and CI runs),
#   * the prebuilt libduckdb (DuckDB's C++ is never compiled here, see docs/build.md).
# Idempotent and quiet when everything is already in place.

TS_CACHE_DIR="${TS_CACHE_DIR:-$HOME/.cache/tradestore}"
export TS_CACHE_DIR
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$TS_CACHE_DIR/target}"

# DuckDB 1.5.6 as shipped by the npm package @duckdb/node-bindings-linux-x64.
# The Rust crate duckdb =1.10506.1 is the matching binding (1.10506 = DuckDB 1.5.6).
LIBDUCKDB_NPM_PKG="@duckdb/node-bindings-linux-x64@1.5.6-r.1"
LIBDUCKDB_SHA256="3f4962cdd266eab2b479a5b5a4a6d063d279b2954ae814ed00385d553b747633"
export DUCKDB_LIB_DIR="$TS_CACHE_DIR/libduckdb-1.5.6"
export DUCKDB_DOWNLOAD_LIB=0

tradestore_fetch_libduckdb() {
  local lib="$DUCKDB_LIB_DIR/libduckdb.so"
  if [[ -f "$lib" ]] && echo "$LIBDUCKDB_SHA256  $lib" | sha256sum -c --status; then
    return 0
  fi
  echo "fetching libduckdb from npm ($LIBDUCKDB_NPM_PKG)" >&2
  local tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$LIBDUCKDB_NPM_PKG" >/dev/null 2>&1) || {
    echo "error: npm pack $LIBDUCKDB_NPM_PKG failed" >&2; rm -rf "$tmp"; return 1; }
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  if ! echo "$LIBDUCKDB_SHA256  $tmp/package/libduckdb.so" | sha256sum -c --status; then
    echo "error: libduckdb.so checksum mismatch" >&2; rm -rf "$tmp"; return 1
  fi
  mkdir -p "$DUCKDB_LIB_DIR"
  mv "$tmp/package/libduckdb.so" "$lib.tmp" && mv "$lib.tmp" "$lib"
  cp "$tmp/package/LICENSE" "$DUCKDB_LIB_DIR/LICENSE"
  rm -rf "$tmp"
}

tradestore_fetch_libduckdb
