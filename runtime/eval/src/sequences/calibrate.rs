//! Pass rates of observed clips under a [`ChallengePolicy`], the replay attacks derived from
//! genuine clips, and the threshold sweep that proposes calibrated defaults.
//!
//! Everything here runs on cached observations (no models), so a sweep over hundreds of
//! policies costs milliseconds per policy. The sweep fits on the *training* identities only and
//! the report gives the chosen policy's rates on the held-out identities too.

use std::collections::BTreeMap;

use facekey_runtime::challenge::{
    Action, ChallengePolicy, ChallengeVerdict, Fingerprint, Outcome, evaluate,
};

use super::SequenceKind;
use super::observe::ObservedClip;

/// A genuine clip with every frame sent twice, 40 ms apart (a replay padded to a camera's
/// frame rate). `copies` are the fingerprints of the second copies (the frames re-encoded, as a
/// replaying client would); `None` repeats each frame exactly.
pub fn replay_duplicated(clip: &ObservedClip, copies: Option<&[Fingerprint]>) -> ObservedClip {
    let mut frames = Vec::with_capacity(clip.frames.len() * 2);
    for (i, f) in clip.frames.iter().enumerate() {
        frames.push(f.clone());
        let mut again = f.clone();
        again.timestamp_ms += 40;
        if let Some(fp) = copies.and_then(|c| c.get(i)) {
            again.fingerprint = Some(fp.clone());
        }
        frames.push(again);
    }
    // Keep timestamps increasing: stretch the original spacing where 40 ms would overtake it.
    for k in 1..frames.len() {
        if frames[k].timestamp_ms <= frames[k - 1].timestamp_ms {
            frames[k].timestamp_ms = frames[k - 1].timestamp_ms + 20;
        }
    }
    ObservedClip {
        id: clip
            .id
            .replacen("genuine", SequenceKind::ReplayDuplicated.as_str(), 1),
        kind: SequenceKind::ReplayDuplicated,
        identity: clip.identity.clone(),
        challenge: clip.challenge.clone(),
        frames,
        performing: clip.performing.iter().flat_map(|&a| [a, a]).collect(),
    }
}

/// A genuine clip judged against a challenge it did not perform: the session's challenge is
/// `clip`'s actions in reverse order, or — for a single action — another action. A recording
/// cannot follow a challenge drawn after it was made.
pub fn replay_other_challenge(clip: &ObservedClip) -> ObservedClip {
    let mut challenge: Vec<Action> = clip.challenge.iter().rev().copied().collect();
    if challenge.len() < 2 {
        let other = Action::ALL
            .into_iter()
            .find(|a| !clip.challenge.contains(a))
            .unwrap_or(Action::Blink);
        challenge.push(other);
    }
    ObservedClip {
        id: clip
            .id
            .replacen("genuine", SequenceKind::ReplayOtherChallenge.as_str(), 1),
        kind: SequenceKind::ReplayOtherChallenge,
        identity: clip.identity.clone(),
        challenge,
        frames: clip.frames.clone(),
        performing: clip.performing.clone(),
    }
}

/// The verdict on a clip once every frame is in: a clip still in progress has run out of
/// frames, which the session layer fails.
pub fn judge(clip: &ObservedClip, policy: &ChallengePolicy) -> ChallengeVerdict {
    evaluate(&clip.challenge, &clip.frames, policy)
}

/// Pass counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Count {
    /// Passed.
    pub passed: usize,
    /// All.
    pub total: usize,
}

impl Count {
    /// `passed / total` (0 for none).
    pub fn rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.passed as f64 / self.total as f64
        }
    }

    fn add(&mut self, passed: bool) {
        self.total += 1;
        self.passed += usize::from(passed);
    }
}

/// Pass rates of a set of clips under one policy.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rates {
    /// Clips passed per kind.
    pub by_kind: BTreeMap<&'static str, Count>,
    /// For genuine clips: each action of each challenge seen in order, per action.
    pub genuine_actions: BTreeMap<&'static str, Count>,
    /// Failure reasons of genuine clips (and "incomplete" for clips that never finished).
    pub genuine_failures: BTreeMap<String, usize>,
    /// Failure reasons of attack clips.
    pub attack_failures: BTreeMap<String, usize>,
}

impl Rates {
    /// Genuine clips passed, as a fraction.
    pub fn genuine(&self) -> f64 {
        self.by_kind
            .get(SequenceKind::Genuine.as_str())
            .map_or(0.0, Count::rate)
    }

    /// Attack clips passed, over every attack kind.
    pub fn attacks_passed(&self) -> usize {
        self.by_kind
            .iter()
            .filter(|(k, _)| **k != SequenceKind::Genuine.as_str())
            .map(|(_, c)| c.passed)
            .sum()
    }
}

/// Rates of `clips` under `policy`.
pub fn rates<'a>(
    clips: impl IntoIterator<Item = &'a ObservedClip>,
    policy: &ChallengePolicy,
) -> Rates {
    let mut r = Rates::default();
    for clip in clips {
        let v = judge(clip, policy);
        let passed = v.outcome == Outcome::Passed;
        r.by_kind.entry(clip.kind.as_str()).or_default().add(passed);
        let reasons: Vec<String> = if v.outcome == Outcome::InProgress {
            vec!["incomplete".into()]
        } else {
            v.reasons.iter().map(|x| x.as_str().to_string()).collect()
        };
        if clip.kind == SequenceKind::Genuine {
            for a in &v.actions {
                r.genuine_actions
                    .entry(a.action.as_str())
                    .or_default()
                    .add(a.passed);
            }
            for x in reasons {
                *r.genuine_failures.entry(x).or_default() += 1;
            }
        } else {
            for x in reasons {
                *r.attack_failures.entry(x).or_default() += 1;
            }
        }
    }
    r
}

/// The thresholds the sweep varies, as a grid around `base`.
pub fn grid(base: &ChallengePolicy) -> Vec<ChallengePolicy> {
    let mut out = Vec::new();
    for eye_closed_max in [0.2f32, 0.35, 0.5] {
        for eye_open_min in [0.5f32, 0.6, 0.75] {
            for turn_min_yaw in [0.08f32, 0.12, 0.16] {
                for turn_min_delta in [0.06f32, 0.1, 0.14] {
                    for look_up_min_delta in [0.04f32, 0.06, 0.08, 0.11] {
                        for mouth_open_min in [0.15f32, 0.25, 0.35] {
                            for mouth_min_delta in [0.1f32, 0.15] {
                                if eye_closed_max >= eye_open_min {
                                    continue;
                                }
                                out.push(ChallengePolicy {
                                    eye_open_min,
                                    eye_closed_max,
                                    turn_min_yaw,
                                    turn_min_delta,
                                    look_up_min_delta,
                                    mouth_open_min,
                                    mouth_min_delta,
                                    ..base.clone()
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// Distance of `p` from `base` in grid steps (to prefer the policy closest to the shipped one
/// among equals, and stricter margins among those).
fn margin(p: &ChallengePolicy) -> f64 {
    // Larger thresholds keep more distance from attacks; score them slightly higher.
    f64::from(
        p.turn_min_yaw / 0.16
            + p.turn_min_delta / 0.14
            + p.look_up_min_delta / 0.11
            + p.mouth_open_min / 0.35
            + p.mouth_min_delta / 0.15
            + (1.0 - p.eye_closed_max)
            + p.eye_open_min,
    )
}

/// `clips` without frame fingerprints and without the duplicated replays: the action
/// thresholds are swept on these (the near-duplicate check is independent of them and costs
/// most of the checker's time; its threshold is set from [`frame_differences`]).
pub fn for_action_sweep(clips: &[ObservedClip]) -> Vec<ObservedClip> {
    clips
        .iter()
        .filter(|c| c.kind != SequenceKind::ReplayDuplicated)
        .map(|c| {
            let mut c = c.clone();
            for f in &mut c.frames {
                f.fingerprint = None;
            }
            c
        })
        .collect()
}

/// Per kind, the smallest fingerprint difference between two frames of each clip (the
/// checker's `min_frame_difference`), sorted.
pub fn frame_differences(clips: &[ObservedClip]) -> BTreeMap<&'static str, Vec<f32>> {
    let mut out: BTreeMap<&'static str, Vec<f32>> = BTreeMap::new();
    for c in clips {
        if let Some(d) = judge(c, &ChallengePolicy::default()).min_frame_difference {
            out.entry(c.kind.as_str()).or_default().push(d);
        }
    }
    for v in out.values_mut() {
        v.sort_by(f32::total_cmp);
    }
    out
}

/// The policy of `candidates` that passes no attack clip of `train` and the most genuine ones;
/// ties go to the larger margins (see [`margin`]). `None` when every candidate lets an attack
/// through. `train` is judged as given (see [`for_action_sweep`]).
pub fn choose(
    train: &[ObservedClip],
    candidates: &[ChallengePolicy],
) -> Option<(ChallengePolicy, Rates)> {
    let mut best: Option<(ChallengePolicy, Rates, f64)> = None;
    for p in candidates {
        let r = rates(train, p);
        if r.attacks_passed() > 0 {
            continue;
        }
        let score = r.genuine();
        let better = match &best {
            None => true,
            Some((bp, _, bs)) => {
                score > *bs + 1e-12 || ((score - bs).abs() <= 1e-12 && margin(p) > margin(bp))
            }
        };
        if better {
            best = Some((p.clone(), r, score));
        }
    }
    best.map(|(p, r, _)| (p, r))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use facekey_runtime::challenge::{Fingerprint, FrameObservation};

    fn frame(ts: u64, v: u8) -> FrameObservation {
        let mut f = FrameObservation::unusable(ts, "test");
        f.fingerprint = Some(Fingerprint::try_from(vec![v; 256]).unwrap());
        f
    }

    fn clip() -> ObservedClip {
        ObservedClip {
            id: "genuine/x/00".into(),
            kind: SequenceKind::Genuine,
            identity: "x".into(),
            challenge: vec![Action::Blink, Action::TurnLeft],
            frames: (0..5).map(|i| frame(1000 + 80 * i, 10 * i as u8)).collect(),
            performing: vec![None, Some(Action::Blink), Some(Action::Blink), None, None],
        }
    }

    #[test]
    fn duplicated_replay_repeats_every_frame_with_increasing_times() {
        let d = replay_duplicated(&clip(), None);
        assert_eq!(d.frames.len(), 10);
        assert_eq!(d.kind, SequenceKind::ReplayDuplicated);
        assert!(d.id.starts_with("replay_duplicated/"));
        assert!(
            d.frames
                .windows(2)
                .all(|w| w[1].timestamp_ms > w[0].timestamp_ms)
        );
        assert_eq!(d.frames[0].fingerprint, d.frames[1].fingerprint);
        // The ground truth follows the frames (each copy performs what its original did).
        assert_eq!(d.performing.len(), d.frames.len());
        assert_eq!(d.performing[2], Some(Action::Blink));
        assert_eq!(d.performing[3], Some(Action::Blink));
        assert_eq!(d.performing[0], None);
        // Observations round-trip through observations.json.
        let back: ObservedClip = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back.frames, d.frames);
        assert_eq!(back.performing, d.performing);
        assert_eq!(back.challenge, d.challenge);
        let v = judge(&d, &ChallengePolicy::default());
        assert_eq!(v.outcome, Outcome::Failed);
    }

    #[test]
    fn other_challenge_replay_asks_for_another_order() {
        let o = replay_other_challenge(&clip());
        assert_eq!(o.challenge, vec![Action::TurnLeft, Action::Blink]);
        let mut one = clip();
        one.challenge = vec![Action::Blink];
        assert_eq!(
            replay_other_challenge(&one).challenge,
            vec![Action::Blink, Action::TurnLeft]
        );
    }

    #[test]
    fn rates_count_kinds_and_unfinished_clips() {
        let r = rates(&[clip()], &ChallengePolicy::default());
        assert_eq!(
            r.by_kind["genuine"],
            Count {
                passed: 0,
                total: 1
            }
        );
        assert_eq!(
            r.genuine_actions["blink"],
            Count {
                passed: 0,
                total: 1
            }
        );
        assert_eq!(r.genuine_failures["incomplete"], 1);
        assert!(grid(&ChallengePolicy::default()).len() > 100);
    }
}
