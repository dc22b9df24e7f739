//! Real servers the tests talk to: `redis-server` and moto's S3 server, each a child
//! process on a free port, killed when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child server process, killed on drop.
pub struct Server {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Server {
    fn wait(child: Child, port: u16, what: &str) -> Server {
        let s = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "{what} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    /// `redis-server` with an append-only file in `dir`, so a restart keeps its data.
    pub fn redis(dir: &Path, port: u16) -> Server {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--appendonly", "yes", "--save", ""])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        Server::wait(child, port, "redis-server")
    }

    /// `redis-server` without persistence: a restart comes back empty.
    pub fn redis_ephemeral(port: u16) -> Server {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--appendonly", "no", "--save", ""])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        Server::wait(child, port, "redis-server")
    }

    /// moto's S3-compatible server (`MOTO_SERVER`, installed by scripts/test.sh) with
    /// bucket `bucket` created.
    pub async fn s3(bucket: &str) -> Server {
        let bin = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = super::free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin} must be installed (scripts/test.sh installs moto[server]): {e}"));
        let s = Server::wait(child, port, "moto_server");
        let created = reqwest::Client::new().put(format!("{}/{bucket}", s.url())).send().await.unwrap();
        assert!(created.status().is_success(), "create bucket: {}", created.status());
        s
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`, `libc::SIGCONT`).
    pub fn signal(&self, signal: i32) {
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// SIGKILLs it.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `seq` of every entry in the journal stream `tradestore:journal`, in stream order.
pub async fn journal_seqs(port: u16) -> Vec<i64> {
    let mut conn = redis_conn(port).await;
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg("tradestore:journal").arg("-").arg("+").query_async(&mut conn).await.unwrap();
    entries.into_iter().map(|(_, fields)| fields.iter().find(|(k, _)| k == "seq").unwrap().1.parse().unwrap()).collect()
}

/// A connection to the Redis on `port`.
pub async fn redis_conn(port: u16) -> redis::aio::MultiplexedConnection {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    c.get_multiplexed_async_connection().await.unwrap()
}

/// `GET <key>` as an integer (None when unset).
pub async fn redis_int(port: u16, key: &str) -> Option<i64> {
    redis::cmd("GET").arg(key).query_async(&mut redis_conn(port).await).await.unwrap()
}
