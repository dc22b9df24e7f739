//! A segment: one file of the log, zero-filled to its full size before its first group.
//!
//! Filling a segment with zeros up front (as PostgreSQL does with its WAL segments)
//! means an append later changes no metadata — the file does not grow and has no
//! unwritten extents to convert — so `fdatasync` costs one data flush. It also gives
//! the scan a clean end: after the last group, only zeros.
//!
//! Header (32 bytes): magic `TSLOGSEG`, format version u16, 2 reserved bytes, CRC-32C
//! of bytes 0..12 and 16..32, the first `seq` the segment holds (u64), the creation
//! time (µs since the epoch, i64). The file is named after its first `seq`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::group::{self, Group, Invalid};

pub(crate) const MAGIC: [u8; 8] = *b"TSLOGSEG";
pub(crate) const HEADER: u64 = 32;
const VERSION: u16 = 1;
/// Bytes read at a time when scanning.
const CHUNK: usize = 1 << 20;

/// The file name of the segment whose first record is `first_seq`.
pub(crate) fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

/// The first `seq` a segment file name stands for.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

fn header(first_seq: u64, created_micros: i64) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_seq.to_le_bytes());
    h[24..32].copy_from_slice(&created_micros.to_le_bytes());
    let crc = header_crc(&h);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

fn header_crc(h: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&h[..12]), &h[16..32])
}

/// Creates a zero-filled file of `size` bytes at `path` (a spare, not yet a segment).
/// On failure (a full disk) the partial file is removed: it would hold on to the
/// space the database's own writes need.
pub(crate) fn zero_filled(path: &Path, size: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).create_new(true).open(path)?;
    let filled = write_zeros(&file, 0, size).and_then(|()| file.sync_all());
    if filled.is_err() {
        let _ = std::fs::remove_file(path);
    }
    filled
}

fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    let zeros = vec![0u8; CHUNK];
    let mut at = from;
    while at < to {
        let n = (to - at).min(CHUNK as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Turns the zero-filled spare at `spare` into the segment starting at `first_seq` in
/// `dir`: header written and flushed, then renamed into place and the directory
/// flushed, so after a crash the segment either exists whole or not at all.
pub(crate) fn install(spare: &Path, dir: &Path, first_seq: u64, created_micros: i64) -> io::Result<PathBuf> {
    let file = OpenOptions::new().write(true).open(spare)?;
    file.write_all_at(&header(first_seq, created_micros), 0)?;
    file.sync_data()?;
    let path = dir.join(file_name(first_seq));
    std::fs::rename(spare, &path)?;
    sync_dir(dir)?;
    Ok(path)
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What a segment's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub first_seq: u64,
    pub created_micros: i64,
}

pub(crate) fn read_header(file: &File) -> Result<Header, String> {
    let mut h = [0u8; HEADER as usize];
    file.read_exact_at(&mut h, 0).map_err(|e| format!("cannot read the segment header: {e}"))?;
    if h[..8] != MAGIC {
        return Err(format!("not a log segment (magic {:02x?})", &h[..8]));
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    if version != VERSION {
        return Err(format!("segment format version {version} is not one this build reads"));
    }
    let stored = u32::from_le_bytes(h[12..16].try_into().expect("4 bytes"));
    if stored != header_crc(&h) {
        return Err("segment header checksum mismatch".into());
    }
    Ok(Header {
        first_seq: u64::from_le_bytes(h[16..24].try_into().expect("8 bytes")),
        created_micros: i64::from_le_bytes(h[24..32].try_into().expect("8 bytes")),
    })
}

/// Reads groups from a segment in order, from `at`.
pub(crate) struct Groups<'a> {
    file: &'a File,
    len: u64,
    pub at: u64,
    buf: Vec<u8>,
}

impl<'a> Groups<'a> {
    pub fn new(file: &'a File, at: u64) -> io::Result<Groups<'a>> {
        Ok(Groups { file, len: file.metadata()?.len(), at, buf: Vec::new() })
    }

    /// The group at the current position, or why there is none; advances past it.
    pub fn next_group(&mut self) -> io::Result<Result<Group, Invalid>> {
        let head = self.read(group::HEADER)?;
        let len = match group::declared_len(head) {
            Ok(len) => len,
            Err(e) => return Ok(Err(e)),
        };
        let bytes = self.read(len)?;
        let decoded = group::decode(bytes);
        if let Ok((_, n)) = &decoded {
            self.at += *n as u64;
        }
        Ok(decoded.map(|(g, _)| g))
    }

    /// Up to `n` bytes at the current position (fewer at the end of the file).
    fn read(&mut self, n: usize) -> io::Result<&[u8]> {
        let n = n.min(self.len.saturating_sub(self.at) as usize);
        self.buf.resize(n, 0);
        self.file.read_exact_at(&mut self.buf, self.at)?;
        Ok(&self.buf)
    }

    /// Whether any valid group starts at an 8-aligned offset after `from`: tells a
    /// damaged group followed by good ones (corruption) from a torn end.
    ///
    /// It reads a chunk at a time and decodes only where the magic is: reading 40 bytes
    /// at every offset, the rest of a 64 MiB segment after a damaged group took 1.9 s,
    /// nearly all of the 2 s a restart may take (docs/benchmarks.md, session 15).
    pub fn any_valid_after(&mut self, from: u64) -> io::Result<Option<u64>> {
        let mut at = (from / 8 + 1) * 8;
        while at + group::HEADER as u64 <= self.len {
            self.at = at;
            let chunk = self.read(CHUNK)?;
            let scanned = chunk.len() as u64 / 8 * 8;
            let magic = (0..chunk.len().saturating_sub(3)).step_by(8).find(|&i| chunk[i..i + 4] == group::MAGIC);
            let Some(i) = magic else {
                at += scanned.max(8);
                continue;
            };
            let candidate = at + i as u64;
            self.at = candidate;
            if self.next_group()?.is_ok() {
                return Ok(Some(candidate));
            }
            at = candidate + 8;
        }
        Ok(None)
    }

    /// Whether every byte from `from` to the end of the file is zero.
    pub fn zeros_from(&mut self, from: u64) -> io::Result<bool> {
        self.at = from;
        while self.at < self.len {
            let chunk = self.read(CHUNK)?;
            // An OR over each 4 KiB block, which the compiler vectorizes, rather than a
            // search that may stop at any byte: an opened segment is mostly zeros, and
            // this scan was a tenth of a restart's CPU (docs/benchmarks.md, session 15).
            if chunk.chunks(4096).any(|block| block.iter().fold(0, |acc, &b| acc | b) != 0) {
                return Ok(false);
            }
            self.at += chunk.len() as u64;
        }
        Ok(true)
    }
}

/// Overwrites `from..len` with zeros and flushes: a torn end becomes a clean one.
pub(crate) fn zero_tail(file: &File, from: u64) -> io::Result<()> {
    write_zeros(file, from, file.metadata()?.len())?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_first_seq_and_parse_back() {
        assert_eq!(file_name(42), "00000000000000000042.seg");
        assert_eq!(parse_name(&file_name(u64::MAX)), Some(u64::MAX));
        for bad in ["42.seg", "0000000000000000004x.seg", "00000000000000000042.tmp", ""] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
        assert!(file_name(9) < file_name(10));
    }

    #[test]
    fn an_installed_segment_has_a_checked_header() {
        let dir = tempfile::tempdir().unwrap();
        let spare = dir.path().join("spare.tmp");
        zero_filled(&spare, 4096).unwrap();
        let path = install(&spare, dir.path(), 17, 1_700_000_000_000_000).unwrap();
        assert!(!spare.exists());
        let file = File::open(&path).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 4096);
        assert_eq!(read_header(&file).unwrap(), Header { first_seq: 17, created_micros: 1_700_000_000_000_000 });
        let bad = OpenOptions::new().write(true).open(&path).unwrap();
        bad.write_all_at(&[18], 16).unwrap();
        assert!(read_header(&File::open(&path).unwrap()).unwrap_err().contains("checksum"));
    }
}
