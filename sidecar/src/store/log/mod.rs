//! The store's commit log: every change, in `seq` order, made durable in groups.
//!
//! A change is durable — and may be acknowledged — once the group holding it is
//! written and `fdatasync`ed ([`CommitLog::append`]). DuckDB is brought up to date from
//! the log afterwards, in large transactions, and the log is what start-up replays,
//! what followers read and what segments are kept for.
//!
//! The log is a directory of segments ([`segment`]) named by their first `seq`, each
//! zero-filled to a fixed size before use and holding whole groups ([`group`]). Only
//! the newest group can be torn by a crash: a flush covers a group entirely before the
//! next is written. So on opening, a damaged group with nothing valid after it is a
//! torn end and is cut off (reported in [`Opened::torn`]); a damaged group followed by
//! a valid one is corruption, and the log refuses to open ([`LogError::Corrupt`]).
//! A log that failed a write or a flush refuses every later append: after a failed
//! `fdatasync` the kernel may have dropped the pages, so retrying could acknowledge
//! data that is not on disk.

pub mod group;
pub mod segment;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

pub use group::Record;
use group::{Group, Invalid};
use segment::Groups;

/// The spare segment being zero-filled ahead of need, so rotation costs a rename.
const SPARE: &str = "spare.tmp";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("commit log I/O: {0}")]
    Io(#[from] io::Error),
    #[error(
        "commit log segment {segment} is corrupt at offset {offset}: {reason}; valid groups follow, so this is not a torn write"
    )]
    Corrupt { segment: PathBuf, offset: u64, reason: String },
    #[error("commit log has a gap: {0}")]
    Gap(String),
    #[error("no room for the next commit-log segment ({0}); nothing was written")]
    Rotate(io::Error),
    #[error("a group of {bytes} bytes does not fit a segment of {segment_bytes} bytes")]
    TooLarge { bytes: usize, segment_bytes: u64 },
    #[error("commit log failed a write or flush earlier ({0}); it accepts no more appends")]
    Failed(String),
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// A torn end found and cut off on opening.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TornTail {
    pub segment: PathBuf,
    pub offset: u64,
    pub reason: String,
}

/// The log, opened; and the torn end it cut off, if any.
pub struct Opened {
    pub log: CommitLog,
    pub torn: Option<TornTail>,
}

/// A segment on disk: its path and the range of `seq`s it may hold.
#[derive(Debug, Clone)]
struct SegmentFile {
    path: PathBuf,
    first_seq: u64,
}

/// What a scan of one segment found.
struct Scan {
    /// Where the next group goes.
    end: u64,
    /// The last `seq` in the segment, if it holds any group.
    last_seq: Option<u64>,
    /// The first group that did not read, and why.
    bad: Option<(u64, Invalid)>,
}

pub struct CommitLog {
    dir: PathBuf,
    segment_bytes: u64,
    segments: Vec<SegmentFile>,
    active: File,
    at: u64,
    next_seq: u64,
    spare: Option<JoinHandle<io::Result<PathBuf>>>,
    buf: Vec<u8>,
    failed: Option<String>,
}

impl CommitLog {
    /// Opens the log in `dir` (created if missing), cutting off a torn end. `applied`
    /// is the last `seq` already in DuckDB: a log that ends at or before it restarts
    /// at `applied + 1` (nothing in it is needed any more), and a log that starts after
    /// `applied + 1` is a gap — changes DuckDB lacks are nowhere.
    pub fn open(dir: &Path, segment_bytes: u64, applied: u64) -> Result<Opened> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("log directory {}: {e}", dir.display())))?;
        let _ = std::fs::remove_file(dir.join(SPARE)); // half-filled by a crash, maybe
        let mut segments = list(dir)?;
        let Survey { scans, torn } = survey(&segments)?;
        if let Some(t) = &torn {
            segment::zero_tail(&OpenOptions::new().write(true).open(&t.segment)?, t.offset)?;
        }
        let last_seq = scans.iter().rev().find_map(|s| s.last_seq);
        let mut end = scans.last().map_or(segment::HEADER, |s| s.end);
        let next_seq = match (segments.last(), last_seq) {
            (_, Some(l)) => l + 1,
            (Some(s), None) => s.first_seq,
            (None, None) => applied + 1,
        };
        if next_seq > applied + 1 && segments.first().is_some_and(|s| s.first_seq > applied + 1) {
            return Err(LogError::Gap(format!(
                "DuckDB has applied up to seq {applied} but the log starts at {}",
                segments[0].first_seq
            )));
        }
        let restart = next_seq <= applied;
        if segments.is_empty() || restart {
            let path = create_segment(dir, segment_bytes, applied + 1)?;
            segments.push(SegmentFile { path, first_seq: applied + 1 });
            end = segment::HEADER;
        }
        let active = OpenOptions::new().read(true).write(true).open(&segments.last().expect("a segment").path)?;
        let mut log = CommitLog {
            dir: dir.to_path_buf(),
            segment_bytes,
            segments,
            active,
            at: end,
            next_seq: next_seq.max(applied + 1),
            spare: None,
            buf: Vec::new(),
            failed: None,
        };
        if restart {
            log.remove_through(applied)?;
        }
        log.prepare_spare();
        Ok(Opened { log, torn })
    }

    /// The `seq` the next appended record must carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Writes `records` (consecutive `seq`s from [`next_seq`](Self::next_seq)) as one
    /// group and flushes it: on `Ok` they are durable.
    pub fn append(&mut self, records: &[Record]) -> Result<()> {
        if let Some(why) = &self.failed {
            return Err(LogError::Failed(why.clone()));
        }
        assert!(
            records.iter().enumerate().all(|(i, r)| r.seq == self.next_seq + i as u64),
            "records must continue the log's seqs"
        );
        let bytes = group::encoded_len(records);
        if bytes as u64 > self.segment_bytes - segment::HEADER {
            return Err(LogError::TooLarge { bytes, segment_bytes: self.segment_bytes });
        }
        if self.at + bytes as u64 > self.segment_bytes {
            // Nothing is written yet: a failed rotation (a full disk) can be retried.
            self.rotate().map_err(LogError::Rotate)?;
        }
        self.buf.clear();
        group::encode(records, &mut self.buf);
        self.active.write_all_at(&self.buf, self.at).map_err(|e| self.fail(e))?;
        self.active.sync_data().map_err(|e| self.fail(e))?;
        self.at += bytes as u64;
        self.next_seq += records.len() as u64;
        Ok(())
    }

    fn fail(&mut self, e: io::Error) -> LogError {
        self.failed = Some(e.to_string());
        LogError::Io(e)
    }

    /// Starts the next segment at `next_seq`, from the spare if it is ready.
    fn rotate(&mut self) -> io::Result<()> {
        let spare = match self.spare.take().map(|h| h.join()) {
            Some(Ok(Ok(path))) => path,
            _ => {
                let path = self.dir.join(SPARE);
                let _ = std::fs::remove_file(&path);
                segment::zero_filled(&path, self.segment_bytes)?;
                path
            }
        };
        let path = segment::install(&spare, &self.dir, self.next_seq, crate::store::model::now_micros())?;
        self.active = OpenOptions::new().read(true).write(true).open(&path)?;
        self.segments.push(SegmentFile { path, first_seq: self.next_seq });
        self.at = segment::HEADER;
        self.prepare_spare();
        Ok(())
    }

    fn prepare_spare(&mut self) {
        let (path, size) = (self.dir.join(SPARE), self.segment_bytes);
        self.spare = Some(std::thread::spawn(move || segment::zero_filled(&path, size).map(|()| path)));
    }

    /// Deletes the segments that hold only `seq`s up to `seq` (never the active one).
    pub fn remove_through(&mut self, seq: u64) -> io::Result<usize> {
        let keep_from = self.segments.windows(2).take_while(|w| w[1].first_seq <= seq + 1).count();
        for s in self.segments.drain(..keep_from) {
            std::fs::remove_file(&s.path)?;
        }
        if keep_from > 0 {
            segment::sync_dir(&self.dir)?;
        }
        Ok(keep_from)
    }

    /// The number of segments on disk (the active one included).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The oldest `seq` the log still holds (or would hold next, when empty).
    pub fn first_seq(&self) -> u64 {
        self.segments[0].first_seq
    }

    /// Reads the durable records with `seq >= from`, up to what is durable now.
    pub fn read_from(&self, from: u64) -> Reader {
        let start = self.segments.partition_point(|s| s.first_seq <= from).saturating_sub(1);
        Reader { segments: self.segments[start..].to_vec(), next: 0, cursor: None, from, until: self.next_seq }
    }
}

impl Drop for CommitLog {
    fn drop(&mut self) {
        if let Some(h) = self.spare.take() {
            let _ = h.join(); // not left half-written behind a clean stop
        }
    }
}

/// Whether `dir` holds any segment file (a missing directory holds none).
pub fn has_segments(dir: &Path) -> io::Result<bool> {
    match list(dir) {
        Ok(segments) => Ok(!segments.is_empty()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The segment files in `dir`, by first `seq`.
fn list(dir: &Path) -> io::Result<Vec<SegmentFile>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(first_seq) = entry.file_name().to_str().and_then(segment::parse_name) {
            segments.push(SegmentFile { path: entry.path(), first_seq });
        }
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments)
}

fn create_segment(dir: &Path, size: u64, first_seq: u64) -> io::Result<PathBuf> {
    let spare = dir.join(SPARE);
    let _ = std::fs::remove_file(&spare);
    segment::zero_filled(&spare, size)?;
    segment::install(&spare, dir, first_seq, crate::store::model::now_micros())
}

/// Reads one segment's groups to its end, holding them to `expect` (the `seq` the
/// previous segment leaves off at).
fn scan(s: &SegmentFile, expect: Option<u64>) -> Result<Scan> {
    let file = File::open(&s.path)?;
    let corrupt = |offset, reason: String| LogError::Corrupt { segment: s.path.clone(), offset, reason };
    let header = segment::read_header(&file).map_err(|why| corrupt(0, why))?;
    if header.first_seq != s.first_seq || expect.is_some_and(|e| e != s.first_seq) {
        return Err(LogError::Gap(format!(
            "segment {} starts at seq {} (its name says {}, the previous segment ends before {})",
            s.path.display(),
            header.first_seq,
            s.first_seq,
            expect.map_or("-".into(), |e| e.to_string())
        )));
    }
    let mut groups = Groups::new(&file, segment::HEADER)?;
    let mut last_seq = None;
    loop {
        let at = groups.at;
        match groups.next_group()? {
            Ok(Group { first_seq, last_seq: last, .. }) if first_seq == last_seq.map_or(s.first_seq, |l| l + 1) => {
                last_seq = Some(last)
            }
            Ok(g) => {
                let why = format!(
                    "group starts at seq {}, expected {}",
                    g.first_seq,
                    last_seq.map_or(s.first_seq, |l| l + 1)
                );
                return Err(corrupt(at, why));
            }
            Err(Invalid::Zero) if groups.zeros_from(at)? => return Ok(Scan { end: at, last_seq, bad: None }),
            Err(why) => return Ok(Scan { end: at, last_seq, bad: Some((at, why)) }),
        }
    }
}

/// Every segment scanned in order, read only: what [`CommitLog::open`] builds on and
/// `sidecar log verify` reports.
struct Survey {
    scans: Vec<Scan>,
    torn: Option<TornTail>,
}

fn survey(segments: &[SegmentFile]) -> Result<Survey> {
    let (mut scans, mut torn) = (Vec::<Scan>::with_capacity(segments.len()), None);
    for (i, s) in segments.iter().enumerate() {
        let expect = scans.iter().rev().find_map(|s| s.last_seq).map(|l| l + 1);
        let scan = scan(s, expect)?;
        if let Some((offset, why)) = &scan.bad {
            torn = Some(torn_or_corrupt(s, *offset, why, i + 1 == segments.len())?);
        }
        scans.push(scan);
    }
    Ok(Survey { scans, torn })
}

/// A damaged group at `offset`: a torn end (to be cut off) when it is in the last
/// segment with no valid group after it, corruption otherwise.
fn torn_or_corrupt(s: &SegmentFile, offset: u64, why: &Invalid, last: bool) -> Result<TornTail> {
    let file = File::open(&s.path)?;
    let valid_after = Groups::new(&file, offset)?.any_valid_after(offset)?;
    if !last || valid_after.is_some() {
        let reason = match valid_after {
            Some(at) => format!("{why} (a valid group follows at offset {at})"),
            None => format!("{why} (later segments follow)"),
        };
        return Err(LogError::Corrupt { segment: s.path.clone(), offset, reason });
    }
    Ok(TornTail { segment: s.path.clone(), offset, reason: why.to_string() })
}

/// One segment as `sidecar log verify` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SegmentReport {
    pub file: PathBuf,
    pub first_seq: u64,
    /// The last `seq` it holds; none for a segment with no group yet.
    pub last_seq: Option<u64>,
    /// Bytes of groups after the header (the rest is zeros).
    pub used_bytes: u64,
}

/// What `sidecar log verify` found: every segment, and a torn end the next start
/// would cut off. Corruption and gaps are errors, not reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub segments: Vec<SegmentReport>,
    pub torn: Option<TornTail>,
    /// The first and last `seq` the log holds, if any.
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
}

impl Report {
    /// The changes the log holds, as `(after, to)`: every `seq` above `after` up to
    /// `to`; none without a segment. A log with no record still says how far the store
    /// had come: a segment is named after the `seq` that follows the last one written.
    pub fn span(&self) -> Option<(u64, u64)> {
        let (first, last) = (self.segments.first()?, self.segments.last()?);
        Some((first.first_seq - 1, self.last_seq.unwrap_or(last.first_seq - 1)))
    }
}

/// Checks the log in `dir` without changing it: every group's checksum and format,
/// and that `seq`s run on without a gap.
pub fn verify(dir: &Path) -> Result<Report> {
    let segments = list(dir)?;
    let Survey { scans, torn } = survey(&segments)?;
    let reports: Vec<SegmentReport> = segments
        .iter()
        .zip(&scans)
        .map(|(s, scan)| SegmentReport {
            file: s.path.clone(),
            first_seq: s.first_seq,
            last_seq: scan.last_seq,
            used_bytes: scan.end - segment::HEADER,
        })
        .collect();
    let last_seq = scans.iter().rev().find_map(|s| s.last_seq);
    let first_seq = last_seq.and(segments.first().map(|s| s.first_seq));
    Ok(Report { segments: reports, torn, first_seq, last_seq })
}

/// Reads the records of the log in `dir` from `from` on, without opening it for
/// writing (`sidecar log dump`): up to its last valid group.
pub fn read_dir(dir: &Path, from: u64) -> Result<Reader> {
    let segments = list(dir)?;
    let Survey { scans, .. } = survey(&segments)?;
    let until = scans.iter().rev().find_map(|s| s.last_seq).map_or(0, |l| l + 1);
    let start = segments.partition_point(|s| s.first_seq <= from).saturating_sub(1);
    Ok(Reader { segments: segments[start..].to_vec(), next: 0, cursor: None, from, until })
}

/// The records of the log from a `seq` on, segment by segment.
pub struct Reader {
    segments: Vec<SegmentFile>,
    /// Index in `segments` of the next segment to open.
    next: usize,
    /// The segment being read and the offset of its next group.
    cursor: Option<(File, u64)>,
    from: u64,
    until: u64,
}

impl Reader {
    /// The next group's records at or after `from` (empty once the log is read to
    /// where it was durable when the reader was made).
    pub fn next_records(&mut self) -> Result<Vec<Record>> {
        while self.from < self.until {
            let Some((file, at)) = self.cursor.as_mut() else {
                self.open_next()?;
                continue;
            };
            let mut groups = Groups::new(file, *at)?;
            match groups.next_group()? {
                Ok(g) => {
                    *at = groups.at;
                    if g.last_seq < self.from {
                        continue;
                    }
                    let records: Vec<Record> =
                        g.records.into_iter().filter(|r| r.seq >= self.from && r.seq < self.until).collect();
                    self.from = g.last_seq + 1;
                    return Ok(records);
                }
                Err(Invalid::Zero | Invalid::Truncated { .. }) => self.cursor = None, // end of this segment
                Err(why) => return Err(LogError::Gap(format!("seq {} unreadable at offset {at}: {why}", self.from))),
            }
        }
        Ok(Vec::new())
    }

    fn open_next(&mut self) -> Result<()> {
        let s = self.segments.get(self.next).ok_or_else(|| {
            LogError::Gap(format!("the log ends before seq {} (it was durable up to {})", self.from, self.until - 1))
        })?;
        self.cursor = Some((File::open(&s.path)?, segment::HEADER));
        self.next += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
