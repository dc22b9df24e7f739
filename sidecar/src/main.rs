//! The `sidecar` binary; the command line lives in [`tradestore_sidecar::cli`].

/// mimalloc instead of glibc's malloc: the writer, the one serial stage, frees what the
/// HTTP workers allocated (each request's trade), and glibc's cross-thread frees and
/// consolidation were a quarter of its time at 64 clients; with mimalloc, 5–34% more
/// trades a second at 16 and 64 clients (docs/benchmarks.md, session 17). DuckDB, a
/// C++ library, keeps its own allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tradestore_sidecar::cli::run()
}
