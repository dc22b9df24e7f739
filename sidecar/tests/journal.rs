//! The Redis journal against a real `redis-server`: every committed change reaches
//! the stream exactly once, writes keep being acknowledged while Redis is down, and
//! the journal catches up (and reports degraded meanwhile).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Sidecar, client, free_port, trade_for};
use serde_json::Value;

struct Redis {
    child: Child,
}

impl Redis {
    fn start(dir: &std::path::Path, port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--appendonly", "yes", "--save", ""])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        let r = Redis { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn status(s: &Sidecar) -> Value {
    client().get(s.url("/v1/status")).send().await.unwrap().json().await.unwrap()
}

async fn wait_journal(s: &Sidecar, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = status(s).await;
        if want(&st["journal"]) {
            return st;
        }
        assert!(Instant::now() < deadline, "journal never reached the expected state: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stream_seqs(port: u16) -> Vec<i64> {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let mut conn = c.get_multiplexed_async_connection().await.unwrap();
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg("tradestore:journal").arg("-").arg("+").query_async(&mut conn).await.unwrap();
    entries.into_iter().map(|(_, fields)| fields.iter().find(|(k, _)| k == "seq").unwrap().1.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_follows_commits_and_catches_up_after_redis_outage() {
    let dir = tempfile::tempdir().unwrap();
    let rdir = tempfile::tempdir().unwrap();
    let rport = free_port();
    let mut redis = Redis::start(rdir.path(), rport);
    let url = format!("redis://127.0.0.1:{rport}/0");
    let s = Sidecar::start(dir.path(), &[("TRADESTORE_REDIS__URL", &url), ("TRADESTORE_REDIS__MAX_BACKOFF", "200ms")])
        .await;
    let c = client();
    for i in 0..60 {
        assert_eq!(c.post(s.url("/v1/trades")).json(&trade_for(&format!("j{i}"))).send().await.unwrap().status(), 201);
    }
    assert_eq!(c.delete(s.url("/v1/trades/j0")).send().await.unwrap().status(), 200);
    wait_journal(&s, |j| j["watermark"] == 61 && j["healthy"] == true && j["lag"] == 0).await;
    assert_eq!(stream_seqs(rport).await, (1..=61).collect::<Vec<i64>>());
    {
        let rc = redis::Client::open(url.as_str()).unwrap();
        let mut conn = rc.get_multiplexed_async_connection().await.unwrap();
        let state: String = redis::cmd("GET").arg("tradestore:state:SYM1").query_async(&mut conn).await.unwrap();
        let mem: Value = c.get(s.url("/v1/state/SYM1")).send().await.unwrap().json().await.unwrap();
        assert_eq!(serde_json::from_str::<Value>(&state).unwrap(), mem, "Redis holds the hot state");
    }

    // Redis goes away: writes are still acknowledged, the journal says it is degraded.
    redis.kill();
    for i in 60..100 {
        assert_eq!(c.post(s.url("/v1/trades")).json(&trade_for(&format!("j{i}"))).send().await.unwrap().status(), 201);
    }
    let st = wait_journal(&s, |j| j["healthy"] == false).await;
    assert!(st["journal"]["lag"].as_i64().unwrap() > 0, "{st}");
    let m = c.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("tradestore_journal_healthy 0"), "{m}");

    // Redis returns (with its append-only file): the journal catches up, each change once.
    let _redis = Redis::start(rdir.path(), rport);
    wait_journal(&s, |j| j["watermark"] == 101 && j["healthy"] == true).await;
    assert_eq!(stream_seqs(rport).await, (1..=101).collect::<Vec<i64>>());
}
