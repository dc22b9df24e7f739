//! Test harness: runs the real `sidecar` binary on a temporary data directory and
//! talks to it over HTTP.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tradestore_sidecar::store::money::Amount;

pub mod clickhouse;
pub mod servers;

pub const TOKEN: &str = "test-token-0123456789";

/// A running sidecar process.
pub struct Sidecar {
    pub child: Child,
    pub base: String,
    pub dir: PathBuf,
    pub port: u16,
}

/// A free port below the kernel's ephemeral range. A port from that range (what
/// binding port 0 hands out) can be taken by a client: a readiness probe connecting
/// to it before the server has bound it may get that same port as its own source and
/// connect to itself (TCP simultaneous open), and the server then fails to bind.
pub fn free_port() -> u16 {
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let range = 10_000..ephemeral_low.max(10_001);
    loop {
        let port = rand::random_range(range.clone());
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_sidecar")
}

/// The sidecar command on `dir`, listening on `port`, logging to `dir/sidecar.log`.
fn command(dir: &Path, port: u16, env: &[(&str, &str)]) -> Command {
    command_of(Path::new(binary()), dir, port, env)
}

/// `command` for another build of the sidecar (A/B benchmarks).
fn command_of(bin: &Path, dir: &Path, port: u16, env: &[(&str, &str)]) -> Command {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("sidecar.log")).unwrap();
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("HOME", dir)
        .env("TRADESTORE_DATA_DIR", dir.join("data"))
        .env("TRADESTORE_LISTEN", format!("127.0.0.1:{port}"))
        .env("TRADESTORE_LOG__LEVEL", "info")
        .env("TRADESTORE_API_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

impl Sidecar {
    /// Starts the sidecar on `dir` and waits until /readyz answers 200.
    pub async fn start(dir: &Path, env: &[(&str, &str)]) -> Sidecar {
        Self::start_on(dir, free_port(), env).await
    }

    /// Starts the sidecar with at most `nofile` open file descriptors (`ulimit -n`).
    pub async fn start_with_fd_limit(dir: &Path, env: &[(&str, &str)], nofile: u64) -> Sidecar {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let mut cmd = command(dir, port, env);
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit { rlim_cur: nofile, rlim_max: nofile };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let mut s = Self::spawned(cmd, dir, port);
        s.wait_ready().await;
        s
    }

    /// Spawns the sidecar without waiting for readiness (a start that must fail).
    pub fn spawn_on(dir: &Path, port: u16, env: &[(&str, &str)]) -> Sidecar {
        Self::spawned(command(dir, port, env), dir, port)
    }

    fn spawned(mut cmd: Command, dir: &Path, port: u16) -> Sidecar {
        let child = cmd.spawn().expect("spawn sidecar");
        Sidecar { child, base: format!("http://127.0.0.1:{port}"), dir: dir.to_path_buf(), port }
    }

    pub async fn start_on(dir: &Path, port: u16, env: &[(&str, &str)]) -> Sidecar {
        Self::start_of(Path::new(binary()), dir, port, env).await
    }

    /// Starts the build at `bin` instead of this one (A/B benchmarks).
    pub async fn start_of(bin: &Path, dir: &Path, port: u16, env: &[(&str, &str)]) -> Sidecar {
        let mut s = Self::spawned(command_of(bin, dir, port, env), dir, port);
        s.wait_ready().await;
        s
    }

    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = reqwest::Client::new();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("sidecar exited early with {status}; the log's end:\n{}", self.log_tail(40));
            }
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "sidecar not ready in time; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sidecar.log")).unwrap_or_default()
    }

    /// The last `lines` of the log: a failure report that CI cuts in the middle
    /// would otherwise lose the error the sidecar stopped with.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "sidecar did not exit after SIGTERM; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that sends the test token.
pub fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    reqwest::Client::builder().default_headers(headers).timeout(Duration::from_secs(30)).build().unwrap()
}

/// A trade body whose content is a pure function of its id, so a stored row can be
/// checked for being exactly what some client sent. Amounts are decimal strings in
/// the canonical form the sidecar answers with.
pub fn trade_for(id: &str) -> Value {
    let h = id.bytes().fold(7u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
    let amount = |units: u64| Amount::from_units(units as i64).unwrap().to_string();
    json!({
        "id": id,
        "symbol": format!("SYM{}", h % 5),
        "side": if h % 2 == 0 { "buy" } else { "sell" },
        "quantity": amount((h % 1000 + 1) * 100_000_000 + h % 7 * 1_000),
        "price": amount(10_000_000_000 + (h % 5000) * 1_000_000),
    })
}

/// Opens the database file directly (the sidecar must be stopped).
pub fn open_db(dir: &Path) -> duckdb::Connection {
    duckdb::Connection::open(dir.join("data").join("trades.duckdb")).unwrap()
}

/// GET with query parameters, expecting a JSON body.
pub async fn get_json(c: &reqwest::Client, url: String, query: &[(&str, &str)]) -> Value {
    c.get(url).query(query).send().await.unwrap().json().await.unwrap()
}

/// `GET /v1/status`.
pub async fn status(s: &Sidecar) -> Value {
    client().get(s.url("/v1/status")).send().await.unwrap().json().await.unwrap()
}

/// Polls `/v1/status` until `want` holds (60 s at most), and returns it.
pub async fn wait_status(s: &Sidecar, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = status(s).await;
        if want(&st) {
            return st;
        }
        assert!(Instant::now() < deadline, "{what} never happened: {st}\nlog:\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the process to exit by itself (60 s at most).
pub async fn wait_exit(s: &mut Sidecar) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(code) = s.child.try_wait().unwrap() {
            return code;
        }
        assert!(Instant::now() < deadline, "the sidecar did not stop; log:\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The commit log is gone (it lived on a volume that was lost).
pub fn lose_commit_log(dir: &Path) {
    std::fs::remove_dir_all(dir.join("data").join("log")).unwrap();
}

/// Posts one trade per id, each acknowledged with 201.
pub async fn write_trades(s: &Sidecar, ids: impl IntoIterator<Item = String>) {
    let c = client();
    for id in ids {
        let r = c.post(s.url("/v1/trades")).json(&trade_for(&id)).send().await.unwrap();
        assert_eq!(r.status(), 201, "{id}: {}", r.text().await.unwrap());
    }
}
