//! wrk (compiled C, from Debian) driving the sidecar over HTTP/1.1 keep-alive: one
//! trade per `POST /v1/trades`, each with an id of its own, or a trivial route to
//! show the load generator is not what limits.

use std::process::Command;

use super::load::{Run, run_generator};

/// The Lua side: unique ids per thread and phase, and a last line with what the
/// harness parses (wrk's own summary rounds percentiles and omits p99.9).
const SCRIPT: &str = r#"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  phase = args[1]
  n = 0
end
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TRADESTORE_API_TOKEN")
function request()
  if wrk.method ~= "POST" then return wrk.format() end
  n = n + 1
  local body = string.format(
    '{"id":"%s-%d-%d","symbol":"SYM%d","side":"%s","quantity":"%d.25","price":"101.5"}',
    phase, tid, n, n % 5, (n % 2 == 0) and "buy" or "sell", n % 100 + 1)
  return wrk.format(nil, nil, nil, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("tradestore requests=%d status_errors=%d socket_errors=%d p50=%d p99=%d p999=%d\n",
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"#;

/// `clients` connections on `url` for `secs`; `post` sends trades tagged `phase`.
pub fn run(url: &str, token: &str, clients: usize, secs: f64, post: bool, phase: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("trades.lua");
    let method = if post { "wrk.method = \"POST\"\n" } else { "" };
    std::fs::write(&script, format!("{method}{SCRIPT}")).unwrap();
    let mut cmd = Command::new(std::env::var("WRK").unwrap_or_else(|_| "wrk".into()));
    cmd.env("TRADESTORE_API_TOKEN", token)
        .args(["-t", &clients.min(2).to_string(), "-c", &clients.to_string()])
        .args(["-d", &format!("{}s", (secs.round() as u64).max(1)), "--timeout", "10s"])
        .args(["-s"])
        .arg(&script);
    cmd.arg(url).arg("--").arg(phase);
    run_generator(cmd)
}
