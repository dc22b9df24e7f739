//! A real `clickhouse-server` for the tests (installed by scripts/test.sh).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `clickhouse-server` child process with its own data directory, killed on drop.
pub struct ClickHouse {
    child: Child,
    /// Its HTTP port on 127.0.0.1.
    pub http: u16,
}

impl ClickHouse {
    /// Starts it with data under `dir`, HTTP on `http`, native protocol on `tcp`.
    pub fn start(dir: &std::path::Path, http: u16, tcp: u16) -> ClickHouse {
        let d = dir.display();
        let config = format!(
            r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><console>1</console></logger>
  <http_port>{http}</http_port><tcp_port>{tcp}</tcp_port><listen_host>127.0.0.1</listen_host>
  <path>{d}/data/</path><tmp_path>{d}/tmp/</tmp_path><user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>/etc/clickhouse-server/users.xml</users_config>
  <default_profile>default</default_profile><default_database>default</default_database>
  <mark_cache_size>5368709</mark_cache_size>
</yandex>"#
        );
        std::fs::write(dir.join("config.xml"), config).unwrap();
        let child = Command::new("clickhouse-server")
            .arg(format!("--config-file={d}/config.xml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clickhouse-server must be installed (scripts/test.sh installs it)");
        let ch = ClickHouse { child, http };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
            assert!(Instant::now() < deadline, "clickhouse-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        ch
    }

    /// SIGKILLs it.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Runs `sql` over HTTP and returns the body.
    pub async fn query(&self, sql: &str) -> String {
        let r = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/", self.http))
            .body(sql.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{sql}: {}", r.text().await.unwrap());
        r.text().await.unwrap()
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
