//! Running a load generator (pgbench, wrk, the bench's own HTTP client) as a child
//! process and measuring what it cost: throughput, latency percentiles, and CPU per
//! operation on the server side — the whole machine's busy time during the run minus
//! the load generator's own — and the generator's.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub ops: u64,
    pub elapsed: Duration,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// Server CPU (machine busy time minus the load generator's) per operation, µs.
    pub cpu_us_per_op: f64,
    /// The load generator's own CPU per operation, µs: on a machine client and server
    /// share, what it takes the server does not get.
    pub generator_cpu_us_per_op: f64,
    /// Machine busy time minus the load generator's, µs.
    server_cpu_us: f64,
    generator_cpu_us: f64,
}

impl Measured {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// Takes the operation count and percentiles from every operation's latency.
    pub fn set_latencies(&mut self, mut lat: Vec<f64>) {
        lat.sort_by(f64::total_cmp);
        let at = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
        (self.p50_us, self.p99_us, self.p999_us) = (at(0.5), at(0.99), at(0.999));
        self.set_ops(lat.len() as u64);
    }

    pub fn set_ops(&mut self, ops: u64) {
        self.ops = ops;
        self.cpu_us_per_op = self.server_cpu_us / ops.max(1) as f64;
        self.generator_cpu_us_per_op = self.generator_cpu_us / ops.max(1) as f64;
    }
}

/// Busy CPU time of the whole machine so far, µs (from /proc/stat).
fn machine_busy_us() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu: Vec<f64> = stat.lines().next().unwrap().split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect();
    // user nice system idle iowait irq softirq steal
    let busy = cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6] + cpu.get(7).copied().unwrap_or(0.0);
    busy * 1e6 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Runs `cmd` to its end; returns its output (stdout then stderr) and what it cost.
pub fn run_measured(mut cmd: Command) -> (String, Measured) {
    let busy = machine_busy_us();
    let start = Instant::now();
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let out = std::thread::spawn(move || output(child));
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // wait4 reaps the child and gives its own CPU time, which the server's excludes.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4");
    let elapsed = start.elapsed();
    let generator_cpu_us = cpu_us(&usage);
    let server_cpu = machine_busy_us() - busy - generator_cpu_us;
    let text = out.join().unwrap();
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{cmd:?} failed: {text}");
    (text, Measured { elapsed, server_cpu_us: server_cpu.max(0.0), generator_cpu_us, ..Default::default() })
}

/// What one run of an HTTP load generator (wrk, [`super::http_load`]) did.
pub struct Run {
    pub measured: Measured,
    /// Requests answered 2xx: every one is an acknowledged trade for a POST.
    pub acknowledged: u64,
    pub failed: u64,
}

/// Runs an HTTP load generator that ends by printing `tradestore requests=N
/// status_errors=N socket_errors=N p50=µs p99=µs p999=µs`.
pub fn run_generator(cmd: Command) -> Run {
    let (out, mut m) = run_measured(cmd);
    let line = out
        .lines()
        .find(|l| l.starts_with("tradestore "))
        .unwrap_or_else(|| panic!("the load generator printed no summary: {out}"));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    let acknowledged = field("requests") - field("status_errors");
    (m.p50_us, m.p99_us, m.p999_us) = (field("p50") as f64, field("p99") as f64, field("p999") as f64);
    m.set_ops(acknowledged);
    Run { measured: m, acknowledged, failed: field("status_errors") + field("socket_errors") }
}

/// Where a process's CPU went, by thread role: µs of user + system time so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Threads {
    /// The applier (log → DuckDB transactions).
    pub applier: f64,
    /// The writer (deciding, the log append and its `fdatasync`).
    pub writer: f64,
    /// The HTTP workers (tokio: TCP, hyper, JSON, auth).
    pub http: f64,
    /// Everything else (DuckDB's own threads, the blocking pool, followers).
    pub other: f64,
}

impl Threads {
    /// The sidecar `pid`'s threads, by their names (`/proc/<pid>/task/*/comm`).
    pub fn of(pid: u32) -> Threads {
        let mut t = Threads::default();
        let tick_us = 1e6 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return t };
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // utime and stime are fields 14 and 15; the name before them may hold spaces.
            let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let ticks: f64 = after_name.split_whitespace().skip(11).take(2).filter_map(|v| v.parse::<f64>().ok()).sum();
            let slot = match comm.trim() {
                "applier" => &mut t.applier,
                "writer" => &mut t.writer,
                c if c.starts_with("tokio-rt-worker") => &mut t.http,
                _ => &mut t.other,
            };
            *slot += ticks * tick_us;
        }
        t
    }

    /// µs per operation spent between `before` and `self`, over `ops` operations.
    pub fn per_op_since(&self, before: &Threads, ops: u64) -> Threads {
        let per = |a: f64, b: f64| (a - b) / ops.max(1) as f64;
        Threads {
            applier: per(self.applier, before.applier),
            writer: per(self.writer, before.writer),
            http: per(self.http, before.http),
            other: per(self.other, before.other),
        }
    }
}

fn cpu_us(u: &libc::rusage) -> f64 {
    let t = |tv: libc::timeval| tv.tv_sec as f64 * 1e6 + tv.tv_usec as f64;
    t(u.ru_utime) + t(u.ru_stime)
}

/// A child's output, read to its end without `wait` (which would race `wait4`).
fn output(mut child: std::process::Child) -> String {
    use std::io::Read;
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        err
    });
    let mut out = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    out + &err.join().unwrap()
}
