//! The unit the log writes, flushes and checks: a group of records.
//!
//! A group is what one flush makes durable, so it is also what a crash can tear: it
//! carries one CRC over all of it, and a reader takes a group whole or not at all.
//! That makes a batch that is written in one group all-or-nothing by construction.
//!
//! Layout (little-endian, every group 8-byte aligned and padded to 8):
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | magic `TSGR` |
//! | 4 | 4 | group length in bytes, header and padding included |
//! | 8 | 4 | CRC-32C of bytes 0..8 and 12..length |
//! | 12 | 2 | format version (1) |
//! | 14 | 2 | reserved (0) |
//! | 16 | 4 | record count |
//! | 20 | 4 | reserved (0) |
//! | 24 | 8 | first `seq` |
//! | 32 | 8 | last `seq` |
//! | 40 | … | records: `seq` u64, payload length u32, kind u8, 3 reserved bytes, payload, padding to 8 |

pub(crate) const MAGIC: [u8; 4] = *b"TSGR";
pub(crate) const VERSION: u16 = 1;
pub(crate) const HEADER: usize = 40;
const RECORD_HEADER: usize = 16;

/// One change in the log: its `seq`, what kind of change it is (the caller's code),
/// and the caller's encoding of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// A decoded group: where its records' `seq`s start and end, and the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: Vec<Record>,
}

/// Why bytes are not a group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("no group here (bytes are zero)")]
    Zero,
    #[error("bad magic {0:02x?}")]
    Magic([u8; 4]),
    #[error("length {0} is not a group length")]
    Length(usize),
    #[error("group of {needed} bytes runs past the end of the data ({available} bytes)")]
    Truncated { needed: usize, available: usize },
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("format version {0} is not one this build reads")]
    Version(u16),
    #[error("records do not match the header: {0}")]
    Records(&'static str),
}

fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// The bytes `records` take as one group.
pub fn encoded_len<'a>(records: impl IntoIterator<Item = &'a Record>) -> usize {
    HEADER + records.into_iter().map(|r| pad8(RECORD_HEADER + r.payload.len())).sum::<usize>()
}

/// Appends `records` (non-empty, consecutive `seq`s) to `out` as one group.
pub fn encode(records: &[Record], out: &mut Vec<u8>) {
    assert!(!records.is_empty(), "a group holds at least one record");
    let start = out.len();
    let len = encoded_len(records);
    out.reserve(len);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // CRC, filled in below
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 2]);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&records[0].seq.to_le_bytes());
    out.extend_from_slice(&records[records.len() - 1].seq.to_le_bytes());
    for r in records {
        out.extend_from_slice(&r.seq.to_le_bytes());
        out.extend_from_slice(&(r.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&[r.kind, 0, 0, 0]);
        out.extend_from_slice(&r.payload);
        out.resize(start + pad8(out.len() - start), 0);
    }
    debug_assert_eq!(out.len() - start, len);
    let crc = checksum(&out[start..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(group: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&group[..8]), &group[12..])
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The length a group starting at `bytes` declares, if its fixed header looks like
/// one (magic and a plausible length); says nothing about its checksum.
pub fn declared_len(bytes: &[u8]) -> Result<usize, Invalid> {
    if bytes.len() < 8 {
        return Err(Invalid::Truncated { needed: 8, available: bytes.len() });
    }
    if bytes[..8].iter().all(|&b| b == 0) {
        return Err(Invalid::Zero);
    }
    let magic: [u8; 4] = bytes[..4].try_into().expect("4 bytes");
    if magic != MAGIC {
        return Err(Invalid::Magic(magic));
    }
    let len = u32_at(bytes, 4) as usize;
    if len < HEADER + RECORD_HEADER || !len.is_multiple_of(8) {
        return Err(Invalid::Length(len));
    }
    Ok(len)
}

/// Decodes the group at the start of `bytes`; returns it and its length.
pub fn decode(bytes: &[u8]) -> Result<(Group, usize), Invalid> {
    let len = declared_len(bytes)?;
    if bytes.len() < len {
        return Err(Invalid::Truncated { needed: len, available: bytes.len() });
    }
    let g = &bytes[..len];
    let (stored, computed) = (u32_at(g, 8), checksum(g));
    if stored != computed {
        return Err(Invalid::Checksum { stored, computed });
    }
    let version = u16_at(g, 12);
    if version != VERSION {
        return Err(Invalid::Version(version));
    }
    let group = records(g)?;
    Ok((group, len))
}

/// The records of a checksummed group, held to its header.
fn records(g: &[u8]) -> Result<Group, Invalid> {
    let (count, first_seq, last_seq) = (u32_at(g, 16) as usize, u64_at(g, 24), u64_at(g, 32));
    let mut records = Vec::with_capacity(count.min(g.len() / RECORD_HEADER));
    let mut at = HEADER;
    while at < g.len() {
        if at + RECORD_HEADER > g.len() {
            return Err(Invalid::Records("a record header runs past the group"));
        }
        let (seq, n, kind) = (u64_at(g, at), u32_at(g, at + 8) as usize, g[at + 12]);
        let end = at + RECORD_HEADER + n;
        if end > g.len() {
            return Err(Invalid::Records("a payload runs past the group"));
        }
        if seq != first_seq + records.len() as u64 {
            return Err(Invalid::Records("seqs are not consecutive from the first"));
        }
        records.push(Record { seq, kind, payload: g[at + RECORD_HEADER..end].to_vec() });
        at = pad8(end);
    }
    if records.len() != count || records.last().map(|r| r.seq) != Some(last_seq) {
        return Err(Invalid::Records("count or last seq differ from the header"));
    }
    Ok(Group { first_seq, last_seq, records })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn records(first: u64, payloads: &[&[u8]]) -> Vec<Record> {
        payloads
            .iter()
            .enumerate()
            .map(|(i, p)| Record { seq: first + i as u64, kind: i as u8, payload: p.to_vec() })
            .collect()
    }

    #[test]
    fn a_group_reads_back_as_written() {
        let rs = records(7, &[b"{\"a\":1}", b"", b"0123456789abcdef0"]);
        let mut buf = vec![0xAA; 3]; // a group can follow other bytes
        encode(&rs, &mut buf);
        assert_eq!(buf.len(), 3 + encoded_len(&rs));
        assert_eq!((buf.len() - 3) % 8, 0);
        let (g, len) = decode(&buf[3..]).unwrap();
        assert_eq!(len, buf.len() - 3);
        assert_eq!((g.first_seq, g.last_seq, g.records), (7, 9, rs));
    }

    #[test]
    fn every_single_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        encode(&records(1, &[b"trade one", b"trade two"]), &mut buf);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                assert!(decode(&bad).is_err(), "flip of bit {bit} in byte {byte} not detected");
            }
        }
    }

    #[test]
    fn a_cut_group_is_truncated_and_zeros_are_no_group() {
        let mut buf = Vec::new();
        encode(&records(1, &[b"x".as_slice(); 3]), &mut buf);
        for cut in 8..buf.len() {
            assert!(matches!(decode(&buf[..cut]), Err(Invalid::Truncated { .. })), "cut at {cut}");
        }
        assert_eq!(decode(&[0; 64]), Err(Invalid::Zero));
    }

    proptest! {
        #[test]
        fn any_records_round_trip(first in 1u64..u64::MAX / 2, payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..20)) {
            let rs: Vec<Record> = payloads.into_iter().enumerate()
                .map(|(i, payload)| Record { seq: first + i as u64, kind: (i % 4) as u8, payload }).collect();
            let mut buf = Vec::new();
            encode(&rs, &mut buf);
            let (g, len) = decode(&buf).unwrap();
            prop_assert_eq!(len, buf.len());
            prop_assert_eq!(g.records, rs);
        }
    }
}
