//! Replays across sessions. Within one session the checker refuses a frame sent twice
//! (`duplicate_frames`); across sessions nothing did, so a recording of a subject's genuine
//! session, sent again into a new session whose random challenge matches it (there are 80, and
//! opening a session is cheap), passed for the subject. Now the fingerprints of the usable frames
//! of every session a verification or identification accepted for a subject are remembered for
//! the replay window (`FACEKEY_SESSION_REPLAY_WINDOW_SECS`, a day by default; never images), and
//! a later session for that subject with [`MIN_REPLAYED_FRAMES`] frames each the same, with
//! brightness and contrast taken out, as one of an accepted session's is a replayed recording:
//! its decision is a reject, a failed attempt and a spoof event.
//!
//! Only accepted sessions are remembered, so that failed attempts cannot push the genuine
//! sessions out of a subject's bounded record. Pure logic here: [`nearest_replay`] and the
//! in-memory [`ReplayRecord`] of the embedded mode; with a shared database the record lives in
//! PostgreSQL ([`super::pg`]) and serves every replica.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::fingerprint::{Fingerprint, Shape};

/// Accepted sessions remembered per subject (the latest ones): a subject verified more often
/// within the window keeps its latest sessions' frames.
pub const SESSIONS_PER_SUBJECT: usize = 8;

/// Frames remembered per accepted session at most, spread evenly over its usable frames (a
/// session passes in a few dozen, so most keep every one): 16 KiB a session.
pub const PRINTS_PER_SESSION: usize = 64;

/// Accepted sessions the in-memory record keeps in all: beyond it the subject holding the most
/// loses its oldest, so that no subject's sessions are pushed out by others' while it holds
/// fewer than they do. At most 16 MiB.
pub const RECORDED_SESSIONS: usize = 1024;

/// Two frames whose shapes ([`Fingerprint::shape`]: brightness and contrast taken out) differ
/// by at most this (mean absolute difference, standard units) are the same frame. Measured on
/// the lab's clips (480x360, astronaut, seeds 1-4): a frame and its copy re-encoded at JPEG
/// quality 60, brightened by 1 or 10 grey levels or its contrast changed by 0.8-1.1 differ by
/// 0.0021-0.0078; two clips of the same face rendered with other jitter by 0.018 at least,
/// consecutive frames of one clip by 0.0085 at least.
pub const REPLAY_MAX_DIFFERENCE: f32 = 0.012;

/// Frames of a session that must each repeat a remembered frame for it to be a replay: a
/// replayed recording repeats nearly all of them, so one coincidence is not an accusation.
pub const MIN_REPLAYED_FRAMES: usize = 2;

/// An accepted session's frames as the record keeps them.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedSession {
    /// The session's id.
    pub session: String,
    /// Its frames' fingerprints ([`kept_prints`]).
    pub prints: Vec<Fingerprint>,
}

/// A subject whose record a session was compared with, and the accepted sessions it held then
/// ([`ReplayRecord::remember_unless_replayed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compared {
    /// The subject.
    pub subject: String,
    /// The ids of the accepted sessions its record gave the comparison.
    pub sessions: Vec<String>,
}

/// A session that repeats frames of an earlier accepted session of the same subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    /// The earlier session whose frames were sent again.
    pub earlier_session: String,
    /// How many of the session's frames repeat one of it.
    pub frames: usize,
    /// The smallest shape difference found.
    pub difference: f32,
}

/// The prints a passed session leaves for the record: those of its usable frames (`prints`, in
/// order), at most [`PRINTS_PER_SESSION`] spread evenly over them.
pub fn kept_prints(prints: Vec<Fingerprint>) -> Vec<Fingerprint> {
    let n = prints.len();
    if n <= PRINTS_PER_SESSION {
        return prints;
    }
    (0..PRINTS_PER_SESSION)
        .filter_map(|j| prints.get(j * n / PRINTS_PER_SESSION).cloned())
        .collect()
}

/// The first of `earlier` (most recent first) that at least [`MIN_REPLAYED_FRAMES`] frames of
/// `prints` each repeat a frame of, within [`REPLAY_MAX_DIFFERENCE`]; `None` when none is
/// repeated. Flat frames ([`Fingerprint::shape`]) count for nothing.
pub fn nearest_replay(prints: &[Fingerprint], earlier: &[AcceptedSession]) -> Option<Replayed> {
    let shapes: Vec<Shape> = prints.iter().filter_map(Fingerprint::shape).collect();
    if shapes.len() < MIN_REPLAYED_FRAMES {
        return None;
    }
    for accepted in earlier {
        let theirs: Vec<Shape> = accepted
            .prints
            .iter()
            .filter_map(Fingerprint::shape)
            .collect();
        let mut frames = 0;
        let mut closest = f32::INFINITY;
        for mine in &shapes {
            let d = theirs
                .iter()
                .map(|t| mine.difference(t))
                .fold(f32::INFINITY, f32::min);
            closest = closest.min(d);
            if d <= REPLAY_MAX_DIFFERENCE {
                frames += 1;
            }
        }
        if frames >= MIN_REPLAYED_FRAMES {
            return Some(Replayed {
                earlier_session: accepted.session.clone(),
                frames,
                difference: closest,
            });
        }
    }
    None
}

/// One accepted session's frames, with when it was remembered.
#[derive(Debug)]
struct Remembered {
    at: Instant,
    accepted: AcceptedSession,
}

/// The embedded mode's record of accepted sessions' frames, per subject: this replica's memory,
/// kept across restarts by its journal ([`super::replay_file`]).
#[derive(Debug, Default)]
pub struct ReplayRecord {
    subjects: HashMap<String, VecDeque<Remembered>>,
    count: usize,
}

impl ReplayRecord {
    /// `subject`'s accepted sessions within `window` of `now`, most recent first (none with a
    /// zero window: the check is off). A copy, so that comparing them holds no lock.
    pub fn accepted(
        &mut self,
        subject: &str,
        window: Duration,
        now: Instant,
    ) -> Vec<AcceptedSession> {
        self.sweep(window, now);
        self.subjects.get(subject).map_or_else(Vec::new, |list| {
            list.iter().rev().map(|r| r.accepted.clone()).collect()
        })
    }

    /// Remembers `session`, just accepted for `subject`, with its frames' `prints`: its
    /// subject's oldest session goes beyond [`SESSIONS_PER_SUBJECT`], and beyond
    /// [`RECORDED_SESSIONS`] in all the oldest of the subject holding the most. Nothing with a
    /// zero window or no prints; a session remembered already is not added twice.
    pub fn remember(
        &mut self,
        subject: &str,
        session: &str,
        prints: Vec<Fingerprint>,
        window: Duration,
        now: Instant,
    ) {
        if window.is_zero() || prints.is_empty() {
            return;
        }
        self.sweep(window, now);
        let list = self.subjects.entry(subject.to_owned()).or_default();
        if list.iter().any(|r| r.accepted.session == session) {
            return;
        }
        list.push_back(Remembered {
            at: now,
            accepted: AcceptedSession {
                session: session.to_owned(),
                prints,
            },
        });
        self.count += 1;
        if list.len() > SESSIONS_PER_SUBJECT {
            list.pop_front();
            self.count -= 1;
        }
        while self.count > RECORDED_SESSIONS {
            let fullest = self
                .subjects
                .iter()
                .filter_map(|(s, l)| l.front().map(|r| (l.len(), std::cmp::Reverse(r.at), s)))
                .max()
                .map(|(_, _, s)| s.clone());
            let Some(subject) = fullest else { break };
            self.pop_oldest(&subject);
        }
    }

    /// Remembers `session` for each subject of `checked` as [`Self::remember`] does, unless its
    /// `prints` repeat a session of one of them that the caller has not compared them with (each
    /// [`Compared`] names the sessions its earlier check saw): then that subject and the replay
    /// are given and nothing is remembered. The check and the write are one step under the
    /// caller's lock, so two sessions of one recording accepted at the same moment for a subject
    /// (by verify or identify) cannot both be remembered, nor both accepted. The comparison runs
    /// only when sessions were remembered since that check (at most 8 x 64 fingerprints a
    /// subject, milliseconds).
    pub fn remember_unless_replayed(
        &mut self,
        checked: &[Compared],
        session: &str,
        prints: Vec<Fingerprint>,
        window: Duration,
        now: Instant,
    ) -> Option<(String, Replayed)> {
        for c in checked {
            let unseen: Vec<AcceptedSession> = self
                .accepted(&c.subject, window, now)
                .into_iter()
                .filter(|a| a.session != session && !c.sessions.contains(&a.session))
                .collect();
            if let Some(replayed) = nearest_replay(&prints, &unseen) {
                return Some((c.subject.clone(), replayed));
            }
        }
        for c in checked {
            self.remember(&c.subject, session, prints.clone(), window, now);
        }
        None
    }

    /// Forgets `subject`'s sessions (the subject was deleted); returns how many.
    pub fn forget(&mut self, subject: &str) -> usize {
        let n = self.subjects.remove(subject).map_or(0, |l| l.len());
        self.count -= n;
        n
    }

    /// Forgets sessions accepted `window` or longer before `now`.
    pub fn sweep(&mut self, window: Duration, now: Instant) {
        let stale = |r: &Remembered| now.saturating_duration_since(r.at) >= window;
        let subjects: Vec<String> = self
            .subjects
            .iter()
            .filter(|(_, l)| l.front().is_some_and(stale))
            .map(|(s, _)| s.clone())
            .collect();
        for subject in subjects {
            while self
                .subjects
                .get(&subject)
                .and_then(VecDeque::front)
                .is_some_and(stale)
            {
                self.pop_oldest(&subject);
            }
        }
    }

    /// Every session remembered, with its subject and when, oldest first.
    pub fn entries(&self) -> Vec<(&str, Instant, &AcceptedSession)> {
        let mut all: Vec<(&str, Instant, &AcceptedSession)> = self
            .subjects
            .iter()
            .flat_map(|(s, list)| list.iter().map(move |r| (s.as_str(), r.at, &r.accepted)))
            .collect();
        all.sort_by_key(|(_, at, _)| *at);
        all
    }

    /// Sessions remembered in all.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn pop_oldest(&mut self, subject: &str) {
        if let Some(list) = self.subjects.get_mut(subject) {
            if list.pop_front().is_some() {
                self.count -= 1;
            }
            if list.is_empty() {
                self.subjects.remove(subject);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    /// A fingerprint with a shape: a ramp over the cells, rotated by `k` cells.
    fn frame(k: usize) -> Fingerprint {
        Fingerprint::try_from(
            (0..256)
                .map(|i| ((i + k * 7) % 256) as u8)
                .collect::<Vec<_>>(),
        )
        .unwrap()
    }

    /// `f` brightened by `offset` and its contrast scaled by `gain` (a copy of the same frame).
    fn adjusted(f: &Fingerprint, gain: f32, offset: f32) -> Fingerprint {
        let cells = f.as_bytes().iter();
        Fingerprint::try_from(
            cells
                .map(|&v| (f32::from(v) * gain + offset).round().clamp(0.0, 255.0) as u8)
                .collect::<Vec<_>>(),
        )
        .unwrap()
    }

    fn accepted(session: &str, prints: Vec<Fingerprint>) -> AcceptedSession {
        AcceptedSession {
            session: session.into(),
            prints,
        }
    }

    #[test]
    fn repeated_frames_are_a_replay_even_brightened_or_recontrasted() {
        let earlier = [accepted("a", vec![frame(1), frame(2), frame(3)])];
        let copies = [adjusted(&frame(2), 1.0, 9.0), adjusted(&frame(3), 0.9, 4.0)];
        let hit = nearest_replay(&copies, &earlier).unwrap();
        assert_eq!((hit.earlier_session.as_str(), hit.frames), ("a", 2));
        assert!(hit.difference <= REPLAY_MAX_DIFFERENCE, "{hit:?}");
        // One repeated frame among new ones is no accusation; other frames are no replay.
        assert_eq!(nearest_replay(&[frame(2), frame(9)], &earlier), None);
        assert_eq!(nearest_replay(&[frame(8), frame(9)], &earlier), None);
    }

    #[test]
    fn flat_frames_count_for_nothing() {
        // A black or blank frame at the start of two sessions of the same person is no replay.
        let black = Fingerprint::try_from(vec![0u8; 256]).unwrap();
        let grey = Fingerprint::try_from(vec![128u8; 256]).unwrap();
        assert!(black.shape().is_none());
        let earlier = [accepted("a", vec![black.clone(), grey.clone(), frame(1)])];
        assert_eq!(nearest_replay(&[black, grey, frame(5)], &earlier), None);
    }

    #[test]
    fn a_long_session_keeps_prints_spread_over_it() {
        let prints: Vec<Fingerprint> = (0..200).map(frame).collect();
        let kept = kept_prints(prints.clone());
        assert_eq!(kept.len(), PRINTS_PER_SESSION);
        // Every 3rd or 4th: the first, ..., the 196th (63 x 200 / 64).
        assert_eq!((&kept[0], kept.last()), (&prints[0], prints.get(196)));
        assert_eq!(kept_prints(prints[..10].to_vec()), prints[..10].to_vec());
    }

    #[test]
    fn the_record_is_per_subject_and_forgets_after_the_window() {
        let t0 = Instant::now();
        let mut r = ReplayRecord::default();
        r.remember("alice", "s1", vec![frame(1), frame(2)], DAY, t0);
        let earlier = r.accepted("alice", DAY, t0);
        assert_eq!(earlier, vec![accepted("s1", vec![frame(1), frame(2)])]);
        assert!(r.accepted("bob", DAY, t0).is_empty());
        // Just inside the window, then past it.
        let later = t0 + DAY - Duration::from_secs(1);
        assert_eq!(r.accepted("alice", DAY, later).len(), 1);
        assert!(r.accepted("alice", DAY, t0 + DAY).is_empty());
        assert!(r.is_empty());
    }

    fn compared(subject: &str, sessions: &[&str]) -> Compared {
        Compared {
            subject: subject.into(),
            sessions: sessions.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn a_session_remembered_since_the_check_is_compared_before_remembering() {
        let t0 = Instant::now();
        let mut r = ReplayRecord::default();
        let recording = vec![frame(1), frame(2), frame(3)];
        let alice = [compared("alice", &[])];
        // Two verifications of one recording checked the record while it was empty; the
        // first to remember is remembered, the second is a replay of it and is not.
        let first = r.remember_unless_replayed(&alice, "s1", recording.clone(), DAY, t0);
        assert_eq!(first, None);
        let copy: Vec<Fingerprint> = recording.iter().map(|f| adjusted(f, 1.0, 3.0)).collect();
        let second = r.remember_unless_replayed(&alice, "s2", copy.clone(), DAY, t0);
        assert_eq!(
            second.map(|(s, h)| (s, h.earlier_session)),
            Some(("alice".to_owned(), "s1".to_owned()))
        );
        assert_eq!(r.len(), 1);
        // A session the caller compared already is not compared again (its check found no
        // replay of it); a new recording is remembered beside it.
        let seen = [compared("alice", &["s1"])];
        assert_eq!(r.remember_unless_replayed(&seen, "s3", copy, DAY, t0), None);
        let fresh = vec![frame(7), frame(8)];
        assert_eq!(
            r.remember_unless_replayed(&alice, "s4", fresh, DAY, t0),
            None
        );
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn an_identification_is_remembered_for_every_subject_it_accepted() {
        let t0 = Instant::now();
        let mut r = ReplayRecord::default();
        let recording = vec![frame(1), frame(2), frame(3)];
        // Identified as two enrolments of one person: both remember it.
        let both = [compared("twin-a", &[]), compared("twin-b", &[])];
        assert_eq!(
            r.remember_unless_replayed(&both, "s1", recording.clone(), DAY, t0),
            None
        );
        assert_eq!(
            (
                r.accepted("twin-a", DAY, t0).len(),
                r.accepted("twin-b", DAY, t0).len()
            ),
            (1, 1)
        );
        // The recording again, for the second subject alone, checked before s1 was
        // remembered: a replay of it, and nothing is remembered.
        let again =
            r.remember_unless_replayed(&[compared("twin-b", &[])], "s2", recording, DAY, t0);
        assert_eq!(again.map(|(s, _)| s), Some("twin-b".to_owned()));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_zero_window_remembers_nothing() {
        let t0 = Instant::now();
        let mut r = ReplayRecord::default();
        r.remember("alice", "s1", vec![frame(1)], Duration::ZERO, t0);
        assert!(r.is_empty());
        assert!(r.accepted("alice", Duration::ZERO, t0).is_empty());
    }

    #[test]
    fn each_subject_keeps_its_latest_sessions_most_recent_first() {
        let t0 = Instant::now();
        let mut r = ReplayRecord::default();
        for i in 0..=SESSIONS_PER_SUBJECT {
            let at = t0 + Duration::from_secs(i as u64);
            r.remember("alice", &format!("s{i}"), vec![frame(i)], DAY, at);
        }
        // The same session again is not a second entry.
        r.remember("alice", "s3", vec![frame(99)], DAY, t0);
        assert_eq!(r.len(), SESSIONS_PER_SUBJECT);
        let sessions: Vec<String> = r
            .accepted("alice", DAY, t0)
            .into_iter()
            .map(|a| a.session)
            .collect();
        let expected: Vec<String> = (1..=SESSIONS_PER_SUBJECT)
            .rev()
            .map(|i| format!("s{i}"))
            .collect();
        assert_eq!(sessions, expected, "s0 went");
    }

    #[test]
    fn a_full_record_takes_from_the_subject_holding_the_most() {
        let t0 = Instant::now();
        let mut r = ReplayRecord::default();
        // The victim's one session is the oldest of all.
        r.remember("victim", "v", vec![frame(1)], DAY, t0);
        let mut i = 0u64;
        while r.len() < RECORDED_SESSIONS + 50 {
            i += 1;
            let at = t0 + Duration::from_millis(i);
            // Subjects of an attacker's own, each filled to its bound.
            let subject = format!("own{}", i as usize / SESSIONS_PER_SUBJECT);
            r.remember(&subject, &format!("s{i}"), vec![frame(2)], DAY, at);
            if i as usize > 2 * RECORDED_SESSIONS {
                break;
            }
        }
        assert_eq!(r.len(), RECORDED_SESSIONS);
        assert_eq!(
            r.accepted("victim", DAY, t0).len(),
            1,
            "pushed out by others"
        );
        assert_eq!(r.forget("victim"), 1);
        assert_eq!(r.len(), RECORDED_SESSIONS - 1);
    }
}
