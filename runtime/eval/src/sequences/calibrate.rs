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

/// Each action of each genuine clip judged alone, as a one-action challenge on the clip's
/// frames, and counted seen when it completes during its own scripted performance or the rest
/// right after it: what the checker sees of every action apart from the order, where an unseen
/// action stops the rest. The clip's other actions are not left-out actions here (an infinite
/// `left_out_scale` never sees one).
pub fn actions_alone<'a>(
    clips: impl IntoIterator<Item = &'a ObservedClip>,
    policy: &ChallengePolicy,
) -> BTreeMap<&'static str, Count> {
    let policy = &ChallengePolicy {
        left_out_scale: f32::INFINITY,
        ..policy.clone()
    };
    let mut out: BTreeMap<&'static str, Count> = BTreeMap::new();
    for clip in clips {
        if clip.kind != SequenceKind::Genuine || clip.performing.is_empty() {
            continue;
        }
        for &a in &clip.challenge {
            let v = evaluate(&[a], &clip.frames, policy);
            // The last action performed at or before the completing frame (a blink completes
            // on the first open frame after it).
            let seen = v.actions.first().is_some_and(|x| {
                x.passed
                    && x.at_frame
                        .and_then(|f| clip.performing.iter().take(f + 1).rev().find_map(|l| *l))
                        == Some(a)
            });
            out.entry(a.as_str()).or_default().add(seen);
        }
    }
    out
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

/// `base` with some thresholds replaced, each `(field, value)` named as in the policy's JSON
/// (`turn_min_yaw=0.16`), so the lab can judge the same observations under a candidate policy
/// without rebuilding. Fails on an unknown field or a value the field cannot hold.
pub fn with_overrides(
    base: &ChallengePolicy,
    overrides: &[(String, f64)],
) -> Result<ChallengePolicy, String> {
    let mut value = serde_json::to_value(base).map_err(|e| e.to_string())?;
    let fields = value
        .as_object_mut()
        .ok_or_else(|| "the policy is not a JSON object".to_string())?;
    for (key, v) in overrides {
        let slot = fields
            .get_mut(key)
            .ok_or_else(|| format!("no policy field {key}"))?;
        *slot = if slot.is_u64() {
            if v.fract() != 0.0 || *v < 0.0 {
                return Err(format!("{key} takes a whole number, not {v}"));
            }
            serde_json::json!(*v as u64)
        } else {
            serde_json::json!(v)
        };
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// The pose thresholds [`pose_margins`] raises, with the action they decide.
const POSE_FIELDS: [(&str, &[Action]); 3] = [
    ("turn_min_yaw", &[Action::TurnLeft, Action::TurnRight]),
    ("turn_min_delta", &[Action::TurnLeft, Action::TurnRight]),
    ("look_up_min_delta", &[Action::LookUp]),
];

/// How far one pose action seen under a policy is from being lost: for each threshold that
/// decides it, the highest value (in 0.005 steps, every step up to it also seeing the action)
/// at which it is still seen during the same scripted action (or the same pause between
/// actions) as under the base policy, the rest of the policy unchanged. A higher threshold that
/// only moves a cross-talk detection onto the real action later in the clip ends the margin.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PoseMargin {
    /// Clip id.
    pub id: String,
    /// Clip kind.
    pub kind: SequenceKind,
    /// The action (a turn or look_up) and its index in the challenge.
    pub action: Action,
    /// Index of the action in the challenge.
    pub index: usize,
    /// Frame that completed it under the base policy.
    pub at_frame: usize,
    /// What the clip's script was performing at that frame (ground truth; `None` between
    /// actions or when unknown): another action there is cross-talk.
    pub performing: Option<Action>,
    /// `(threshold, base value, highest value still seeing the action)`.
    pub holds_up_to: Vec<(String, f32, f32)>,
}

/// For every turn and look-up of every clip that `base` sees, how far its thresholds can rise
/// before the action is lost (see [`PoseMargin`]), up to `ceiling`.
pub fn pose_margins(
    clips: &[ObservedClip],
    base: &ChallengePolicy,
    ceiling: f32,
) -> Result<Vec<PoseMargin>, String> {
    let base_json = serde_json::to_value(base).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for clip in clips {
        let v = judge(clip, base);
        let label = |f: usize| clip.performing.get(f).copied().flatten();
        for (index, a) in v.actions.iter().enumerate() {
            let Some(at_frame) = a.at_frame.filter(|_| a.passed) else {
                continue;
            };
            let mut holds_up_to = Vec::new();
            for (field, decides) in POSE_FIELDS {
                if !decides.contains(&a.action) {
                    continue;
                }
                let start = base_json
                    .get(field)
                    .and_then(serde_json::Value::as_f64)
                    .ok_or_else(|| format!("no policy field {field}"))?;
                let mut highest = start as f32;
                for step in 1.. {
                    let value = start + 0.005 * f64::from(step);
                    if value > f64::from(ceiling) + 1e-9 {
                        break;
                    }
                    let p = with_overrides(base, &[(field.to_string(), value)])?;
                    let seen = judge(clip, &p).actions[index];
                    if !seen.passed || seen.at_frame.map(label) != Some(label(at_frame)) {
                        break;
                    }
                    highest = value as f32;
                }
                holds_up_to.push((field.to_string(), start as f32, highest));
            }
            if holds_up_to.is_empty() {
                continue;
            }
            out.push(PoseMargin {
                id: clip.id.clone(),
                kind: clip.kind,
                action: a.action,
                index,
                at_frame,
                performing: clip.performing.get(at_frame).copied().flatten(),
                holds_up_to,
            });
        }
    }
    Ok(out)
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

    #[test]
    fn overrides_change_named_fields_only() {
        let base = ChallengePolicy::default();
        let p = with_overrides(
            &base,
            &[
                ("turn_min_yaw".into(), 0.16),
                ("min_action_ms".into(), 80.0),
            ],
        )
        .unwrap();
        assert!((p.turn_min_yaw - 0.16).abs() < 1e-6);
        assert_eq!(p.min_action_ms, 80);
        assert_eq!(
            ChallengePolicy {
                turn_min_yaw: base.turn_min_yaw,
                min_action_ms: base.min_action_ms,
                ..p
            },
            base
        );
        assert!(with_overrides(&base, &[("turn_min_yaww".into(), 0.1)]).is_err());
        assert!(with_overrides(&base, &[("min_action_ms".into(), 60.5)]).is_err());
    }

    /// A frame whose yaw and pitch signals are `yaw` and `0.5 - drop`.
    fn posed(ts: u64, yaw: f32, drop: f32) -> FrameObservation {
        use facekey_runtime::challenge::{FaceObservation, Landmarks68};
        use facekey_runtime::vision::detect::{BoundingBox, Point};
        use facekey_runtime::vision::embed::Embedding;
        let at = |x: f32, y: f32| Point { x, y };
        let mut p = vec![at(200.0, 200.0); 68];
        p[0] = at(150.0, 180.0);
        p[16] = at(250.0, 180.0);
        for k in 0..6 {
            p[36 + k] = at(175.0, 170.0);
            p[42 + k] = at(225.0, 170.0);
        }
        p[48] = at(185.0, 230.0);
        p[54] = at(215.0, 230.0);
        // The nostrils 60 px below the eyes: the pitch signal is (tip - eyes) / 60.
        for q in &mut p[31..=35] {
            *q = at(200.0, 230.0);
        }
        p[30] = at(200.0 + 100.0 * yaw, 200.0 - 60.0 * drop);
        FrameObservation {
            timestamp_ms: ts,
            received_ms: None,
            face: Some(FaceObservation {
                bbox: BoundingBox {
                    x: 150.0,
                    y: 140.0,
                    width: 100.0,
                    height: 120.0,
                },
                landmarks: Landmarks68::new(p).unwrap(),
                eyes: None,
                embedding: Some(Embedding::new(vec![0.1; 128]).unwrap()),
                liveness: None,
                quality: None,
            }),
            unusable: None,
            fingerprint: None,
        }
    }

    /// A clip of identity `x` judged against `challenge`: one [`posed`] frame per `(yaw, pitch
    /// drop, action performed)`, 100 ms apart.
    fn posed_clip(
        id: &str,
        kind: SequenceKind,
        challenge: Vec<Action>,
        poses: &[(f32, f32, Option<Action>)],
    ) -> ObservedClip {
        ObservedClip {
            id: id.into(),
            kind,
            identity: "x".into(),
            challenge,
            frames: poses
                .iter()
                .enumerate()
                .map(|(i, &(y, d, _))| posed(1_000 + 100 * i as u64, y, d))
                .collect(),
            performing: poses.iter().map(|p| p.2).collect(),
        }
    }

    #[test]
    fn actions_alone_count_each_action_apart_from_the_order() {
        use Action::{LookUp, TurnLeft};
        // A genuine clip that looks up, then turns left, judged against turn left then look up:
        // in order only the turn is seen (the look-up came first); alone, both are.
        let poses = [
            (0.0, 0.0, None),
            (0.0, 0.0, None),
            (0.0, 0.0, None),
            (0.0, 0.202, Some(LookUp)),
            (0.0, 0.0, None),
            (0.202, 0.0, Some(TurnLeft)),
            (0.0, 0.0, None),
        ];
        let c = posed_clip(
            "genuine/x/00",
            SequenceKind::Genuine,
            vec![TurnLeft, LookUp],
            &poses,
        );
        let p = ChallengePolicy::default();
        let in_order = rates(std::slice::from_ref(&c), &p);
        assert_eq!(in_order.genuine_actions["look_up"].passed, 0);
        let alone = actions_alone(std::slice::from_ref(&c), &p);
        assert_eq!((alone["look_up"].passed, alone["look_up"].total), (1, 1));
        assert_eq!(
            (alone["turn_left"].passed, alone["turn_left"].total),
            (1, 1)
        );
        // An action seen while another was performed (or before any) is not counted.
        let mislabelled = ObservedClip {
            performing: vec![None; poses.len()],
            ..c
        };
        let alone = actions_alone(std::slice::from_ref(&mislabelled), &p);
        assert_eq!(alone["turn_left"].passed, 0);
    }

    #[test]
    fn pose_margins_measure_how_far_a_threshold_can_rise() {
        use Action::{LookUp, TurnLeft};
        // Rest, a turn left to yaw 0.202 that drags the pitch down by 0.092, rest, a look-up of
        // 0.202 (a little above the 0.005 steps, so rounding cannot end a margin one step early).
        let poses = [
            (0.0, 0.0, None),
            (0.0, 0.0, None),
            (0.202, 0.092, Some(TurnLeft)),
            (0.0, 0.0, None),
            (0.0, 0.0, None),
            (0.0, 0.202, Some(LookUp)),
            (0.0, 0.0, None),
        ];
        let c = posed_clip(
            "replay_other_challenge/x/00",
            SequenceKind::ReplayOtherChallenge,
            vec![LookUp, TurnLeft],
            &poses,
        );
        let loose = ChallengePolicy {
            look_up_min_delta: 0.08,
            ..ChallengePolicy::default()
        };
        let m = pose_margins(std::slice::from_ref(&c), &loose, 0.5).unwrap();
        // The look-up is seen on the turn (cross-talk) and holds only up to its 0.09, although
        // the real look-up would still be seen later at any value up to 0.2.
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!((m[0].action, m[0].at_frame), (LookUp, 2));
        assert_eq!(m[0].performing, Some(TurnLeft));
        let (field, base, hi) = &m[0].holds_up_to[0];
        assert_eq!(field, "look_up_min_delta");
        assert!(
            (base - 0.08).abs() < 1e-6 && (hi - 0.09).abs() < 1e-3,
            "{hi}"
        );
        // In the order performed, the turn holds up to its yaw and change of 0.2.
        let performed = ObservedClip {
            challenge: vec![TurnLeft, LookUp],
            ..c
        };
        let m = pose_margins(&[performed], &loose, 0.5).unwrap();
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!((m[0].action, m[0].performing), (TurnLeft, Some(TurnLeft)));
        for (_, _, hi) in &m[0].holds_up_to {
            assert!((hi - 0.2).abs() < 1e-3, "{m:?}");
        }
        assert_eq!((m[1].action, m[1].performing), (LookUp, Some(LookUp)));
        assert!((m[1].holds_up_to[0].2 - 0.2).abs() < 1e-3, "{m:?}");
    }
}
