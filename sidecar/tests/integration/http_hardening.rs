//! What a client can hold of the server: read timeouts, idle keep-alive, the
//! connection cap under a small file descriptor limit, and stalled clients at SIGTERM.

use std::time::{Duration, Instant};

use crate::common::{self, Sidecar, client, open_db, trade_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connection that has sent `bytes` and then nothing more.
async fn send_and_stall(port: u16, bytes: &str) -> TcpStream {
    // Bounded: a server that stops accepting fills its backlog, and connects then hang.
    let connect = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(("127.0.0.1", port)));
    let mut stream = connect.await.expect("connect timed out: the server stopped accepting").unwrap();
    stream.write_all(bytes.as_bytes()).await.unwrap();
    stream
}

/// Reads until the server closes the connection (or `within` passes); returns what
/// it sent and how long after the call it closed (`None`: still open).
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, Option<Duration>) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), None),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), Some(start.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

const PARTIAL_HEAD: &str = "GET /healthz HTTP/1.1\r\nhost: x\r\n";
const PARTIAL_BODY: &str = "POST /v1/trades HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                            authorization: Bearer test-token-0123456789\r\ncontent-length: 100\r\n\r\n{\"id\":";

async fn metrics(s: &Sidecar) -> String {
    client().get(s.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn stalled_heads_and_bodies_and_idle_connections_are_closed_on_their_own_deadlines() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("TRADESTORE_HTTP__HEADER_READ_TIMEOUT", "1s"),
        ("TRADESTORE_HTTP__BODY_READ_TIMEOUT", "1s"),
        ("TRADESTORE_HTTP__IDLE_TIMEOUT", "3s"),
    ];
    let s = Sidecar::start(dir.path(), &env).await;
    let mut head = send_and_stall(s.port, PARTIAL_HEAD).await;
    let mut body = send_and_stall(s.port, PARTIAL_BODY).await;
    let mut idle = send_and_stall(s.port, "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut buf = [0u8; 1024];
    assert!(idle.read(&mut buf).await.unwrap() > 0, "the kept-alive connection got its answer");

    let (sent, closed) = read_until_closed(&mut head, Duration::from_secs(5)).await;
    let closed = closed.expect("a head stalled past http.header_read_timeout is closed");
    assert!(closed >= Duration::from_millis(800) && closed < Duration::from_millis(2500), "{closed:?}");
    assert!(sent.is_empty(), "{sent:?}");
    let (sent, closed) = read_until_closed(&mut body, Duration::from_secs(5)).await;
    assert!(closed.is_some() && sent.starts_with("HTTP/1.1 408"), "a late body gets 408: {sent:?}");
    // Idle is not cut at the (shorter) header timeout, only at its own.
    let (_, closed) = read_until_closed(&mut idle, Duration::from_millis(500)).await;
    assert!(closed.is_none(), "idle keep-alive closed after {closed:?}, before http.idle_timeout");
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "an idle keep-alive connection is closed after http.idle_timeout");

    // HTTP/2 (prior knowledge): control frames between streams are not a request head.
    let mut h2 = send_and_stall(s.port, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    h2.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap(); // an empty SETTINGS frame
    let (_, closed) = read_until_closed(&mut h2, Duration::from_millis(1800)).await;
    assert!(closed.is_none(), "an HTTP/2 connection closed after {closed:?}, at the header timeout");

    let m = metrics(&s).await;
    for reason in ["header_timeout", "body_timeout", "idle_timeout"] {
        let line = format!("tradestore_http_connections_closed_total{{reason=\"{reason}\"}} 1");
        assert!(m.contains(&line), "missing {line} in:\n{m}");
    }
    assert!(m.contains("tradestore_http_client_errors_total{code=\"408\"} 1"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_idle_or_half_sent_connections_lock_out_neither_probes_nor_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sidecar::start_with_fd_limit(dir.path(), &[], 512).await;
    let mut held = Vec::new();
    for i in 0..1000 {
        let bytes = if i % 2 == 0 { "" } else { PARTIAL_HEAD };
        held.push(send_and_stall(s.port, bytes).await);
    }
    let c = reqwest::Client::builder().timeout(Duration::from_secs(2)).pool_max_idle_per_host(0).build().unwrap();
    for n in 0..20 {
        let r = c.get(s.url("/healthz")).send().await.unwrap_or_else(|e| panic!("probe {n}: {e}\n{}", s.log()));
        assert_eq!(r.status(), 200, "probe {n}");
    }
    let r = c
        .post(s.url("/v1/trades"))
        .bearer_auth(common::TOKEN)
        .json(&trade_for("through-the-crowd"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let m = metrics(&s).await;
    let open: i64 = m
        .lines()
        .find_map(|l| l.strip_prefix("tradestore_http_open_connections "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no open-connections gauge in:\n{m}"));
    assert!(open <= 512 - 64, "the cap fits the descriptor limit: {open} open");
    assert!(m.contains("tradestore_http_connections_closed_total{reason=\"evicted\"}"), "{m}");
    assert!(!s.log().contains("ERROR"), "{}", s.log());
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_with_clients_stalled_mid_request_still_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Sidecar::start(dir.path(), &[]).await;
    let ids: Vec<String> = (0..20).map(|i| format!("kept-{i}")).collect();
    common::write_trades(&s, ids.clone()).await;
    let _head = send_and_stall(s.port, PARTIAL_HEAD).await;
    let _body = send_and_stall(s.port, PARTIAL_BODY).await;
    let _idle = send_and_stall(s.port, "").await;
    let start = Instant::now();
    // lifecycle.shutdown_grace is 25 s; two drain phases of 2 s and the final checkpoint fit well within 10.
    let status = tokio::task::block_in_place(|| s.terminate(Duration::from_secs(10)));
    assert!(status.success(), "exit {status} after {:?}; log:\n{}", start.elapsed(), s.log());
    let log = s.log();
    assert!(log.contains("final checkpoint done") && log.contains("stopped cleanly"), "{log}");
    let conn = open_db(dir.path());
    let stored: i64 = conn.query_row("SELECT count(*) FROM trades WHERE id LIKE 'kept-%'", [], |r| r.get(0)).unwrap();
    assert_eq!(stored, 20, "every acknowledged trade is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_draining_new_requests_get_503_with_retry_after_not_connection_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Sidecar::start(dir.path(), &[]).await;
    common::write_trades(&s, ["before".to_string()]).await;
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A new client (new connection) during the drain.
    let c = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let r = c.post(s.url("/v1/trades")).bearer_auth(common::TOKEN).json(&trade_for("during")).send().await;
    let r = r.unwrap_or_else(|e| panic!("refused during the drain: {e}\n{}", s.log()));
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(c.get(s.url("/readyz")).send().await.unwrap().status(), 503);
    assert_eq!(c.get(s.url("/v1/trades/before")).send().await.unwrap().status(), 200, "reads are still served");
    let status = tokio::task::block_in_place(|| s.terminate(Duration::from_secs(10)));
    assert!(status.success(), "{status}: {}", s.log());
    assert!(c.get(s.url("/healthz")).send().await.is_err(), "after the drain the listener is closed");
}
