//! The `sidecar` binary; the command line lives in [`tradestore_sidecar::cli`].

fn main() -> std::process::ExitCode {
    tradestore_sidecar::cli::run()
}
