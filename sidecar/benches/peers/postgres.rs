//! PostgreSQL as users would run it for durable single-row writes: a throwaway cluster
//! with `fsync=on` and `synchronous_commit=on`, driven by pgbench with one prepared
//! `INSERT` per transaction into a table shaped like the sidecar's.
//!
//! pgbench reaches it over TCP on the loopback interface, the transport wrk uses for the
//! sidecar (and the one clients in other pods use for either); a Unix socket, which only
//! a client on the same host can use, saves PostgreSQL 7–21% here and is measured too.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::load::{Measured, run_measured};

const SCHEMA: &str = "CREATE TABLE trades (id text PRIMARY KEY, symbol text NOT NULL, side text NOT NULL, \
    quantity numeric(18,8) NOT NULL, price numeric(18,8) NOT NULL, status text NOT NULL, ts timestamp NOT NULL, \
    version bigint NOT NULL, seq bigint NOT NULL, created_at timestamp NOT NULL, updated_at timestamp NOT NULL)";

const SCRIPT: &str = "\\set id random(1, 9000000000000000000)\n\
    INSERT INTO trades VALUES (:id, 'SYM1', 'buy', 12.5, 101.25, 'filled', now(), 1, :id, now(), now());\n";

/// How pgbench reaches the server.
#[derive(Clone, Copy)]
pub enum Transport {
    /// TCP on 127.0.0.1, as the sidecar is reached.
    Tcp,
    /// The Unix socket in the cluster's directory.
    Unix,
}

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

/// Runs `cmd` as the `postgres` user when we are root (PostgreSQL refuses to run as root).
fn as_postgres(program: &Path) -> Command {
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

impl Postgres {
    /// Creates and starts a cluster in a temporary directory, listening on 127.0.0.1
    /// and a Unix socket, with the `trades` table.
    pub fn start() -> Postgres {
        let bin = PathBuf::from(std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()));
        let dir = tempfile::Builder::new().prefix("tradestore-pg").tempdir_in("/tmp").unwrap();
        if unsafe { libc::geteuid() } == 0 {
            ok(Command::new("chown").arg("postgres:postgres").arg(dir.path()));
        }
        let port = crate::common::free_port();
        let data = dir.path().join("data");
        ok(as_postgres(&bin.join("initdb")).arg("-D").arg(&data).args(["-U", "postgres", "-A", "trust", "--no-sync"]));
        let opts = format!(
            // max_connections: the default 100 refuses the 256-client step.
            "-c fsync=on -c synchronous_commit=on -c full_page_writes=on -c max_connections=300 \
             -c listen_addresses='127.0.0.1' -p {port} -k {}",
            dir.path().display()
        );
        ok(as_postgres(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("log"))
            .args(["-w", "-o", &opts, "start"]));
        let pg = Postgres { dir, bin, port };
        pg.sql(SCHEMA);
        pg
    }

    fn psql(&self) -> Command {
        let mut c = as_postgres(&self.bin.join("psql"));
        c.arg("-h").arg(self.dir.path()).args([
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
        ]);
        c
    }

    pub fn sql(&self, sql: &str) -> String {
        ok(self.psql().args(["-qAt", "-c", sql]))
    }

    /// `clients` pgbench clients inserting for `secs` over `transport`; latencies from
    /// pgbench's per-transaction log.
    pub fn pgbench(&self, clients: usize, secs: f64, transport: Transport) -> Measured {
        let script = self.dir.path().join("insert.sql");
        std::fs::write(&script, SCRIPT).unwrap();
        let prefix = self.dir.path().join(format!("pgbench-{clients}"));
        let host = match transport {
            Transport::Tcp => "127.0.0.1".into(),
            Transport::Unix => self.dir.path().as_os_str().to_owned(),
        };
        let mut cmd = as_postgres(&self.bin.join("pgbench"));
        cmd.arg("-h")
            .arg(host)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-n", "-M", "prepared"])
            .args(["-c", &clients.to_string(), "-j", &clients.min(2).to_string()])
            .args(["-T", &(secs.ceil() as u64).max(1).to_string()])
            .arg("-f")
            .arg(&script)
            .arg("--log")
            .arg(format!("--log-prefix={}", prefix.display()))
            .current_dir(self.dir.path())
            .arg("postgres");
        let (out, mut m) = run_measured(cmd);
        assert!(out.contains("tps = "), "pgbench: {out}");
        let mut latencies: Vec<f64> = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap().to_string_lossy().starts_with(&format!("pgbench-{clients}.")) {
                let text = std::fs::read_to_string(&path).unwrap();
                // client_id transaction_no time(µs) script_no epoch epoch_µs
                latencies.extend(text.lines().filter_map(|l| l.split_whitespace().nth(2)?.parse::<f64>().ok()));
                std::fs::remove_file(path).unwrap();
            }
        }
        m.set_latencies(latencies);
        m
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}
