//! Camera frames synthesised from a real face for challenge sessions (shared by the liveness
//! test files): landmark-driven warps for head turns, pitch and mouth, eyes painted shut for a
//! blink. What the checker sees, not what a camera of a live person gives.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use base64::Engine as _;
use facekey_runtime::challenge::Action;
use facekey_runtime::vision::landmarks::{ChallengeModels, eye_crop, observe_frame};
use facekey_runtime::vision::{Vision, VisionConfig};
use image::{Rgb, RgbImage};
use serde_json::{Value, json};

use crate::common::{Running, face, send_json};

pub fn models() -> &'static (Vision, ChallengeModels) {
    static M: OnceLock<(Vision, ChallengeModels)> = OnceLock::new();
    M.get_or_init(|| {
        let cfg = VisionConfig::default();
        (
            Vision::load(cfg.clone()).unwrap(),
            ChallengeModels::load(&cfg).unwrap(),
        )
    })
}

pub fn astronaut() -> RgbImage {
    image::load_from_memory(&face("astronaut.png"))
        .unwrap()
        .to_rgb8()
}

/// Landmarks of the base face, for placing warps.
pub struct Geometry {
    nose: (f32, f32),
    /// Lip line (between the inner lips): centre x, y, and half the inner mouth width.
    mouth: (f32, f32, f32),
    width: f32,
    eyes: Vec<facekey_runtime::vision::imgproc::Rect>,
}

pub fn geometry(img: &RgbImage) -> Geometry {
    let (v, m) = models();
    let obs = observe_frame(v, m, img, 0);
    let f = obs.face.expect("a face in the base image");
    let lm = &f.landmarks;
    let nose = lm.at(30);
    let (ml, mr) = (lm.at(60), lm.at(64));
    let lip_y = (lm.at(62).y + lm.at(66).y) / 2.0;
    Geometry {
        nose: (nose.x, nose.y),
        mouth: ((ml.x + mr.x) / 2.0, lip_y, (mr.x - ml.x).abs() / 2.0),
        width: f.bbox.width,
        eyes: [36, 42]
            .iter()
            .map(|&e| eye_crop(lm, e, img.width(), img.height()).unwrap())
            .collect(),
    }
}

pub fn sample(img: &RgbImage, x: f32, y: f32) -> Rgb<u8> {
    let xi = x.round().clamp(0.0, img.width() as f32 - 1.0) as u32;
    let yi = y.round().clamp(0.0, img.height() as f32 - 1.0) as u32;
    *img.get_pixel(xi, yi)
}

/// Backward warp: each output pixel samples the input at `(x, y) - d(x, y)`.
pub fn warp(img: &RgbImage, d: impl Fn(f32, f32) -> (f32, f32)) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let (dx, dy) = d(x as f32, y as f32);
        sample(img, x as f32 - dx, y as f32 - dy)
    })
}

pub fn bump(x: f32, y: f32, c: (f32, f32), sigma: f32) -> f32 {
    (-((x - c.0).powi(2) + (y - c.1).powi(2)) / (2.0 * sigma * sigma)).exp()
}

/// A frame of the base face performing `action` at its peak (`None`: neutral).
pub fn pose(base: &RgbImage, g: &Geometry, action: Option<Action>) -> RgbImage {
    let w = g.width;
    match action {
        None => base.clone(),
        Some(Action::TurnLeft) => warp(base, |x, y| (0.25 * w * bump(x, y, g.nose, 0.3 * w), 0.0)),
        Some(Action::TurnRight) => {
            warp(base, |x, y| (-0.25 * w * bump(x, y, g.nose, 0.3 * w), 0.0))
        }
        Some(Action::LookUp) => warp(base, |x, y| (0.0, -0.18 * w * bump(x, y, g.nose, 0.2 * w))),
        Some(Action::OpenMouth) => {
            // Part the lips: everything below the lip line moves down (most at the mouth's
            // centre, fading toward the corners and the chin); the gap shows a dark inside.
            let (mx, ly, half) = g.mouth;
            let gap = 0.22 * w;
            let profile = |x: f32| (1.0 - ((x - mx) / (1.6 * half)).powi(2)).max(0.0).sqrt();
            let mut out = warp(base, |x, y| {
                if y < ly {
                    return (0.0, 0.0);
                }
                let wy = (1.0 - (y - ly) / (0.8 * w)).clamp(0.0, 1.0);
                (0.0, gap * profile(x) * wy)
            });
            for y in ly as u32..(ly + gap) as u32 {
                for x in (mx - 1.6 * half) as u32..(mx + 1.6 * half) as u32 {
                    let inner = (1.0 - ((x as f32 - mx) / half).powi(2)).max(0.0).sqrt();
                    if (y as f32) < ly + gap * inner * 0.85 {
                        out.put_pixel(x, y, Rgb([70, 30, 30]));
                    }
                }
            }
            out
        }
        Some(Action::Blink) => {
            let mut out = base.clone();
            for r in &g.eyes {
                let skin_y = (r.y + r.h + r.h / 4).min(base.height() - 1);
                for y in r.y + r.h / 4..r.y + r.h * 3 / 4 {
                    for x in r.x..r.x + r.w {
                        out.put_pixel(x, y, *base.get_pixel(x, skin_y));
                    }
                }
                let my = r.y + r.h / 2;
                for x in r.x + r.w / 5..r.x + r.w * 4 / 5 {
                    out.put_pixel(x, my, Rgb([40, 30, 30]));
                }
            }
            out
        }
    }
}

/// Brightens every pixel by `k` (so no two frames are identical, as with a camera).
pub fn brighten(img: &RgbImage, k: u8) -> RgbImage {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        p.0 = p.0.map(|v| v.saturating_add(k));
    }
    out
}

pub fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
        .encode_image(img)
        .unwrap();
    out.into_inner()
}

/// The frames performing `challenge`: neutral, then each action's peak and a neutral frame,
/// marked as one recording ([`mark`]) distinct from every other call's, as two sessions of a
/// camera are: the server refuses a session repeating an accepted one's frames as a replay.
pub fn performance(challenge: &[Action]) -> Vec<RgbImage> {
    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
    performance_marked(
        challenge,
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    )
}

/// [`performance`] with the recording's mark given: two calls with the same mark give the same
/// frame for each step they share (a replayed recording).
pub fn performance_marked(challenge: &[Action], recording: u8) -> Vec<RgbImage> {
    let base = astronaut();
    let g = geometry(&base);
    let mut frames = vec![mark(&mark_frame(&brighten(&base, 0), 0), recording)];
    for &a in challenge {
        for step in [Some(a), None] {
            let k = frames.len() as u8 * 3;
            let frame = mark_frame(&brighten(&pose(&base, &g, step), k), frames.len());
            frames.push(mark(&frame, recording));
        }
    }
    frames
}

/// Paints frame `index`'s bits into the fingerprint grid's top row (background, away from the
/// face), two cells a bit: the neutral frames of one recording, the same pose brightened, would
/// otherwise have one shape, which the checker refuses as a frame sent again re-toned. A live
/// camera's frames differ by noise and motion; these differ by two cells at least.
pub fn mark_frame(img: &RgbImage, index: usize) -> RgbImage {
    let mut out = img.clone();
    let (w, h) = (out.width(), out.height());
    let side = 16;
    for cell in 0..16u32 {
        let white = (index >> (cell / 2)) & 1 == 1;
        let v = if white { 255 } else { 0 };
        for y in 0..h / side {
            for x in w * cell / side..w * (cell + 1) / side {
                out.put_pixel(x, y, Rgb([v, v, v]));
            }
        }
    }
    out
}

/// Paints `recording`'s bits into the fingerprint grid's bottom row, two cells a bit (0 black,
/// 1 white; the suit and flag, away from the face): frames of two different recordings differ
/// there by two whole cells, about 0.035 in the replay record's shape units (its bound is
/// 0.012), whatever their brightness.
pub fn mark(img: &RgbImage, recording: u8) -> RgbImage {
    let mut out = img.clone();
    let (w, h) = (out.width(), out.height());
    let side = 16;
    for cell in 0..16u32 {
        let white = (recording >> (cell / 2)) & 1 == 1;
        let v = if white { 255 } else { 0 };
        for y in h * (side - 1) / side..h {
            for x in w * cell / side..w * (cell + 1) / side {
                out.put_pixel(x, y, Rgb([v, v, v]));
            }
        }
    }
    out
}

/// `{"frames": [...]}` of `frames` as JPEG, timestamps from `t0` 150 ms apart.
pub fn frames_json(frames: &[RgbImage], t0: u64) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    json!({
        "frames": frames
            .iter()
            .enumerate()
            .map(|(i, f)| json!({"image": b64.encode(jpeg(f)), "timestamp_ms": t0 + 150 * i as u64}))
            .collect::<Vec<_>>()
    })
}

/// Opens a session with `client` (bound to `subject` when given): its id and challenge.
pub async fn open_session(
    s: &Running,
    client: &reqwest::Client,
    subject: Option<&str>,
) -> (String, Vec<Action>) {
    let body = subject.map_or_else(|| json!({}), |id| json!({ "subject": id }));
    let (status, v) = send_json(client.post(s.url("/v1/liveness/sessions")).json(&body)).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{v}");
    let challenge = serde_json::from_value(v["challenge"].clone()).unwrap();
    (v["id"].as_str().unwrap().to_owned(), challenge)
}

/// Sends the frames performing `challenge` to session `id`; it must pass.
pub async fn perform(s: &Running, client: &reqwest::Client, id: &str, challenge: &[Action]) {
    let (status, fb) = send_json(
        client
            .post(s.url(&format!("/v1/liveness/sessions/{id}/frames")))
            .json(&frames_json(&performance(challenge), 1_000)),
    )
    .await;
    assert_eq!(
        (status, &fb["state"]),
        (reqwest::StatusCode::OK, &json!("passed")),
        "{fb}"
    );
}

/// Opens a session with `client` (bound to `subject` when given) and performs its challenge
/// with the frames of `recording` ([`performance_marked`]): the passed session's id.
pub async fn passed_recording(
    s: &Running,
    client: &reqwest::Client,
    subject: Option<&str>,
    recording: u8,
) -> String {
    passed_recording_brightened(s, client, subject, recording, 0).await
}

/// [`passed_recording`] with every frame brightened by `k` grey levels (a copy of the
/// recording a replay attacker altered).
pub async fn passed_recording_brightened(
    s: &Running,
    client: &reqwest::Client,
    subject: Option<&str>,
    recording: u8,
    k: u8,
) -> String {
    let (id, challenge) = open_session(s, client, subject).await;
    let frames: Vec<RgbImage> = performance_marked(&challenge, recording)
        .iter()
        .map(|f| brighten(f, k))
        .collect();
    let (status, fb) = send_json(
        client
            .post(s.url(&format!("/v1/liveness/sessions/{id}/frames")))
            .json(&frames_json(&frames, 1_000)),
    )
    .await;
    assert_eq!(
        (status, &fb["state"]),
        (reqwest::StatusCode::OK, &json!("passed")),
        "{fb}"
    );
    id
}

/// Opens a session with `client` and performs its challenge: the passed session's id.
pub async fn passed_session(
    s: &Running,
    client: &reqwest::Client,
    subject: Option<&str>,
) -> String {
    let (id, challenge) = open_session(s, client, subject).await;
    perform(s, client, &id, &challenge).await;
    id
}
