//! The log on real files: appends, rotation, reading back, torn ends and corruption.

use std::os::unix::fs::FileExt;

use super::*;

/// Small segments, so a few groups rotate.
const SEG: u64 = 2048;

fn rec(seq: u64, text: &str) -> Record {
    Record { seq, kind: (seq % 3) as u8, payload: format!("{seq}:{text}").into_bytes() }
}

/// Appends groups of `sizes` records to a log opened on `dir`; returns what it wrote.
fn write_groups(log: &mut CommitLog, sizes: &[usize]) -> Vec<Record> {
    let mut all = Vec::new();
    for &n in sizes {
        let first = log.next_seq();
        let group: Vec<Record> =
            (first..first + n as u64).map(|s| rec(s, "trade payload of a few dozen bytes")).collect();
        log.append(&group).unwrap();
        all.extend(group);
    }
    all
}

fn read_all(log: &CommitLog, from: u64) -> Vec<Record> {
    let mut reader = log.read_from(from);
    let mut out = Vec::new();
    loop {
        let batch = reader.next_records().unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    list(dir).unwrap().into_iter().map(|s| s.path).collect()
}

#[test]
fn appends_survive_reopening_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let Opened { mut log, torn } = CommitLog::open(dir.path(), SEG, 0).unwrap();
    assert_eq!((torn, log.next_seq()), (None, 1));
    let written = write_groups(&mut log, &[1, 5, 17, 3, 30, 1, 9, 30]);
    assert!(log.segment_count() > 3, "{} segments", log.segment_count());
    assert_eq!(read_all(&log, 1), written);
    drop(log);

    let Opened { mut log, torn } = CommitLog::open(dir.path(), SEG, 0).unwrap();
    assert_eq!(torn, None);
    assert_eq!(log.next_seq(), written.len() as u64 + 1);
    assert_eq!(read_all(&log, 1), written);
    assert_eq!(read_all(&log, 50), written[49..].to_vec(), "reading from the middle of a group");
    let more = write_groups(&mut log, &[2]);
    assert_eq!(read_all(&log, written.len() as u64 + 1), more);
    assert!(!dir.path().join(SPARE).exists() || segments(dir.path()).len() == log.segment_count());
}

#[test]
fn segments_are_removed_only_when_all_they_hold_is_through_the_given_seq() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = CommitLog::open(dir.path(), SEG, 0).unwrap().log;
    write_groups(&mut log, &[20, 20, 20, 20, 20]);
    let firsts: Vec<u64> = log.segments.iter().map(|s| s.first_seq).collect();
    assert!(firsts.len() >= 3, "{firsts:?}");
    assert_eq!(log.remove_through(firsts[1] - 2).unwrap(), 0, "segment 0 still holds seq {}", firsts[1] - 1);
    assert_eq!(log.remove_through(firsts[1] - 1).unwrap(), 1);
    assert_eq!(log.first_seq(), firsts[1]);
    assert_eq!(log.remove_through(u64::MAX - 1).unwrap(), firsts.len() - 2, "all but the active segment");
    assert_eq!(segments(dir.path()).len(), 1);
    assert_eq!(read_all(&log, *firsts.last().unwrap()).first().map(|r| r.seq), Some(*firsts.last().unwrap()));
}

/// The offset of the last group in the newest segment, and its length.
fn last_group(path: &Path) -> (u64, u64) {
    let file = File::open(path).unwrap();
    let mut groups = Groups::new(&file, segment::HEADER).unwrap();
    let mut last = None;
    loop {
        let at = groups.at;
        match groups.next_group().unwrap() {
            Ok(_) => last = Some((at, groups.at - at)),
            Err(_) => return last.unwrap(),
        }
    }
}

fn damage(path: &Path, at: u64, bytes: &[u8]) {
    OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, at).unwrap();
}

#[test]
fn a_torn_last_group_is_cut_off_and_the_log_goes_on_from_before_it() {
    // Every way a crash can leave the newest group: a prefix of it (the rest zeros,
    // as the segment was zero-filled), or its first sector missing with later ones
    // written (out-of-order sector writes on power loss).
    let (offset, len) = {
        let dir = tempfile::tempdir().unwrap();
        let mut log = CommitLog::open(dir.path(), 1 << 16, 0).unwrap().log;
        write_groups(&mut log, &[3, 4, 60]);
        last_group(segments(dir.path()).last().unwrap())
    };
    // (what, where, the bytes found there after the crash)
    let cuts: Vec<(&str, u64, Vec<u8>)> = vec![
        ("a prefix of 8 bytes", offset + 8, vec![0; len as usize - 8]),
        ("its last 16 bytes missing", offset + len - 16, vec![0; 16]),
        ("its first sector missing", offset, vec![0; 512]),
        // Not a crash, but the same picture: the newest group is bad and nothing
        // follows. Every WAL reads it as a tear (docs/durability.md says so).
        ("a middle byte flipped", offset + len / 2, vec![0xFF]),
    ];
    for (what, at, bytes) in cuts {
        let dir = tempfile::tempdir().unwrap();
        let mut log = CommitLog::open(dir.path(), 1 << 16, 0).unwrap().log;
        let written = write_groups(&mut log, &[3, 4, 60]);
        drop(log);
        let seg = segments(dir.path()).pop().unwrap();
        damage(&seg, at, &bytes);
        let Opened { mut log, torn } = CommitLog::open(dir.path(), 1 << 16, 0).unwrap();
        let torn = torn.unwrap_or_else(|| panic!("{what}: not reported"));
        assert_eq!(torn.offset, offset, "{what}");
        assert_eq!(read_all(&log, 1), written[..7].to_vec(), "{what}");
        assert_eq!(log.next_seq(), 8, "{what}: the torn group's seqs are handed out again");
        let again = write_groups(&mut log, &[2]);
        drop(log);
        let Opened { log, torn } = CommitLog::open(dir.path(), 1 << 16, 0).unwrap();
        assert_eq!(torn, None, "{what}: the cut end is clean");
        assert_eq!(read_all(&log, 8), again, "{what}");
    }
}

#[test]
fn a_damaged_group_with_valid_groups_after_it_is_corruption_and_the_log_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = CommitLog::open(dir.path(), 1 << 16, 0).unwrap().log;
    write_groups(&mut log, &[3, 4, 5]);
    drop(log);
    let seg = segments(dir.path()).pop().unwrap();
    let file = File::open(&seg).unwrap();
    let mut groups = Groups::new(&file, segment::HEADER).unwrap();
    groups.next_group().unwrap().unwrap();
    let second_at = groups.at;
    damage(&seg, second_at + 50, &[0x5A]);
    let err = CommitLog::open(dir.path(), 1 << 16, 0).err().expect("must refuse");
    assert!(matches!(&err, LogError::Corrupt { offset, .. } if *offset == second_at), "{err}");
    assert!(err.to_string().contains("valid group follows"), "{err}");
}

#[test]
fn a_damaged_group_in_an_older_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = CommitLog::open(dir.path(), SEG, 0).unwrap().log;
    write_groups(&mut log, &[20, 20, 20, 20]);
    drop(log);
    let first = segments(dir.path()).remove(0);
    let (offset, len) = last_group(&first);
    damage(&first, offset + len / 2, &[0x00, 0x11]);
    let err = CommitLog::open(dir.path(), SEG, 0).err().expect("must refuse");
    assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
}

#[test]
fn a_log_behind_duckdb_restarts_after_it_and_a_log_ahead_with_a_hole_is_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = CommitLog::open(dir.path(), SEG, 0).unwrap().log;
    write_groups(&mut log, &[20, 20, 20]);
    drop(log);
    // DuckDB already holds everything up to 100: the log has nothing it needs.
    let Opened { mut log, torn } = CommitLog::open(dir.path(), SEG, 100).unwrap();
    assert_eq!((torn, log.next_seq(), log.segment_count()), (None, 101, 1));
    assert_eq!(write_groups(&mut log, &[1])[0].seq, 101);
    drop(log);
    // A store whose DuckDB is at 50 cannot use a log that starts at 101.
    let err = CommitLog::open(dir.path(), SEG, 50).err().expect("a gap");
    assert!(matches!(err, LogError::Gap(_)), "{err}");
    // An empty directory starts after what DuckDB holds.
    let fresh = tempfile::tempdir().unwrap();
    assert_eq!(CommitLog::open(fresh.path(), SEG, 7).unwrap().log.next_seq(), 8);
}

#[test]
fn a_group_larger_than_a_segment_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = CommitLog::open(dir.path(), SEG, 0).unwrap().log;
    let big = vec![Record { seq: 1, kind: 0, payload: vec![b'x'; SEG as usize] }];
    assert!(matches!(log.append(&big), Err(LogError::TooLarge { .. })));
    assert_eq!(log.next_seq(), 1);
    write_groups(&mut log, &[1]);
    assert_eq!(read_all(&log, 1).len(), 1);
}

#[test]
fn the_span_says_what_the_log_holds_and_how_far_an_emptied_log_had_come() {
    let dir = tempfile::tempdir().unwrap();
    let Opened { mut log, .. } = CommitLog::open(dir.path(), SEG, 0).unwrap();
    assert_eq!(verify(dir.path()).unwrap().span(), Some((0, 0)), "a new log: nothing yet");
    write_groups(&mut log, &[5, 17, 30, 9, 30]);
    assert_eq!(verify(dir.path()).unwrap().span(), Some((0, 91)));
    log.remove_through(40).unwrap();
    let (after, to) = verify(dir.path()).unwrap().span().unwrap();
    assert!(after > 0 && after <= 40 && to == 91, "trimmed to ({after}, {to}]");
    drop(log);

    // DuckDB is past everything the log held: it restarts empty after seq 100.
    let Opened { log, .. } = CommitLog::open(dir.path(), SEG, 100).unwrap();
    drop(log);
    assert_eq!(verify(dir.path()).unwrap().span(), Some((100, 100)), "an empty log still says seq 100 existed");
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(verify(empty.path()).unwrap().span(), None);
}
