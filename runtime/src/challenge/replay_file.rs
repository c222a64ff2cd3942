//! The embedded mode's replay record kept across restarts: every session remembered
//! ([`super::replay`]) is appended to `<data dir>/replay-record.jsonl`, every subject deleted
//! too, and the record is read back at start-up. Without it a restart (a rollout, an OOM kill)
//! forgot the accepted sessions of the last day, and a recording of one of them passed again.
//!
//! Each line is one event: a session remembered for a subject (when, and its fingerprints sealed
//! with the template key, bound to the subject and the session as PostgreSQL's rows are), or a
//! subject forgotten. Appends are synced before the verification's answer goes out. At
//! start-up, after [`COMPACT_AFTER`] appends and when a subject is deleted (its entries leave
//! the disk at once), the file is rewritten with what the record holds (atomically,
//! owner-only), so it stays within the record's bounds. An append that fails is cut off again
//! (or the next write rewrites the whole file), so no fragment joins the next line. A last line
//! cut short by a crash is skipped; any other line that does not read stops the start-up naming
//! the file; an entry sealed with a key retired since is skipped and logged. A write that fails
//! is logged on `facekey::security` and counted in `facekey_replay_record_writes_failed_total`:
//! the record holds in memory until a restart.

use crate::private_file::epoch_ms;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use prometheus::IntCounter;
use serde::{Deserialize, Serialize};

use super::fingerprint::Fingerprint;
use super::replay::{RECORDED_SESSIONS, ReplayRecord};
use super::sealing;
use crate::store::cipher::{NONCE_LEN, Sealed, TemplateKeys};

/// The file's name in the data directory.
pub const FILE_NAME: &str = "replay-record.jsonl";

/// Appends after which the file is rewritten with what the record holds: twice the record's
/// bound, so the file is at most about three times the record (some 70 MB at the bound).
pub const COMPACT_AFTER: usize = 2 * RECORDED_SESSIONS;

/// Longest line read back: a session's entry is about 22 KB.
const MAX_LINE: u64 = 64 * 1024;

/// A journal that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error(
    "the replay record {path} cannot be read ({reason}); it holds the sessions accepted before \
     the restart, against replays. Repair it, or delete it to start with an empty record"
)]
pub struct ReplayFileError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

/// One line of the journal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Event {
    /// `session` was remembered for `subject` at `at_ms` (milliseconds since the Unix epoch).
    Remembered {
        subject: String,
        session: String,
        at_ms: u64,
        key_id: String,
        /// Base64 of the nonce.
        nonce: String,
        /// Base64 of the sealed fingerprints.
        sealed: String,
    },
    /// Every session of `subject` was forgotten (the subject was deleted).
    Forgotten { subject: String },
}

/// The embedded mode's journal of the replay record (see the module documentation).
pub struct ReplayJournal {
    path: PathBuf,
    /// Open for appending; `None` when it could not be opened again after a rewrite, or an
    /// append could not be cut off: the next write rewrites the whole file first.
    file: Option<File>,
    keys: TemplateKeys,
    appended: usize,
    failed_writes: IntCounter,
}

impl std::fmt::Debug for ReplayJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayJournal")
            .field("path", &self.path)
            .field("appended", &self.appended)
            .finish_non_exhaustive()
    }
}

impl ReplayJournal {
    /// The journal of `dir` (the data directory) and the record it holds, sessions remembered
    /// within `window` only (none with a zero window: the check is off, and the file is
    /// emptied). The file is rewritten with that record before it is appended to; a file that
    /// cannot be written then is tried again at the next write (a read-only data directory
    /// still serves).
    pub fn open(
        dir: &Path,
        keys: TemplateKeys,
        window: Duration,
        failed_writes: IntCounter,
    ) -> Result<(Self, ReplayRecord), ReplayFileError> {
        let path = dir.join(FILE_NAME);
        let fail = |reason: String| ReplayFileError {
            path: path.clone(),
            reason,
        };
        let mut record = ReplayRecord::default();
        if !window.is_zero() {
            match File::open(&path) {
                Ok(file) => read_into(&mut record, file, &keys, window, &path)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(fail(e.to_string())),
            }
        }
        let mut journal = Self {
            path,
            file: None,
            keys,
            appended: 0,
            failed_writes,
        };
        // Rewritten before it is appended to. A data directory that cannot be written (a full
        // or read-only disk) does not stop the start-up: the record read back holds in memory,
        // and each later write tries the rewrite again (and is counted when it fails).
        journal.compact(&record);
        if !record.is_empty() {
            tracing::info!(
                target: "facekey::security",
                file = %journal.path.display(),
                sessions = record.len(),
                "accepted sessions kept across the restart, against replays"
            );
        }
        Ok((journal, record))
    }

    /// Appends that `session` was remembered for each of `subjects` now, with its `prints`;
    /// then rewrites the file from `record` (which holds it) once [`COMPACT_AFTER`] appends
    /// have gone by.
    pub fn remembered(
        &mut self,
        subjects: &[&str],
        session: &str,
        prints: &[Fingerprint],
        record: &ReplayRecord,
    ) {
        let at_ms = epoch_ms(SystemTime::now());
        let mut lines = String::new();
        for subject in subjects {
            let sealed = match sealing::seal_prints(&self.keys, subject, session, prints) {
                Ok(sealed) => sealed,
                Err(e) => return self.failed(&e.to_string()),
            };
            let event = Event::Remembered {
                subject: (*subject).to_owned(),
                session: session.to_owned(),
                at_ms,
                key_id: sealed.key_id,
                nonce: BASE64.encode(sealed.nonce),
                sealed: BASE64.encode(&sealed.ciphertext),
            };
            match serde_json::to_string(&event) {
                Ok(line) => {
                    lines.push_str(&line);
                    lines.push('\n');
                }
                Err(e) => return self.failed(&e.to_string()),
            }
        }
        self.append(&lines, subjects.len(), record);
    }

    /// Records that every session of `subject` was forgotten (`record` no longer holds them):
    /// the file is rewritten, so a deleted subject's entries leave the disk at once (deletions
    /// are rare); if that fails, the event is appended instead.
    pub fn forgotten(&mut self, subject: &str, record: &ReplayRecord) {
        if self.compact(record) {
            return;
        }
        let event = Event::Forgotten {
            subject: subject.to_owned(),
        };
        match serde_json::to_string(&event) {
            Ok(line) => self.append(&format!("{line}\n"), 1, record),
            Err(e) => self.failed(&e.to_string()),
        }
    }

    /// Appends `lines` (`events` of them), synced. A file that could not be cut back after a
    /// failed append, or opened again after a rewrite, is rewritten from `record` (which holds
    /// the events) instead; every [`COMPACT_AFTER`] appends too.
    fn append(&mut self, lines: &str, events: usize, record: &ReplayRecord) {
        let Some(file) = self.file.as_mut() else {
            self.compact(record);
            return;
        };
        let before = file.metadata().map(|m| m.len());
        let written = file
            .write_all(lines.as_bytes())
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            // A part written (a disk filling up) is cut off, so the next append starts a line
            // of its own; if it cannot be, the next write rewrites the whole file.
            let cut = before.and_then(|len| file.set_len(len).and_then(|()| file.sync_data()));
            if cut.is_err() {
                self.file = None;
            }
            return self.failed(&e.to_string());
        }
        self.appended += events;
        if self.appended >= COMPACT_AFTER {
            self.compact(record);
        }
    }

    /// Rewrites the file with what `record` holds; whether it was. After a failure the next
    /// rewrite waits for half the appends again, rather than being tried on every one.
    fn compact(&mut self, record: &ReplayRecord) -> bool {
        let rewritten = journal_text(record, &self.keys, SystemTime::now(), Instant::now())
            .and_then(|text| {
                crate::private_file::replace(&self.path, &text).map_err(|e| e.to_string())
            })
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&self.path)
                    .map_err(|e| e.to_string())
            });
        match rewritten {
            Ok(file) => {
                self.file = Some(file);
                self.appended = 0;
                true
            }
            Err(e) => {
                self.appended = COMPACT_AFTER / 2;
                self.failed_writes.inc();
                tracing::warn!(
                    target: "facekey::security",
                    file = %self.path.display(),
                    error = %e,
                    "the replay record could not be rewritten; it is tried again later"
                );
                false
            }
        }
    }

    fn failed(&self, error: &str) {
        self.failed_writes.inc();
        tracing::warn!(
            target: "facekey::security",
            file = %self.path.display(),
            error,
            "the replay record could not be written: it holds in memory until this replica \
             restarts, not after"
        );
    }
}

/// Reads the journal `file` into `record`: sessions remembered within `window` of now.
fn read_into(
    record: &mut ReplayRecord,
    file: File,
    keys: &TemplateKeys,
    window: Duration,
    path: &Path,
) -> Result<(), ReplayFileError> {
    let fail = |reason: String| ReplayFileError {
        path: path.to_owned(),
        reason,
    };
    let (now_wall, now) = (epoch_ms(SystemTime::now()), Instant::now());
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    let mut number = 0usize;
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE)
            .read_line(&mut line)
            .map_err(|e| fail(e.to_string()))?;
        if n == 0 {
            // Each line was taken at its own time, as the record took it then; what is older
            // than the window as of now goes.
            record.sweep(window, now);
            return Ok(());
        }
        number += 1;
        if n as u64 >= MAX_LINE && !line.ends_with('\n') {
            return Err(fail(format!(
                "line {number} is longer than {MAX_LINE} bytes"
            )));
        }
        if !line.ends_with('\n') {
            tracing::warn!(
                file = %path.display(),
                line = number,
                "the replay record's last line was cut short (a crash while it was written); skipped"
            );
            return Ok(());
        }
        let event: Event = serde_json::from_str(line.trim_end())
            .map_err(|e| fail(format!("line {number}: {e}")))?;
        match event {
            Event::Forgotten { subject } => {
                record.forget(&subject);
            }
            Event::Remembered {
                subject,
                session,
                at_ms,
                key_id,
                nonce,
                sealed,
            } => {
                let age = Duration::from_millis(now_wall.saturating_sub(at_ms));
                if age >= window {
                    continue;
                }
                let Some(at) = now.checked_sub(age) else {
                    continue;
                };
                let opened = open_event(keys, &subject, &session, key_id, &nonce, &sealed);
                match opened {
                    Ok(prints) => record.remember(&subject, &session, prints, window, at),
                    Err(e) => tracing::warn!(
                        target: "facekey::security",
                        file = %path.display(),
                        line = number,
                        subject = %subject,
                        error = %e,
                        "an entry of the replay record cannot be opened and is not compared"
                    ),
                }
            }
        }
    }
}

/// The fingerprints of one `remembered` event.
fn open_event(
    keys: &TemplateKeys,
    subject: &str,
    session: &str,
    key_id: String,
    nonce: &str,
    sealed: &str,
) -> Result<Vec<Fingerprint>, String> {
    let nonce = BASE64.decode(nonce).map_err(|e| e.to_string())?;
    let sealed = Sealed {
        key_id,
        nonce: <[u8; NONCE_LEN]>::try_from(nonce).map_err(|_| "malformed nonce".to_owned())?,
        ciphertext: BASE64.decode(sealed).map_err(|e| e.to_string())?,
    };
    sealing::open_prints(keys, subject, session, &sealed)
}

/// The journal holding what `record` holds: each session remembered, oldest first per subject,
/// at its wall-clock time (`now_wall` at `now`), sealed again with the current key.
fn journal_text(
    record: &ReplayRecord,
    keys: &TemplateKeys,
    now_wall: SystemTime,
    now: Instant,
) -> Result<String, String> {
    let mut text = String::new();
    for (subject, at, accepted) in record.entries() {
        let when = now_wall
            .checked_sub(now.saturating_duration_since(at))
            .unwrap_or(UNIX_EPOCH);
        let sealed = sealing::seal_prints(keys, subject, &accepted.session, &accepted.prints)
            .map_err(|e| e.to_string())?;
        let event = Event::Remembered {
            subject: subject.to_owned(),
            session: accepted.session.clone(),
            at_ms: epoch_ms(when),
            key_id: sealed.key_id,
            nonce: BASE64.encode(sealed.nonce),
            sealed: BASE64.encode(&sealed.ciphertext),
        };
        text.push_str(&serde_json::to_string(&event).map_err(|e| e.to_string())?);
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::challenge::replay::{Compared, nearest_replay};

    const DAY: Duration = Duration::from_secs(86_400);

    fn keys(id: &str) -> TemplateKeys {
        let line = format!("{id}:{}", "cd".repeat(32));
        TemplateKeys::parse(&line, Path::new("k")).unwrap()
    }

    fn counter() -> IntCounter {
        IntCounter::new("failed_writes", "test").unwrap()
    }

    fn recording(from: usize) -> Vec<Fingerprint> {
        (from..from + 4)
            .map(|k| {
                let cells: Vec<u8> = (0..256).map(|i| ((i + k * 7) % 256) as u8).collect();
                Fingerprint::try_from(cells).unwrap()
            })
            .collect()
    }

    fn open(dir: &Path) -> (ReplayJournal, ReplayRecord) {
        ReplayJournal::open(dir, keys("k1"), DAY, counter()).unwrap()
    }

    /// Remembers `session` for `subjects` as the registry does: in the record, then the journal
    /// (its caller compared it with every session remembered: the same recording each time).
    fn remember(j: &mut ReplayJournal, r: &mut ReplayRecord, subjects: &[&str], session: &str) {
        let checked: Vec<Compared> = subjects
            .iter()
            .map(|s| Compared {
                subject: (*s).to_owned(),
                sessions: r
                    .accepted(s, DAY, Instant::now())
                    .into_iter()
                    .map(|a| a.session)
                    .collect(),
            })
            .collect();
        let prints = recording(0);
        assert_eq!(
            r.remember_unless_replayed(&checked, session, prints.clone(), DAY, Instant::now()),
            None
        );
        j.remembered(subjects, session, &prints, r);
    }

    #[test]
    fn remembered_sessions_and_forgotten_subjects_outlive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, mut r) = open(dir.path());
        remember(&mut j, &mut r, &["alice", "alice-twin"], "s1");
        remember(&mut j, &mut r, &["bob"], "s2");
        r.forget("bob");
        j.forgotten("bob", &r);
        // Rewritten at the deletion: bob's entry left the disk at once.
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(!text.contains("\"bob\""), "{text}");
        drop(j);

        let (_, mut again) = open(dir.path());
        let now = Instant::now();
        let earlier = again.accepted("alice", DAY, now);
        assert_eq!(earlier.len(), 1);
        assert_eq!(earlier[0].session, "s1");
        assert!(nearest_replay(&recording(0), &earlier).is_some());
        assert_eq!(again.accepted("alice-twin", DAY, now).len(), 1);
        assert!(again.accepted("bob", DAY, now).is_empty(), "forgotten");
        // Sealed: the fingerprints are ramps of consecutive grey levels; no 16 of them in a row
        // are in any entry's sealed bytes.
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        for line in text.lines() {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            let sealed = BASE64
                .decode(event["remembered"]["sealed"].as_str().unwrap())
                .unwrap();
            assert!(sealed.len() >= 4 * 256, "every frame's bytes are there");
            assert!(
                !sealed
                    .windows(16)
                    .any(|w| w.windows(2).all(|p| p[1] == p[0].wrapping_add(1))),
                "a fingerprint in clear"
            );
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn sessions_past_the_window_and_of_retired_keys_are_not_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, mut r) = open(dir.path());
        remember(&mut j, &mut r, &["alice"], "s1");
        drop(j);
        let path = dir.path().join(FILE_NAME);
        // Two days old.
        let mut event: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim_end()).unwrap();
        event["remembered"]["at_ms"] = (epoch_ms(SystemTime::now()) - 2 * 86_400_000).into();
        let old = format!("{event}\n");
        std::fs::write(&path, old).unwrap();
        let (_, again) = open(dir.path());
        assert!(again.is_empty(), "past the window");

        let (mut j, mut r) = open(dir.path());
        remember(&mut j, &mut r, &["alice"], "s2");
        drop(j);
        let (_, other_key) = ReplayJournal::open(dir.path(), keys("k2"), DAY, counter()).unwrap();
        assert!(
            other_key.is_empty(),
            "sealed with a key this replica does not hold"
        );
    }

    #[test]
    fn a_line_cut_short_is_skipped_and_a_damaged_one_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, mut r) = open(dir.path());
        remember(&mut j, &mut r, &["alice"], "s1");
        drop(j);
        let path = dir.path().join(FILE_NAME);
        let whole = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{whole}{{\"remembered\":{{\"subj")).unwrap();
        let (_, again) = open(dir.path());
        assert_eq!(again.len(), 1);
        std::fs::write(&path, format!("not json\n{whole}")).unwrap();
        let Err(e) = ReplayJournal::open(dir.path(), keys("k1"), DAY, counter()) else {
            panic!("opened");
        };
        assert!(e.to_string().contains(FILE_NAME), "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn the_file_is_rewritten_within_the_records_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, mut r) = open(dir.path());
        for i in 0..COMPACT_AFTER + 10 {
            remember(&mut j, &mut r, &["alice"], &format!("s{i}"));
        }
        let lines = std::fs::read_to_string(dir.path().join(FILE_NAME))
            .unwrap()
            .lines()
            .count();
        // Rewritten at COMPACT_AFTER with the subject's latest 8, then 10 more appended.
        assert_eq!(lines, crate::challenge::replay::SESSIONS_PER_SUBJECT + 10);
        drop(j);
        let (_, again) = open(dir.path());
        assert_eq!(
            again.len(),
            crate::challenge::replay::SESSIONS_PER_SUBJECT,
            "the latest sessions"
        );
    }

    #[test]
    fn a_failed_write_is_counted_and_the_record_holds() {
        let dir = tempfile::tempdir().unwrap();
        let failed = counter();
        let (mut j, mut r) =
            ReplayJournal::open(dir.path(), keys("k1"), DAY, failed.clone()).unwrap();
        // The journal's file replaced by a directory: the rewrite at the bound fails, and is
        // not tried again at the next append.
        j.appended = COMPACT_AFTER - 1;
        std::fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        std::fs::create_dir(dir.path().join(FILE_NAME)).unwrap();
        remember(&mut j, &mut r, &["alice"], "s1");
        assert_eq!(failed.get(), 1);
        assert_eq!(r.len(), 1);
        remember(&mut j, &mut r, &["alice"], "s2");
        assert_eq!(failed.get(), 1, "backed off");
    }

    #[test]
    fn a_zero_window_reads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, mut r) = open(dir.path());
        remember(&mut j, &mut r, &["alice"], "s1");
        drop(j);
        let (_, off) =
            ReplayJournal::open(dir.path(), keys("k1"), Duration::ZERO, counter()).unwrap();
        assert!(off.is_empty());
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(),
            ""
        );
    }

    #[test]
    fn a_file_left_with_a_fragment_is_rewritten_before_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, mut r) = open(dir.path());
        remember(&mut j, &mut r, &["alice"], "s1");
        // An append that failed part way and could not be cut back (the disk full): the
        // fragment stays, and the journal gives up its handle.
        let path = dir.path().join(FILE_NAME);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"{\"remembered\":{\"subj").unwrap();
        j.file = None;
        remember(&mut j, &mut r, &["alice"], "s2");
        drop(j);
        // The next write rewrote the whole file: both sessions, no fragment.
        let (_, again) = open(dir.path());
        assert_eq!(again.len(), 2);
    }

    #[test]
    fn a_line_longer_than_any_entry_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let long = "x".repeat(usize::try_from(MAX_LINE).unwrap() + 10);
        std::fs::write(dir.path().join(FILE_NAME), format!("{long}\n")).unwrap();
        let Err(e) = ReplayJournal::open(dir.path(), keys("k1"), DAY, counter()) else {
            panic!("opened");
        };
        assert!(e.to_string().contains("longer than"), "{e}");
    }
}
