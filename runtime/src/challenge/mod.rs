//! Challenge-response liveness: the server asks for a random sequence of actions (blink, head
//! turns, look up, open mouth) and checks, frame by frame, that one and the same live face
//! performed them in order. A printed photo, a photo moved as a whole or a replayed clip that does
//! not contain the random sequence cannot pass, and no attack training data is needed.
//!
//! This module is pure logic (no I/O, no models, no clock): the vision pipeline turns each camera
//! frame into a [`FrameObservation`] (see [`crate::vision::landmarks::observe_frame`]), and
//! [`evaluate`] judges a whole sequence of observations against a challenge under a
//! [`ChallengePolicy`] whose every threshold is a public field, so the evaluation crate can sweep
//! them offline on exactly what the server computes. [`session`] holds the session state machine
//! and the bounded session registry the HTTP API uses.
//!
//! Conventions: landmarks are the iBUG 68 points in image pixels (unmirrored camera image);
//! `turn_left` is the person's own left, so the nose moves toward the image's right edge.

pub mod checker;
pub mod fingerprint;
pub mod pg;
pub mod replay;
pub mod replay_file;
pub(crate) mod sealing;
pub mod session;
pub mod signals;
pub mod store;

use serde::{Deserialize, Serialize};

pub use checker::{
    ActionResult, ChallengeVerdict, FailReason, FrameFeedback, Outcome, PairsJudged, evaluate,
    evaluate_more,
};
pub use fingerprint::{Fingerprint, closest_pair};

use crate::vision::detect::{BoundingBox, Point};
use crate::vision::embed::Embedding;

/// One action of a challenge (snake_case in the API, the UI and the evaluation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Close both eyes and open them again (open → closed → open).
    Blink,
    /// Turn the head to the person's own left (nose toward the image's right edge).
    TurnLeft,
    /// Turn the head to the person's own right (nose toward the image's left edge).
    TurnRight,
    /// Pitch the head up (nose tip moves up relative to the eyes).
    LookUp,
    /// Open the mouth (lips apart).
    OpenMouth,
}

impl Action {
    /// Every action, in a fixed order.
    pub const ALL: [Action; 5] = [
        Action::Blink,
        Action::TurnLeft,
        Action::TurnRight,
        Action::LookUp,
        Action::OpenMouth,
    ];

    /// The snake_case name used in the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blink => "blink",
            Self::TurnLeft => "turn_left",
            Self::TurnRight => "turn_right",
            Self::LookUp => "look_up",
            Self::OpenMouth => "open_mouth",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Number of points of a [`Landmarks68`].
pub const LANDMARK_COUNT: usize = 68;

/// The 68 iBUG facial landmarks of one face in image pixels: 0–16 jaw, 17–26 brows, 27–35 nose
/// (30 = tip), 36–41 the eye on the image's left, 42–47 the eye on the image's right, 48–59 outer
/// lips, 60–67 inner lips.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Point>", into = "Vec<Point>")]
pub struct Landmarks68(Vec<Point>);

/// A point list that is not 68 finite points.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LandmarksError {
    /// Wrong number of points.
    #[error("68 landmarks expected, got {0}")]
    Count(usize),
    /// A NaN or infinite coordinate.
    #[error("a landmark has a non-finite coordinate")]
    NonFinite,
}

impl Landmarks68 {
    /// Validates and wraps 68 points.
    pub fn new(points: Vec<Point>) -> Result<Self, LandmarksError> {
        if points.len() != LANDMARK_COUNT {
            return Err(LandmarksError::Count(points.len()));
        }
        if points.iter().any(|p| !p.x.is_finite() || !p.y.is_finite()) {
            return Err(LandmarksError::NonFinite);
        }
        Ok(Self(points))
    }

    /// The points.
    pub fn points(&self) -> &[Point] {
        &self.0
    }

    /// Point `i` (0-based iBUG index; callers use indices below 68).
    pub fn at(&self, i: usize) -> Point {
        self.0.get(i).copied().unwrap_or(Point { x: 0.0, y: 0.0 })
    }
}

impl TryFrom<Vec<Point>> for Landmarks68 {
    type Error = LandmarksError;

    fn try_from(v: Vec<Point>) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<Landmarks68> for Vec<Point> {
    fn from(l: Landmarks68) -> Self {
        l.0
    }
}

/// Eye state of one face: probability that each eye is open, from `fr_eye`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EyeState {
    /// The eye on the image's left (landmarks 36–41).
    pub left_open: f32,
    /// The eye on the image's right (landmarks 42–47).
    pub right_open: f32,
}

impl EyeState {
    /// Mean open probability of both eyes.
    pub fn mean_open(&self) -> f32 {
        0.5 * (self.left_open + self.right_open)
    }
}

/// What the models measured on the face of one frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceObservation {
    /// Face box from the detector.
    #[serde(rename = "box")]
    pub bbox: BoundingBox,
    /// 68 landmarks from `fr_landmark`.
    pub landmarks: Landmarks68,
    /// Eye state from `fr_eye`; `None` when it could not run (then no blink is seen).
    pub eyes: Option<EyeState>,
    /// 128-d embedding (dlib), for the same-face check and as the verify probe.
    pub embedding: Option<Embedding>,
    /// Passive liveness score in `[0, 1]` (0 when a configured model failed on the face);
    /// `None` when passive liveness is off.
    pub liveness: Option<f32>,
    /// Quality score in `[0, 1]`, when it ran.
    pub quality: Option<f32>,
}

/// Everything the challenge checker knows about one camera frame: what the models saw (never
/// the image), the client's timestamp and a small fingerprint for the near-duplicate check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameObservation {
    /// Client capture time, milliseconds (any epoch; must increase within a session).
    pub timestamp_ms: u64,
    /// Server receipt time, milliseconds since the session opened; `None` offline.
    pub received_ms: Option<u64>,
    /// The face, when one was found and every model that must run on it ran; `None` marks the
    /// frame unusable (it can never pass an action).
    pub face: Option<FaceObservation>,
    /// Why the frame is unusable (no face, a model failed), for feedback and logs.
    pub unusable: Option<String>,
    /// Thumbnail fingerprint of the whole frame; `None` if the image could not be read.
    pub fingerprint: Option<Fingerprint>,
}

impl FrameObservation {
    /// A frame with no usable face, for `reason`.
    pub fn unusable(timestamp_ms: u64, reason: impl Into<String>) -> Self {
        Self {
            timestamp_ms,
            received_ms: None,
            face: None,
            unusable: Some(reason.into()),
            fingerprint: None,
        }
    }
}

/// Every threshold of the checker. `Default` holds the shipped values; the evaluation crate
/// sweeps these fields to calibrate them on synthetic sequences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChallengePolicy {
    /// Eyes count as open when the mean open probability is at least this.
    pub eye_open_min: f32,
    /// Eyes count as closed when the mean open probability is at most this.
    pub eye_closed_max: f32,
    /// Usable frames at the start of the session whose median landmark eye opening
    /// ([`signals::eye_opening`]) is the person's own open baseline.
    pub eye_baseline_frames: usize,
    /// Landmark blink: eyes count as closed at most this fraction of the baseline opening;
    /// 0 turns the landmark blink off (only the absolute `fr_eye` rule remains).
    pub eye_lid_closed_ratio: f32,
    /// Landmark blink: eyes count as open at least this fraction of the baseline opening.
    pub eye_lid_open_ratio: f32,
    /// Landmark blink: at the closed frame `fr_eye` must agree — at most `eye_closed_max`, or
    /// at least this much below its value on the open frames around it.
    pub eye_min_drop: f32,
    /// Yaw signal (nose offset from the jaw midline over jaw width) an action frame must reach,
    /// in the turn's direction.
    pub turn_min_yaw: f32,
    /// Usable frames at the start of the session that show the person's resting pose: a turn's
    /// frame must also be `turn_min_delta` beyond the yaw of at least one of them, a look-up's
    /// pitch `look_up_min_delta` below one of theirs. 0 turns that off (the rule before the lab
    /// showed a face resting at yaw +0.12 "turning left" whenever it came back to its rest from
    /// another action's dip).
    pub rest_pose_frames: usize,
    /// How much the yaw signal must change from an earlier frame of the same action window, and
    /// from the resting yaw (see `rest_pose_frames`).
    pub turn_min_delta: f32,
    /// How much the pitch signal ([`signals::pitch`]: eye line to nose tip over eye line to the
    /// nostrils) must drop from an earlier frame, and from the resting pitch, for `look_up`.
    pub look_up_min_delta: f32,
    /// Mouth opening (inner-lip gap over the eyes-to-nose-tip distance) an `open_mouth` frame
    /// must reach.
    pub mouth_open_min: f32,
    /// How much the mouth opening must grow from an earlier frame of the action window.
    pub mouth_min_delta: f32,
    /// An action takes at least this long (first frame of its evidence to the completing frame).
    pub min_action_ms: u64,
    /// Consecutive frames at least this far apart (faster is not a camera, or replayed frames).
    pub min_frame_interval_ms: u64,
    /// The client's claimed span (first to last frame) may exceed the server's observed span
    /// (session open to last receipt) by at most this (stale or pre-recorded frames).
    pub max_clock_skew_ms: u64,
    /// Every two usable frames' embeddings within this (dlib) distance of each other, and an
    /// image sent beside a passed session within it of the session's best frame.
    pub same_face_max_distance: f32,
    /// Two frames whose fingerprints differ by at most this mean absolute luma difference (0–255)
    /// are near-duplicates; any such pair fails the session.
    pub duplicate_max_difference: f32,
    /// Two frames whose shapes ([`fingerprint::Fingerprint::shape`]: brightness and contrast
    /// taken out) differ by at most this (mean absolute difference in standard units) are
    /// near-duplicates too: a frame sent again re-toned. Negative turns it off.
    pub duplicate_max_shape_difference: f32,
    /// At least this many usable frames before a session can pass.
    pub min_usable_frames: usize,
    /// Median passive liveness over usable frames must be at least this; `None` gates nothing
    /// (the score still enters the confidence).
    pub passive_min_median: Option<f32>,
    /// The pose and mouth thresholds are multiplied by this when looking for an action the
    /// challenge leaves out ([`FailReason::UnrequestedAction`]): below 1, a left-out action
    /// counts on less evidence than an asked one needs, so a recording cannot slip one past by
    /// performing it just under the bar; 1 is the same bar.
    pub left_out_scale: f32,
    /// While an action the challenge leaves out is held, the awaited action completes only
    /// under its pose and mouth thresholds multiplied by this: performed clearly beyond its
    /// own bar, not read into the other action's frames (a look-up the models read as an open
    /// mouth). Blinks are not scaled. 1 lets it complete as when nothing else is held.
    pub held_over_scale: f32,
}

impl ChallengePolicy {
    /// The policy a left-out action is looked for under: the turn, look-up and mouth
    /// thresholds scaled by [`Self::left_out_scale`].
    pub fn for_left_out(&self) -> Self {
        self.scaled(self.left_out_scale)
    }

    /// The policy an awaited action completes under while a left-out action is held: the
    /// turn, look-up and mouth thresholds scaled by [`Self::held_over_scale`].
    pub fn over_held(&self) -> Self {
        self.scaled(self.held_over_scale)
    }

    fn scaled(&self, k: f32) -> Self {
        Self {
            turn_min_yaw: self.turn_min_yaw * k,
            turn_min_delta: self.turn_min_delta * k,
            look_up_min_delta: self.look_up_min_delta * k,
            mouth_open_min: self.mouth_open_min * k,
            mouth_min_delta: self.mouth_min_delta * k,
            ..self.clone()
        }
    }
}

impl Default for ChallengePolicy {
    /// Action thresholds from the real models on real faces with synthesised actions (kept
    /// loose: the lab's sweep proposes stricter ones, which JPEG-encoded frames of a synthesised
    /// open mouth already miss); the near-duplicate bound from the evaluation lab's clips
    /// (docs/evaluation.md, "Challenge sessions"): re-encoded replays differ from their originals
    /// by 0.02–0.07, genuine frames by 0.31 at least (0.87 median).
    fn default() -> Self {
        Self {
            eye_open_min: 0.6,
            eye_closed_max: 0.35,
            eye_baseline_frames: 3,
            eye_lid_closed_ratio: 0.6,
            eye_lid_open_ratio: 0.85,
            eye_min_drop: 0.2,
            turn_min_yaw: 0.12,
            turn_min_delta: 0.1,
            rest_pose_frames: 3,
            // Of the nose-based pitch signal (signals::pitch), from an earlier frame and from
            // rest: on the lab's clips (seeds 20261203 and 7) another action's drop first counts
            // as a look-up at 0.07 (an open mouth of t1-2), and the smallest look-up the checker
            // sees holds to 0.155 (docs/evaluation.md, "Challenge sessions"). The same value
            // served the mouth-corner signal before it, whose drags counted up to 0.16.
            look_up_min_delta: 0.11,
            // Inner-lip gap over the eyes-to-nose distance; with the real models on
            // astronaut.png 0.18 closed (smiling, teeth showing), 0.38 lips parted.
            mouth_open_min: 0.25,
            mouth_min_delta: 0.1,
            min_action_ms: 60,
            min_frame_interval_ms: 15,
            max_clock_skew_ms: 2_000,
            // Between every two frames (docs/liveness-sessions.md, "Same face"): on the lab's
            // synthetic clips a genuine session's farthest pair is 0.33-0.79 apart (1 of 18
            // above 0.7; 4 were failed by the former bound of 0.55 to the first frame), the
            // neutral frames of two different faces 0.60-0.93 (4 of 36 pairs within 0.7).
            // Who the performer is, the template match on the frames that completed the
            // actions decides (verifier::judge_session); this bound keeps two people apart.
            same_face_max_distance: 0.7,
            duplicate_max_difference: 0.2,
            // On the lab's clips (seed 20261203, 45 clips' fingerprints) a genuine session's
            // closest two frames differ in shape by 0.0105 at least (0.0166 median); a frame
            // brightened by whole grey levels differs from itself by 0 (the cells shift
            // alike), a re-encoded copy by about 0.001. Kept at a fifth of the genuine
            // minimum: a real camera's exposure settling while the person holds still changes
            // little but the gain, which synthetic clips do not show (docs/liveness-sessions.md).
            duplicate_max_shape_difference: 0.002,
            min_usable_frames: 3,
            passive_min_median: None,
            // Left-out actions count at the asked bar. On the lab's clips (seed 20261203,
            // docs/evaluation.md) no genuine verdict changes down to 0.7; at 0.6 two genuine
            // clips first fail on another action's cross-talk.
            left_out_scale: 1.0,
            held_over_scale: 1.5,
        }
    }
}
