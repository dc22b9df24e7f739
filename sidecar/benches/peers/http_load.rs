//! The bench's own HTTP/1.1 load generator: `clients` keep-alive connections on two
//! threads, one request in flight per connection (no pipelining), each `POST` a trade
//! with an id of its own. It runs as a child process of the bench (the bench's binary
//! started again with [`ARG`]), so its CPU is measured apart from the server's like
//! pgbench's and wrk's. It writes each request into a buffer it reuses and parses only
//! the answer's head: a few µs of CPU a request, where wrk running a Lua function per
//! request took several times that — CPU the server, on the same two cores, did not get
//! (docs/benchmarks.md, session 13).

use std::io;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::load::{Run, run_generator};

/// The argument that makes the bench's binary this generator.
pub const ARG: &str = "--http-load";

/// `clients` connections on `url` (`http://host:port/path`) for `secs`; `post` sends
/// trades tagged `phase`, otherwise `GET`s.
pub fn run(url: &str, token: &str, clients: usize, secs: f64, post: bool, phase: &str) -> Run {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.arg(ARG).args([url, token, &clients.to_string(), &secs.to_string(), &post.to_string(), phase]);
    run_generator(cmd)
}

/// What one connection did.
#[derive(Default)]
struct Tally {
    /// µs per answered request.
    latencies: Vec<u32>,
    ok: u64,
    status_errors: u64,
    socket_errors: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        (self.ok, self.status_errors, self.socket_errors) =
            (self.ok + other.ok, self.status_errors + other.status_errors, self.socket_errors + other.socket_errors);
    }
}

/// The generator's side: `args` are what [`run`] passed after [`ARG`]. Prints the
/// summary line the harness parses (the one wrk's script prints).
pub fn main(args: &[String]) {
    let [url, token, clients, secs, post, phase] = args else { panic!("{ARG} URL TOKEN CLIENTS SECS POST PHASE") };
    let (clients, secs, post): (usize, f64, bool) =
        (clients.parse().unwrap(), secs.parse().unwrap(), post.parse().unwrap());
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = host.parse().expect("host:port of an IP address");
    let head = request_head(post, host, path, token);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let threads = clients.min(2);
    let mut total = Tally::default();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (head, phase) = (head.clone(), phase.clone());
            let mine: Vec<usize> = (t..clients).step_by(threads).collect();
            std::thread::spawn(move || connections(addr, &head, post.then_some(&*phase), &mine, deadline))
        })
        .collect();
    for h in handles {
        total.add(h.join().unwrap());
    }
    let mut lat = total.latencies;
    lat.sort_unstable();
    let at = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0);
    println!(
        "tradestore requests={} status_errors={} socket_errors={} p50={} p99={} p999={}",
        total.ok + total.status_errors,
        total.status_errors,
        total.socket_errors,
        at(0.5),
        at(0.99),
        at(0.999)
    );
}

/// Everything of a request before its body (or all of a `GET`).
fn request_head(post: bool, host: &str, path: &str, token: &str) -> String {
    let auth = format!("Host: {host}\r\nAuthorization: Bearer {token}\r\n");
    if post {
        format!("POST {path} HTTP/1.1\r\n{auth}Content-Type: application/json\r\nContent-Length: ")
    } else {
        format!("GET {path} HTTP/1.1\r\n{auth}\r\n")
    }
}

/// Connections `ids` on one thread of their own, until `deadline`.
fn connections(addr: SocketAddr, head: &str, phase: Option<&str>, ids: &[usize], deadline: Instant) -> Tally {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = ids
            .iter()
            .map(|&id| {
                let (head, phase) = (head.to_string(), phase.map(|p| format!("{p}-{id}")));
                tokio::spawn(async move { connection(addr, &head, phase.as_deref(), deadline).await })
            })
            .collect();
        let mut tally = Tally::default();
        for t in tasks {
            tally.add(t.await.unwrap());
        }
        tally
    })
}

/// One connection's requests until `deadline`; the request under way when it passes
/// is finished (so everything acknowledged is counted). A broken connection counts
/// as a socket error and is made again; a refused one ends the connection's run.
async fn connection(addr: SocketAddr, head: &str, tag: Option<&str>, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let (mut req, mut body, mut answer) = (Vec::with_capacity(512), String::new(), vec![0u8; 4096]);
    let mut n = 0u64;
    while Instant::now() < deadline {
        let Ok(stream) = TcpStream::connect(addr).await else {
            tally.socket_errors += 1; // the server is gone: no point trying again
            break;
        };
        stream.set_nodelay(true).unwrap();
        while Instant::now() < deadline {
            n += 1;
            write_request(&mut req, &mut body, head, tag, n);
            let start = Instant::now();
            if write_all(&stream, &req).await.is_err() {
                tally.socket_errors += 1;
                break;
            }
            match read_answer(&stream, &mut answer).await {
                Ok(status) => {
                    tally.latencies.push(start.elapsed().as_micros() as u32);
                    if (200..300).contains(&status) { tally.ok += 1 } else { tally.status_errors += 1 }
                }
                Err(_) => {
                    tally.socket_errors += 1;
                    break;
                }
            }
        }
    }
    tally
}

/// Request `n`: the head, then (for a `POST`, `tag` set) a trade whose id is `tag-n`,
/// varied like wrk's script varies it.
fn write_request(req: &mut Vec<u8>, body: &mut String, head: &str, tag: Option<&str>, n: u64) {
    use std::fmt::Write as _;
    use std::io::Write as _;
    req.clear();
    req.extend_from_slice(head.as_bytes());
    let Some(tag) = tag else { return };
    body.clear();
    let side = if n.is_multiple_of(2) { "buy" } else { "sell" };
    write!(
        body,
        r#"{{"id":"{tag}-{n}","symbol":"SYM{}","side":"{side}","quantity":"{}.25","price":"101.5"}}"#,
        n % 5,
        n % 100 + 1
    )
    .unwrap();
    write!(req, "{}\r\n\r\n", body.len()).unwrap();
    req.extend_from_slice(body.as_bytes());
}

/// Reads one answer whole; returns its status.
async fn read_answer(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<u16> {
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = read(stream, &mut buf[filled..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut answer = httparse::Response::new(&mut headers);
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
        let httparse::Status::Complete(head) = answer.parse(&buf[..filled]).map_err(|e| invalid(e.to_string()))? else {
            continue;
        };
        let length = answer
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
            .ok_or_else(|| invalid("an answer without Content-Length".into()))?;
        let status = answer.code.unwrap_or(0);
        let end = head + length;
        if buf.len() < end {
            buf.resize(end, 0);
        }
        while filled < end {
            let n = read(stream, &mut buf[filled..end]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            filled += n;
        }
        return Ok(status);
    }
}

/// The socket calls themselves, tried before waiting for readiness: a request fits the
/// send buffer, and most waits end with the whole answer there.
async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match stream.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn read(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.try_read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.readable().await?,
            Err(e) => return Err(e),
        }
    }
}
