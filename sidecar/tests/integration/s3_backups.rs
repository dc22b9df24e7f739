//! Snapshots in an S3-compatible bucket (moto's server, a real HTTP S3 implementation
//! installed from PyPI): scheduled snapshots uploaded and pruned, the store rebuilt
//! from the bucket plus the Redis journal after losing its whole volume, restore and
//! bootstrap by snapshot id, a corrupt object refused, and an unreachable bucket
//! reported without stopping writes.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::servers::Server;
use crate::common::{self, Sidecar, binary, client, status, wait_status, write_trades};
use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::Value;

const BUCKET: &str = "tradestore-backups";
const PREFIX: &str = "stores/desk-a";

fn s3_env(s3: &Server, dir: &std::path::Path) -> Vec<(String, String)> {
    [
        ("TRADESTORE_SNAPSHOTS__DIR", dir.join("snaps").display().to_string()),
        ("TRADESTORE_SNAPSHOTS__S3__BUCKET", BUCKET.into()),
        ("TRADESTORE_SNAPSHOTS__S3__PREFIX", PREFIX.into()),
        ("TRADESTORE_SNAPSHOTS__S3__ENDPOINT", s3.url()),
        ("AWS_ACCESS_KEY_ID", "test-key".into()),
        ("AWS_SECRET_ACCESS_KEY", "test-secret".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn trade_ids(dir: &std::path::Path) -> Vec<String> {
    let conn = common::open_db(dir);
    let mut stmt = conn.prepare("SELECT id FROM trades ORDER BY id").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_in_a_bucket_rebuild_a_lost_volume() {
    let mut s3 = Server::s3(BUCKET).await;
    let rdir = tempfile::tempdir().unwrap();
    let redis = Server::redis(rdir.path(), common::free_port());
    let redis_url = redis.redis_url();

    // Scheduled snapshots every 2 s go to the bucket; the bucket keeps 2, the local
    // staging directory only the newest.
    let a = tempfile::tempdir().unwrap();
    let mut env = s3_env(&s3, a.path());
    env.extend([
        ("TRADESTORE_SNAPSHOTS__SCHEDULE".into(), "*/2 * * * * *".into()),
        ("TRADESTORE_SNAPSHOTS__KEEP_LAST".into(), "2".into()),
        ("TRADESTORE_SNAPSHOTS__MAX_AGE".into(), "0s".into()),
        ("TRADESTORE_REDIS__URL".into(), redis_url.clone()),
    ]);
    let mut s = Sidecar::start(a.path(), &refs(&env)).await;
    write_trades(&s, (0..40).map(|i| format!("s{i}"))).await;
    let st = wait_status(&s, "a scheduled snapshot covering 40 trades", |st| {
        st["last_snapshot"]["seq"].as_i64() >= Some(40)
    })
    .await;
    assert_eq!(st["backup"]["target"], format!("s3://{BUCKET}/{PREFIX}"), "{st}");
    assert!(st["backup"]["next_run"].is_string(), "{st}");
    write_trades(&s, (40..60).map(|i| format!("s{i}"))).await;
    let first_id = st["last_snapshot"]["id"].as_str().unwrap().to_string();
    wait_status(&s, "a newer snapshot covering 60 trades", |st| st["last_snapshot"]["seq"].as_i64() >= Some(60)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let m = client().get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let taken: i64 = m
            .lines()
            .find_map(|l| l.strip_prefix("tradestore_snapshots_total "))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        let list: Value = client().get(s.url("/v1/snapshots")).send().await.unwrap().json().await.unwrap();
        if taken >= 4 {
            break list["snapshots"].as_array().unwrap().clone();
        }
        assert!(Instant::now() < deadline, "fewer than 4 snapshots taken: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(listed.len(), 2, "the bucket keeps the newest 2: {listed:?}");
    assert!(listed.iter().all(|m| m["id"] != first_id.as_str()), "the oldest was pruned from the bucket");
    let local: Vec<_> = std::fs::read_dir(a.path().join("snaps")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(local.len() <= 2, "local staging keeps the newest only (plus one in flight): {local:?}");

    // The last writes are only in DuckDB and the journal, not in any snapshot yet.
    write_trades(&s, (60..75).map(|i| format!("s{i}"))).await;
    wait_status(&s, "the journal caught up", |st| st["journal"]["watermark"] == 75).await;
    s.kill();

    // The whole volume is lost (database, WAL and local snapshots): a new pod on a new
    // volume rebuilds from the bucket's newest snapshot plus the journal.
    let b = tempfile::tempdir().unwrap();
    let mut env_b = s3_env(&s3, b.path());
    env_b.push(("TRADESTORE_REDIS__URL".into(), redis_url));
    let mut s = Sidecar::start(b.path(), &refs(&env_b)).await;
    let st = status(&s).await;
    assert_eq!(st["trade_rows"], 75, "{st}");
    let rec = &st["recovery"];
    assert!(rec["snapshot"].is_string() && rec["snapshot_seq"].as_i64() >= Some(60), "{st}");
    assert_eq!(rec["seq"], 75, "{st}");
    assert!(s.terminate(Duration::from_secs(30)).success());
    let expected: Vec<String> = {
        let mut v: Vec<String> = (0..75).map(|i| format!("s{i}")).collect();
        v.sort();
        v
    };
    assert_eq!(trade_ids(b.path()), expected);

    // Restore by id with the command, into an empty data directory.
    let newest = listed.last().unwrap().clone();
    let id = newest["id"].as_str().unwrap();
    let c_dir = tempfile::tempdir().unwrap();
    let env_c = s3_env(&s3, c_dir.path());
    let out = Command::new(binary())
        .env_clear()
        .envs(env_c.iter().cloned())
        .env("TRADESTORE_DATA_DIR", c_dir.path().join("data"))
        .args(["restore", "--from", id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(trade_ids(c_dir.path()).len() as i64, newest["trade_rows"].as_i64().unwrap());

    // Bootstrap by id at start-up, without Redis.
    let d = tempfile::tempdir().unwrap();
    let mut env_d = s3_env(&s3, d.path());
    env_d.push(("TRADESTORE_SNAPSHOTS__BOOTSTRAP_FROM".into(), id.to_string()));
    let mut s = Sidecar::start(d.path(), &refs(&env_d)).await;
    assert_eq!(status(&s).await["trade_rows"], newest["trade_rows"]);

    // A damaged object in the bucket is refused by checksum, and nothing is written.
    let bucket = AmazonS3Builder::new()
        .with_bucket_name(BUCKET)
        .with_region("us-east-1")
        .with_endpoint(s3.url())
        .with_allow_http(true)
        .with_access_key_id("test-key")
        .with_secret_access_key("test-secret")
        .build()
        .unwrap();
    let object = object_store::path::Path::from(format!("{PREFIX}/{id}/trades.duckdb"));
    bucket.put(&object, PutPayload::from(vec![0u8; 4096])).await.unwrap();
    let e_dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .env_clear()
        .envs(s3_env(&s3, e_dir.path()))
        .env("TRADESTORE_DATA_DIR", e_dir.path().join("data"))
        .args(["restore", "--from", id])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("differs from manifest"), "{err}");
    assert!(!e_dir.path().join("data").join("trades.duckdb").exists());

    // The bucket goes away: a snapshot fails with a clear 503, writes go on.
    s3.kill();
    let r = client().post(s.url("/v1/snapshots")).send().await.unwrap_or_else(|e| panic!("{e}; log:\n{}", s.log()));
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("object store"));
    let st = status(&s).await;
    assert!(st["backup"]["last_error"].as_str().unwrap_or("").contains("object store"), "{st}");
    write_trades(&s, ["after-outage".to_string()].into_iter()).await;
    assert!(s.terminate(Duration::from_secs(30)).success());
}
