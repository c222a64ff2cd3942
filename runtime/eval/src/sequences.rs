//! Synthetic challenge frame sequences (issue 13 item 6): camera-like clips built from the sample
//! photos that either perform a challenge (a live person, simulated) or try to fake one (a
//! photo), for calibrating and testing the challenge checker
//! ([`facekey_runtime::challenge::evaluate`]) on exactly what the server computes.
//!
//! Kinds ([`SequenceKind`]):
//! - `genuine`: the face turns ([`face::posed`], a cylinder-plus-relief head model driving a
//!   thin-plate-spline warp, [`tps`]), looks up, blinks (each upper lid's own pixels slid down over
//!   the eye, toned toward the skin, with a dark seam for the lashes, [`paint::slide_lids`]) and opens the mouth (lower lip
//!   and jaw moved down, interior painted dark), with a camera's sway, flicker, noise and JPEG;
//! - `static_photo`: the neutral frame again and again, hand-held (shift, roll, zoom, JPEG noise);
//! - `flat_print`: the neutral frame as a flat print tilted and turned in 3-D in front of a
//!   background, following the challenge's rhythm (what an attacker does to fake a turn);
//! - replays are built at evaluation time from genuine clips (see `challenge` in `main.rs`).
//!
//! Every frame is a pure function of the neutral frame, its 68 landmarks and a seed.

pub mod calibrate;
pub mod commands;
pub mod face;
pub mod observe;
pub mod paint;
pub mod render;
pub mod session_match;
pub mod tps;
pub mod y4m;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use facekey_runtime::challenge::Action;

use self::face::Points68;
use self::render::{Camera, Pose, PrintTilt, encode_jpeg, render_live, render_print};
use crate::EvalError;
use crate::geometry::Homography;
use crate::imageops::background;
use crate::rng::Rng;

/// What a sequence shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SequenceKind {
    /// A (simulated) live face performing the challenge: should pass.
    Genuine,
    /// A photo held in front of the camera: must fail.
    StaticPhoto,
    /// A flat print tilted and turned as a whole: must fail.
    FlatPrint,
    /// A genuine clip that performed another challenge, replayed: must fail.
    ReplayOtherChallenge,
    /// A genuine clip with every frame sent twice: must fail.
    ReplayDuplicated,
    /// A genuine recording of the face doing every action, in an order that holds every
    /// challenge (`EVERY_CHALLENGE`), sent against a random challenge: must fail (it performs
    /// actions the challenge leaves out), unless it starts with that challenge.
    EveryAction,
}

impl SequenceKind {
    /// Every kind, genuine first.
    pub const ALL: [SequenceKind; 6] = [
        Self::Genuine,
        Self::StaticPhoto,
        Self::FlatPrint,
        Self::ReplayOtherChallenge,
        Self::ReplayDuplicated,
        Self::EveryAction,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Genuine => "genuine",
            Self::StaticPhoto => "static_photo",
            Self::FlatPrint => "flat_print",
            Self::ReplayOtherChallenge => "replay_other_challenge",
            Self::ReplayDuplicated => "replay_duplicated",
            Self::EveryAction => "every_action",
        }
    }

    /// Whether the checker must fail it.
    pub fn is_attack(self) -> bool {
        self != Self::Genuine
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for SequenceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A face ready to be animated: a neutral camera frame and its 68 landmarks (as the runtime's
/// landmark model found them in that frame).
#[derive(Debug, Clone)]
pub struct Subject {
    /// Identity name (e.g. `t1-3`).
    pub name: String,
    /// The neutral frame.
    pub neutral: RgbImage,
    /// Its landmarks, image pixels.
    pub landmarks: Points68,
    /// `fr_eye`'s mean open probability on the neutral frame (a face whose open eyes read
    /// closed cannot show a blink as open → closed → open).
    pub eyes_open: f32,
}

/// Frames a face of a photo like a webcam would: a `w x h` window centred on the face box
/// (`bbox` = x, y, width, height in the photo), scaled so the box is `face_fraction` of the
/// frame's height; parts of the window outside the photo show a synthetic wall (no smeared
/// edges), and so do the other faces of the photo (`others`, their boxes grown by half), so a
/// neighbour in a group photo is never the face the pipeline picks. Returns the frame and the
/// photo-to-frame map.
pub fn frame_face(
    photo: &RgbImage,
    bbox: [f64; 4],
    others: &[[f64; 4]],
    w: u32,
    h: u32,
    face_fraction: f64,
    rng: &mut Rng,
) -> (RgbImage, Homography) {
    let [bx, by, bw, bh] = bbox;
    let s = face_fraction * f64::from(h) / bh.max(bw).max(1.0);
    let (cx, cy) = (bx + bw / 2.0, by + bh / 2.0);
    // The face a little above the frame centre, as people sit in front of a webcam.
    let map = Homography::translation(-cx, -cy)
        .then(&Homography::scale(s, s))
        .then(&Homography::translation(
            f64::from(w) / 2.0,
            0.46 * f64::from(h),
        ));
    let wall = background(w, h, rng);
    let mut out = wall.clone();
    crate::geometry::warp_onto(&mut out, photo, &map);
    for o in others {
        let [ox, oy, ow, oh] = *o;
        let (a, b) = (
            map.apply(ox - 0.5 * ow, oy - 0.5 * oh),
            map.apply(ox + 1.5 * ow, oy + 1.5 * oh),
        );
        let (Some(a), Some(b)) = (a, b) else { continue };
        let x0 = a.0.max(0.0).min(f64::from(w)) as u32;
        let x1 = b.0.max(0.0).min(f64::from(w)) as u32;
        let y0 = a.1.max(0.0).min(f64::from(h)) as u32;
        let y1 = b.1.max(0.0).min(f64::from(h)) as u32;
        for y in y0..y1 {
            for x in x0..x1 {
                out.put_pixel(x, y, *wall.get_pixel(x, y));
            }
        }
    }
    (out, map)
}

/// One step of a clip's script.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Client timestamp, ms from the first frame.
    pub t_ms: u64,
    /// The pose a live face has in this frame.
    pub pose: Pose,
    /// The action being performed (ground truth), if any.
    pub performing: Option<Action>,
}

/// Peak amplitudes of one performance of each action.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Amplitudes {
    /// Head yaw of a turn, radians.
    pub yaw: f64,
    /// Head pitch of a look-up, radians.
    pub pitch: f64,
    /// Jaw drop, fraction of the mouth width.
    pub mouth: f64,
}

impl Amplitudes {
    /// Draws plausible amplitudes: turns 20–32°, look-ups 20–30°, jaw drop 0.45–0.7 of the
    /// mouth width (a person asked to open the mouth, not to speak).
    pub fn sample(rng: &mut Rng) -> Self {
        Self {
            yaw: rng.uniform(20.0, 32.0).to_radians(),
            pitch: rng.uniform(20.0, 30.0).to_radians(),
            mouth: rng.uniform(0.45, 0.7),
        }
    }
}

fn pose_of(action: Action, amount: f64, amp: &Amplitudes) -> Pose {
    let mut p = Pose::default();
    match action {
        Action::Blink => p.eyes_closed = amount,
        Action::TurnLeft => p.yaw = amp.yaw * amount,
        Action::TurnRight => p.yaw = -amp.yaw * amount,
        Action::LookUp => p.pitch = amp.pitch * amount,
        Action::OpenMouth => p.mouth_open = amp.mouth * amount,
    }
    p
}

/// The script of a clip performing `challenge` at about `fps` frames per second (per-frame
/// timing jitter ±15 %): a neutral lead-in, then per action a ramp up, a hold and a ramp down
/// (a blink: one closing frame, one or two shut frames, one opening frame), neutral frames
/// between actions and at the end. `slow` stretches every phase by that factor (1 = a brisk
/// person; the y4m for the UI uses about 1 s per action).
pub fn script(challenge: &[Action], fps: f64, slow: f64, rng: &mut Rng) -> Vec<Step> {
    let amp = Amplitudes::sample(rng);
    let frames =
        |base: f64, rng: &mut Rng| ((base * slow).round() as i64 + rng.int(0, 1)).max(1) as usize;
    let mut amounts: Vec<(f64, Option<Action>)> = Vec::new();
    for _ in 0..frames(3.0, rng) {
        amounts.push((0.0, None));
    }
    for &a in challenge {
        if a == Action::Blink {
            let shut = frames(1.0, rng);
            amounts.push((0.55, Some(a)));
            for _ in 0..shut {
                amounts.push((1.0, Some(a)));
            }
            amounts.push((0.45, Some(a)));
        } else {
            let up = frames(2.0, rng);
            for k in 1..=up {
                let t = k as f64 / up as f64;
                amounts.push((0.5 - 0.5 * (std::f64::consts::PI * t).cos(), Some(a)));
            }
            for _ in 0..frames(1.0, rng) {
                amounts.push((1.0, Some(a)));
            }
            let down = frames(2.0, rng);
            for k in 1..down {
                let t = k as f64 / down as f64;
                amounts.push((0.5 + 0.5 * (std::f64::consts::PI * t).cos(), Some(a)));
            }
        }
        for _ in 0..frames(2.0, rng) {
            amounts.push((0.0, None));
        }
    }
    let dt = 1000.0 / fps.max(1.0);
    let mut t = 0.0f64;
    amounts
        .into_iter()
        .map(|(amount, performing)| {
            let step = Step {
                t_ms: t.round() as u64,
                pose: performing.map_or(Pose::default(), |a| pose_of(a, amount, &amp)),
                performing,
            };
            t += dt * rng.uniform(0.85, 1.15);
            step
        })
        .collect()
}

/// A hand-held or head-mounted camera's imperfections for frame after frame: a slow random
/// walk of shift, roll and zoom (scaled by `shake`), exposure flicker, sensor noise and JPEG
/// quality in `quality`.
#[derive(Debug, Clone)]
pub struct CameraWalk {
    state: Camera,
    shake: f64,
    quality: (u8, u8),
}

impl CameraWalk {
    /// A webcam in front of a live person (a laptop's screen wobbles a pixel or two).
    pub fn webcam(rng: &mut Rng) -> Self {
        Self {
            state: Camera {
                noise: rng.uniform(1.5, 3.5),
                ..Camera::STILL
            },
            shake: 0.8,
            quality: (80, 93),
        }
    }

    /// A photo held up by hand (more shake, wider JPEG range).
    pub fn hand_held(rng: &mut Rng) -> Self {
        Self {
            state: Camera {
                noise: rng.uniform(1.5, 4.0),
                ..Camera::STILL
            },
            shake: 2.5,
            quality: (60, 95),
        }
    }

    /// The next frame's camera.
    pub fn next(&mut self, rng: &mut Rng) -> Camera {
        let s = &mut self.state;
        let k = self.shake;
        // Slow drift (a seated person's head and a laptop lid wander a few pixels over seconds
        // and do not come back to the same place), bounded.
        s.shift.0 = (s.shift.0 * 0.97 + 0.9 * k * rng.normal()).clamp(-8.0 * k, 8.0 * k);
        s.shift.1 = (s.shift.1 * 0.97 + 0.9 * k * rng.normal()).clamp(-8.0 * k, 8.0 * k);
        s.roll_deg = (s.roll_deg * 0.85 + 0.25 * k * rng.normal()).clamp(-1.2 * k, 1.2 * k);
        s.scale =
            1.0 + ((s.scale - 1.0) * 0.85 + 0.004 * k * rng.normal()).clamp(-0.02 * k, 0.02 * k);
        s.gain = 1.0 + 0.012 * rng.normal();
        s.jpeg_quality = rng.int(i64::from(self.quality.0), i64::from(self.quality.1)) as u8;
        *s
    }
}

/// One frame of a clip.
#[derive(Debug, Clone)]
pub struct SequenceFrame {
    /// The frame as the client sends it.
    pub jpeg: Vec<u8>,
    /// Client timestamp, ms from the clip's first frame.
    pub t_ms: u64,
    /// The action being performed (genuine clips), if any.
    pub performing: Option<Action>,
}

/// A generated clip.
#[derive(Debug, Clone)]
pub struct Sequence {
    /// Unique id, e.g. `genuine/t1-3/02`.
    pub id: String,
    /// What it shows.
    pub kind: SequenceKind,
    /// Whose face.
    pub identity: String,
    /// The challenge it performs (or, for attacks, the one it is sent against).
    pub challenge: Vec<Action>,
    /// The frames.
    pub frames: Vec<SequenceFrame>,
}

/// A random challenge as the server draws one: 2–3 distinct actions.
pub fn random_challenge(rng: &mut Rng) -> Vec<Action> {
    let mut all = Action::ALL.to_vec();
    rng.shuffle(&mut all);
    let n = rng.int(2, 3) as usize;
    all.truncate(n);
    all
}

/// Generates the clip of `kind` (`genuine`, `static_photo` or `flat_print`) of `subject`
/// performing (or faking) `challenge` at `fps`, from `seed`. `slow` stretches the script.
pub fn generate(
    subject: &Subject,
    kind: SequenceKind,
    challenge: &[Action],
    index: usize,
    fps: f64,
    slow: f64,
    seed: u64,
) -> Result<Sequence, EvalError> {
    let id = format!("{kind}/{}/{index:02}", subject.name);
    let mut rng = Rng::derive(seed, &id);
    let steps = script(challenge, fps, slow, &mut rng);
    let (w, h) = subject.neutral.dimensions();
    let mut frames = Vec::with_capacity(steps.len());
    match kind {
        SequenceKind::Genuine | SequenceKind::EveryAction => {
            let mut cam = CameraWalk::webcam(&mut rng);
            for s in &steps {
                let c = cam.next(&mut rng);
                // Nobody holds their head perfectly still: about 0.7° of yaw and pitch tremor.
                let mut pose = s.pose;
                pose.yaw += 0.012 * rng.normal();
                pose.pitch += 0.012 * rng.normal();
                let (img, _) =
                    render_live(&subject.neutral, &subject.landmarks, &pose, &c, &mut rng)?;
                frames.push(SequenceFrame {
                    jpeg: encode_jpeg(&img, c.jpeg_quality)?,
                    t_ms: s.t_ms,
                    performing: s.performing,
                });
            }
        }
        SequenceKind::StaticPhoto => {
            let mut cam = CameraWalk::hand_held(&mut rng);
            for s in &steps {
                let c = cam.next(&mut rng);
                let (img, _) = render_live(
                    &subject.neutral,
                    &subject.landmarks,
                    &Pose::default(),
                    &c,
                    &mut rng,
                )?;
                frames.push(SequenceFrame {
                    jpeg: encode_jpeg(&img, c.jpeg_quality)?,
                    t_ms: s.t_ms,
                    performing: None,
                });
            }
        }
        SequenceKind::FlatPrint => {
            let mut cam = CameraWalk::webcam(&mut rng);
            let wall = background(w, h, &mut rng);
            let size = rng.uniform(0.75, 0.95);
            // How far the attacker tilts the print for each action (radians).
            let turn = rng.uniform(25.0, 45.0).to_radians();
            let lift = rng.uniform(20.0, 40.0).to_radians();
            let wobble = (
                rng.uniform(-15.0, 15.0).to_radians(),
                rng.uniform(-15.0, 15.0).to_radians(),
            );
            for s in &steps {
                let c = cam.next(&mut rng);
                let p = s.pose;
                let amount = if p == Pose::default() { 0.0 } else { 1.0 };
                let tilt = PrintTilt {
                    yaw: if p.yaw != 0.0 {
                        turn * p.yaw.signum() * (p.yaw.abs() / 0.4).min(1.0)
                    } else {
                        wobble.0 * amount * (p.eyes_closed + p.mouth_open)
                    },
                    pitch: if p.pitch != 0.0 {
                        -lift * (p.pitch / 0.35).min(1.0)
                    } else {
                        wobble.1 * amount * (p.eyes_closed + p.mouth_open)
                    },
                    size,
                };
                let img = render_print(&subject.neutral, &wall, &tilt, &c, &mut rng)?;
                frames.push(SequenceFrame {
                    jpeg: encode_jpeg(&img, c.jpeg_quality)?,
                    t_ms: s.t_ms,
                    performing: None,
                });
            }
        }
        other => {
            return Err(EvalError::Data(format!(
                "{other} clips are built from genuine clips at evaluation time, not rendered"
            )));
        }
    }
    Ok(Sequence {
        id,
        kind,
        identity: subject.name.clone(),
        challenge: challenge.to_vec(),
        frames,
    })
}

/// One clip in `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Clip id.
    pub id: String,
    /// Kind (snake_case).
    pub kind: SequenceKind,
    /// Whose face.
    pub identity: String,
    /// The challenge it performs or is sent against.
    pub actions: Vec<Action>,
    /// Frame files, relative to the manifest.
    pub frames: Vec<String>,
    /// Client timestamps, ms from the first frame.
    pub timestamps_ms: Vec<u64>,
    /// Ground truth per frame: the action being performed, if any.
    pub performing: Vec<Option<Action>>,
}

/// `manifest.json` of `facekey-eval sequences --out DIR`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Seed the clips were generated from.
    pub seed: u64,
    /// Frame size.
    pub frame: (u32, u32),
    /// The clips.
    pub sequences: Vec<ManifestEntry>,
}

impl ManifestEntry {
    /// The entry for `seq` whose frames are written as `<dir>/<NNN>.jpg`.
    pub fn of(seq: &Sequence, dir: &str) -> Self {
        Self {
            id: seq.id.clone(),
            kind: seq.kind,
            identity: seq.identity.clone(),
            actions: seq.challenge.clone(),
            frames: (0..seq.frames.len())
                .map(|i| format!("{dir}/{i:03}.jpg"))
                .collect(),
            timestamps_ms: seq.frames.iter().map(|f| f.t_ms).collect(),
            performing: seq.frames.iter().map(|f| f.performing).collect(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn scripts_perform_every_action_in_order_at_camera_rates() {
        let ch = [Action::OpenMouth, Action::Blink, Action::TurnRight];
        let steps = script(&ch, 12.0, 1.0, &mut Rng::new(5));
        let mut order: Vec<Action> = Vec::new();
        for s in &steps {
            if let Some(a) = s.performing
                && order.last() != Some(&a)
            {
                order.push(a);
            }
        }
        assert_eq!(order, ch);
        for w in steps.windows(2) {
            let dt = w[1].t_ms - w[0].t_ms;
            assert!((70..=96).contains(&dt), "{dt}");
        }
        assert!(steps.first().unwrap().pose == Pose::default());
        assert!(steps.last().unwrap().pose == Pose::default());
        assert!(steps.iter().any(|s| s.pose.eyes_closed == 1.0));
        assert!(steps.iter().any(|s| s.pose.yaw < -0.3));
        assert!(steps.iter().all(|s| s.pose.yaw <= 0.0));
        // Same seed, same script; another seed, another one.
        assert_eq!(steps, script(&ch, 12.0, 1.0, &mut Rng::new(5)));
        assert_ne!(steps, script(&ch, 12.0, 1.0, &mut Rng::new(6)));
    }

    #[test]
    fn random_challenges_are_two_or_three_distinct_actions() {
        let mut rng = Rng::new(9);
        for _ in 0..50 {
            let c = random_challenge(&mut rng);
            assert!((2..=3).contains(&c.len()));
            assert!(c.iter().enumerate().all(|(i, a)| !c[..i].contains(a)));
        }
    }

    #[test]
    fn kinds_round_trip() {
        for k in SequenceKind::ALL {
            assert_eq!(SequenceKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
        }
        assert!(!SequenceKind::Genuine.is_attack());
    }
}
