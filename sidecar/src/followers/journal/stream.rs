//! The journal as it lives in Redis: its keys, the one atomic append, and reading it
//! back (start-up recovery and the catch-up of a store that lost its tail).
//!
//! Keys under `<prefix>:`
//! - `journal` — a stream; entry id `<seq>-0`, fields `seq` and `trade` (the trade as
//!   changed by commit `seq`, JSON). Ids are sequence numbers, so Redis itself refuses
//!   an entry twice and readers resume with `XRANGE journal (<seq> +`.
//! - `journal:seq` — the highest sequence journaled (the watermark).
//! - `journal:from` — the journal is complete above this sequence: for every change
//!   with `from < seq <= journal:seq`, the stream holds that trade's state as of that
//!   change or a later one. Replaying the entries above a snapshot's `seq` (when
//!   `from <= seq`) therefore rebuilds exactly the state at `journal:seq`.
//! - `last_trade`, `state:<symbol>` — conveniences for readers of Redis.
//!
//! Every append is one Lua script, so it is atomic and conditional: it applies only if
//! `journal:seq` still holds what the appender last wrote. A Redis that restarted
//! empty, failed over to a replica that lags, or already applied a batch whose reply
//! was lost answers with its real `journal:seq` instead, and nothing is written twice.

use std::time::Duration;

use backon::{BlockingRetryable, ConstantBuilder};

use crate::error::{Error, Result};
use crate::store::model::Trade;

/// The key names of one journal.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Keys { prefix: prefix.to_string() }
    }

    /// `<prefix>:<suffix>`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    fn stream(&self) -> String {
        self.key("journal")
    }
}

/// What Redis says the journal covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Complete above this sequence (`None`: a journal written before `journal:from`
    /// existed, whose completeness cannot be proven).
    pub from: Option<i64>,
    /// Highest sequence journaled.
    pub seq: i64,
}

/// One atomic append.
#[derive(Debug, Default)]
pub struct Append<'a> {
    /// `journal:seq` as the appender last wrote it; `None` when Redis is expected to
    /// hold no journal.
    pub expected: Option<i64>,
    /// Start the journal afresh, complete above this sequence (drops any old stream).
    pub restart_from: Option<i64>,
    /// The changes, oldest first.
    pub trades: &'a [Trade],
    /// The new watermark (the last change's seq, or the restart point when empty).
    pub top: i64,
    /// Trim entries below this sequence (0: no trimming).
    pub trim_below: i64,
    /// `(key suffix, JSON)` values to set alongside (symbol states, last trade).
    pub extra: Vec<(String, String)>,
}

/// The outcome of an append.
#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    /// Applied; the watermark is now `top`.
    Done,
    /// Not applied: Redis's `journal:seq` is not what the appender expected.
    Conflict(Option<i64>),
}

const APPEND: &str = r#"
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return {0, cur or ''} end
if ARGV[2] ~= '' then
  redis.call('DEL', KEYS[3])
  redis.call('SET', KEYS[2], ARGV[2])
end
local n = tonumber(ARGV[6])
local i = 7
for _ = 1, n do
  redis.call('XADD', KEYS[3], ARGV[i] .. '-0', 'seq', ARGV[i], 'trade', ARGV[i + 1])
  i = i + 2
end
for k = 4, #KEYS do
  redis.call('SET', KEYS[k], ARGV[i])
  i = i + 1
end
if ARGV[4] ~= '0' then
  redis.call('XTRIM', KEYS[3], 'MINID', ARGV[4] .. '-0')
  local from = redis.call('GET', KEYS[2])
  if from == false or tonumber(from) < tonumber(ARGV[5]) then redis.call('SET', KEYS[2], ARGV[5]) end
end
redis.call('SET', KEYS[1], ARGV[3])
return {1, ARGV[3]}
"#;

impl Append<'_> {
    fn command(&self, keys: &Keys) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(APPEND).arg(3 + self.extra.len()).arg(keys.key("journal:seq")).arg(keys.key("journal:from"));
        cmd.arg(keys.stream());
        for (suffix, _) in &self.extra {
            cmd.arg(keys.key(suffix));
        }
        cmd.arg(self.expected.map(|s| s.to_string()).unwrap_or_default())
            .arg(self.restart_from.map(|s| s.to_string()).unwrap_or_default())
            .arg(self.top)
            .arg(self.trim_below)
            .arg((self.trim_below - 1).max(0))
            .arg(self.trades.len());
        for t in self.trades {
            cmd.arg(t.seq).arg(serde_json::to_string(t).expect("trade serializes"));
        }
        for (_, value) in &self.extra {
            cmd.arg(value);
        }
        cmd
    }

    /// Runs the append on `conn`.
    pub async fn run(&self, keys: &Keys, conn: &mut impl redis::aio::ConnectionLike) -> Result<Appended> {
        let (applied, current): (i64, String) = redis_err(self.command(keys).query_async(conn).await)?;
        if applied == 1 {
            return Ok(Appended::Done);
        }
        Ok(Appended::Conflict(parse_seq(&current)?))
    }
}

/// Reads `journal:seq` and `journal:from` (`None`: Redis holds no journal).
pub async fn meta(keys: &Keys, conn: &mut impl redis::aio::ConnectionLike) -> Result<Option<Meta>> {
    let (seq, from): (Option<String>, Option<String>) =
        redis_err(redis::pipe().get(keys.key("journal:seq")).get(keys.key("journal:from")).query_async(conn).await)?;
    to_meta(seq, from)
}

fn to_meta(seq: Option<String>, from: Option<String>) -> Result<Option<Meta>> {
    let Some(seq) = parse_seq(seq.as_deref().unwrap_or(""))? else { return Ok(None) };
    Ok(Some(Meta { from: parse_seq(from.as_deref().unwrap_or(""))?, seq }))
}

fn parse_seq(raw: &str) -> Result<Option<i64>> {
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse().map(Some).map_err(|_| Error::Internal(format!("journal: {raw:?} is not a sequence number")))
}

/// A blocking reader of the journal, for start-up (before the runtime serves).
pub struct Replay {
    conn: redis::Connection,
    keys: Keys,
}

/// Entries read per `XRANGE` call: bounds the memory a replay needs.
pub const PAGE: usize = 10_000;

impl Replay {
    /// Connects, retrying until `wait` has passed; every call times out after `wait`.
    pub fn connect(client: &redis::Client, keys: Keys, wait: Duration) -> Result<Self> {
        let deadline = std::time::Instant::now() + wait;
        let timeout = wait.max(Duration::from_millis(100));
        let attempt = || -> redis::RedisResult<redis::Connection> {
            let c = client.get_connection_with_timeout(timeout)?;
            c.set_read_timeout(Some(timeout))?;
            c.set_write_timeout(Some(timeout))?;
            Ok(c)
        };
        let conn = attempt
            .retry(ConstantBuilder::new().with_delay(Duration::from_millis(200)).without_max_times())
            .sleep(std::thread::sleep)
            .when(|_| std::time::Instant::now() < deadline)
            .call()
            .map_err(|e| Error::dependency("redis (journal)", e))?;
        Ok(Replay { conn, keys })
    }

    /// `journal:seq` and `journal:from`.
    pub fn meta(&mut self) -> Result<Option<Meta>> {
        let (seq, from): (Option<String>, Option<String>) = redis_err(
            redis::pipe().get(self.keys.key("journal:seq")).get(self.keys.key("journal:from")).query(&mut self.conn),
        )?;
        to_meta(seq, from)
    }

    /// Up to [`PAGE`] entries with a sequence above `after`, oldest first.
    pub fn page_after(&mut self, after: i64) -> Result<Vec<Trade>> {
        let page: Vec<(String, Vec<(String, String)>)> = redis_err(
            redis::cmd("XRANGE")
                .arg(self.keys.stream())
                .arg(format!("({after}-0"))
                .arg("+")
                .arg("COUNT")
                .arg(PAGE)
                .query(&mut self.conn),
        )?;
        page.into_iter().map(|(id, fields)| decode(&id, fields)).collect()
    }
}

fn decode(id: &str, fields: Vec<(String, String)>) -> Result<Trade> {
    let json = fields.into_iter().find(|(k, _)| k == "trade").map(|(_, v)| v);
    let json = json.ok_or_else(|| Error::Internal(format!("journal entry {id} has no trade")))?;
    let trade: Trade = serde_json::from_str(&json).map_err(|e| Error::Internal(format!("journal entry {id}: {e}")))?;
    if id != format!("{}-0", trade.seq) {
        return Err(Error::Internal(format!("journal entry {id} holds seq {}", trade.seq)));
    }
    Ok(trade)
}

/// A Redis client for `url`, with the password (kept out of the URL and the config).
pub fn client(url: &str, password: Option<String>) -> Result<redis::Client> {
    let mut info: redis::ConnectionInfo = url.parse().map_err(|e| Error::Config(format!("redis.url {url:?}: {e}")))?;
    if let Some(p) = password {
        let settings = info.redis_settings().clone().set_password(p);
        info = info.set_redis_settings(settings);
    }
    redis::Client::open(info).map_err(|e| Error::Config(format!("redis.url: {e}")))
}

/// Maps a Redis failure to [`Error::Dependency`].
pub fn redis_err<T>(r: redis::RedisResult<T>) -> Result<T> {
    r.map_err(|e| Error::dependency("redis", e))
}
