//! Passive liveness (presentation-attack detection) with two models: the Deep Tree Network
//! (`expo_FaceAntiSpoofing.onnx`, ~110 ms) and the MiniFASNet-like `fr_liveness.onnx` (~4 ms).
//! Each model's output is mapped to a live score in `[0, 1]` (higher = more live, the model's own
//! decision threshold at 0.5); the configured mode picks one model or combines both.
//!
//! Crops follow the models' source apps: DTN a square of side `max(w, h)` around the face,
//! pulled inside the image, resized to 256x256, RGB / 255, NHWC; fr_liveness the face box scaled
//! 2.7x around its centre and shifted inside the image, resized to 128x128, raw RGB 0–255, NCHW.

use std::time::Duration;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::config::{Combine, LivenessConfig, LivenessMode};
use super::detect::BoundingBox;
use super::imgproc::{Layout, Rect, crop_resize_bilinear};
use super::onnx::{SessionError, SessionPool};
use super::second_opinion::{HumanLiveness, fused_live_score};

/// DTN input side.
pub const DTN_INPUT: usize = 256;
/// fr_liveness input side.
pub const MINIFAS_INPUT: usize = 128;

/// The DTN's raw output and derived score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DtnScore {
    /// `sum(|leaf| * mask)`: the source app's spoof score (lower = more live).
    pub spoof_score: f32,
    /// `2^(-spoof_score / spoof_threshold)`, in `(0, 1]`.
    pub live_score: f32,
}

/// The MiniFASNet-like model's raw output and derived score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MiniFasScore {
    /// Softmax over its three classes (class 0 = live).
    pub probabilities: [f32; 3],
    /// Probability of class 0.
    pub live_score: f32,
}

/// Passive liveness measured on one face: scores only (live or not is the verifier's call).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LivenessResult {
    /// Combined live score in `[0, 1]`; `None` when liveness is off or could not run.
    pub score: Option<f32>,
    /// DTN output, when it ran.
    pub dtn: Option<DtnScore>,
    /// MiniFASNet-like output, when it ran.
    pub minifas: Option<MiniFasScore>,
    /// human_liveness's live probability, when it ran: fused with fr_liveness's
    /// ([`super::second_opinion::fused_live_score`], 0.5 the live boundary) in place of
    /// fr_liveness's score alone (`FACEKEY_PASSIVE_LIVENESS_MODELS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human_liveness: Option<f32>,
    /// Why a configured model could not score the face (no crop possible, inference error);
    /// `None` when every configured model ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl LivenessResult {
    /// A result without any score: liveness could not run, for `reason`.
    pub fn failed(reason: impl Into<String>) -> Self {
        Self {
            score: None,
            dtn: None,
            minifas: None,
            human_liveness: None,
            failure: Some(reason.into()),
        }
    }
}

/// `2^(-spoof / threshold)`: 1 for a zero spoof score, 0.5 at the threshold, halving with every
/// further `threshold` of spoof score. A spoof score that is not a number scores 0 (never live:
/// `f32::max` would otherwise turn NaN into 0 spoof, i.e. fully live).
pub fn dtn_live_score(spoof_score: f32, spoof_threshold: f32) -> f32 {
    if spoof_score.is_nan() {
        return 0.0;
    }
    if spoof_threshold <= 0.0 {
        return if spoof_score <= 0.0 { 1.0 } else { 0.0 };
    }
    (-spoof_score.max(0.0) / spoof_threshold).exp2()
}

/// The DTN spoof score: `sum(|leaf| * mask)`.
pub fn dtn_spoof_score(leaf: &[f32], mask: &[f32]) -> f32 {
    leaf.iter().zip(mask).map(|(l, m)| l.abs() * m).sum()
}

/// Numerically stable softmax of three logits.
pub fn softmax3(logits: [f32; 3]) -> [f32; 3] {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e = logits.map(|v| (v - m).exp());
    let s: f32 = e.iter().sum();
    e.map(|v| v / s)
}

/// Combines per-model live scores under `mode`; `None` when no model ran, or when one that
/// should have gave a score that is not a finite number (unknown, never live: `f32::min` and
/// `max` would silently drop the NaN and keep the other model's score).
pub fn combine_scores(mode: LivenessMode, dtn: Option<f32>, minifas: Option<f32>) -> Option<f32> {
    let dtn = dtn.filter(|v| v.is_finite());
    let minifas = minifas.filter(|v| v.is_finite());
    match (mode, dtn, minifas) {
        (LivenessMode::Off, _, _) => None,
        (LivenessMode::Dtn, Some(d), _) => Some(d),
        (LivenessMode::MiniFas, _, Some(m)) => Some(m),
        (LivenessMode::Both { combine }, Some(d), Some(m)) => Some(match combine {
            Combine::Mean => 0.5 * (d + m),
            Combine::Min => d.min(m),
        }),
        _ => None,
    }
}

/// The DTN crop: a square of side `max(w, h)` centred on the face; where it leaves the image it
/// is shrunk from that corner along the diagonal (as the source app's `limitSquare`), falling back
/// to the clamped face box if nothing square fits.
pub fn dtn_crop(bbox: &BoundingBox, width: u32, height: u32) -> Option<Rect> {
    let (iw, ih) = (i64::from(width), i64::from(height));
    let side = f64::from(bbox.width.max(bbox.height)).round() as i64;
    if side <= 0 || iw <= 0 || ih <= 0 {
        return None;
    }
    let cx = f64::from(bbox.x) + f64::from(bbox.width) / 2.0;
    let cy = f64::from(bbox.y) + f64::from(bbox.height) / 2.0;
    let mut x1 = (cx - side as f64 / 2.0).round() as i64;
    let mut y1 = (cy - side as f64 / 2.0).round() as i64;
    let mut x2 = x1 + side - 1;
    let mut y2 = y1 + side - 1;
    if x1 < 0 || y1 < 0 {
        let len = (-x1).max(-y1);
        x1 += len;
        y1 += len;
    }
    if x2 >= iw || y2 >= ih {
        let len = (x2 - iw + 1).max(y2 - ih + 1);
        x2 -= len;
        y2 -= len;
    }
    let rect = if x1 >= 0 && y1 >= 0 && x2 < iw && y2 < ih && x2 >= x1 && y2 >= y1 {
        (x1, y1, x2 - x1 + 1, y2 - y1 + 1)
    } else {
        let x1 = (bbox.x.floor() as i64).clamp(0, iw - 1);
        let y1 = (bbox.y.floor() as i64).clamp(0, ih - 1);
        let x2 = ((bbox.x + bbox.width).ceil() as i64).clamp(x1 + 1, iw);
        let y2 = ((bbox.y + bbox.height).ceil() as i64).clamp(y1 + 1, ih);
        (x1, y1, x2 - x1, y2 - y1)
    };
    Some(Rect {
        x: rect.0 as u32,
        y: rect.1 as u32,
        w: rect.2 as u32,
        h: rect.3 as u32,
    })
}

/// The fr_liveness crop: the face box scaled by `min(scale, (H-1)/h, (W-1)/w)` around its
/// centre, shifted to stay inside the image (as the package's `alignLivenessImage`).
pub fn minifas_crop(bbox: &BoundingBox, width: u32, height: u32, scale: f32) -> Option<Rect> {
    let (src_w, src_h) = (f64::from(width), f64::from(height));
    // The source app passes integer (truncated) box corners.
    let x = f64::from(bbox.x).trunc();
    let y = f64::from(bbox.y).trunc();
    let bw = (f64::from(bbox.x + bbox.width).trunc() - x).abs();
    let bh = (f64::from(bbox.y + bbox.height).trunc() - y).abs();
    if bw <= 0.0 || bh <= 0.0 || width < 2 || height < 2 {
        return None;
    }
    let s = f64::from(scale)
        .min((src_h - 1.0) / bh)
        .min((src_w - 1.0) / bw);
    let (nw, nh) = (bw * s, bh * s);
    let (cx, cy) = (x + bw / 2.0, y + bh / 2.0);
    let (mut l, mut t, mut r, mut b) = (cx - nw / 2.0, cy - nh / 2.0, cx + nw / 2.0, cy + nh / 2.0);
    if l < 0.0 {
        r -= l;
        l = 0.0;
    }
    if t < 0.0 {
        b -= t;
        t = 0.0;
    }
    if r > src_w - 1.0 {
        l -= r - src_w + 1.0;
        r = src_w - 1.0;
    }
    if b > src_h - 1.0 {
        t -= b - src_h + 1.0;
        b = src_h - 1.0;
    }
    let rx = (l.trunc() as i64).max(0);
    let ry = (t.trunc() as i64).max(0);
    let rw = ((r - l).trunc() as i64).min(i64::from(width) - 1);
    let rh = ((b - t).trunc() as i64).min(i64::from(height) - 1);
    // Keep the rectangle inside the image even after truncation.
    let rw = rw.min(i64::from(width) - rx).max(1);
    let rh = rh.min(i64::from(height) - ry).max(1);
    Some(Rect {
        x: rx as u32,
        y: ry as u32,
        w: rw as u32,
        h: rh as u32,
    })
}

/// Model inference times of one liveness evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LivenessInference {
    /// DTN time, when it ran.
    pub dtn: Option<Duration>,
    /// fr_liveness time, when it ran.
    pub minifas: Option<Duration>,
    /// human_liveness time, when it ran.
    pub human_liveness: Option<Duration>,
}

/// The configured liveness models.
#[derive(Debug)]
pub struct LivenessChecker {
    dtn: Option<SessionPool>,
    minifas: Option<SessionPool>,
    human: Option<HumanLiveness>,
    config: LivenessConfig,
}

impl LivenessChecker {
    /// Wraps the sessions the configured mode needs (`None` for models it does not use).
    pub fn new(
        dtn: Option<SessionPool>,
        minifas: Option<SessionPool>,
        config: LivenessConfig,
    ) -> Self {
        Self {
            dtn,
            minifas,
            human: None,
            config,
        }
    }

    /// Fuses human_liveness with fr_liveness wherever fr_liveness runs
    /// (`fr_liveness+human_liveness`).
    pub fn with_human_liveness(mut self, human: HumanLiveness) -> Self {
        self.human = Some(human);
        self
    }

    /// Whether human_liveness is fused with fr_liveness.
    pub fn fuses_human_liveness(&self) -> bool {
        self.human.is_some()
    }

    /// The configuration in use.
    pub fn config(&self) -> &LivenessConfig {
        &self.config
    }

    /// Scores the face in `bbox` of `img`. Never fails: a configured model that cannot score
    /// the face (no crop fits, inference error) is recorded in [`LivenessResult::failure`] and
    /// leaves the score empty, which the verifier judges `unknown` (never live).
    pub fn check(&self, img: &RgbImage, bbox: &BoundingBox) -> (LivenessResult, LivenessInference) {
        let cfg = &self.config;
        let mut timing = LivenessInference::default();
        let (w, h) = img.dimensions();
        let mut dtn_out = None;
        let mut minifas_out = None;
        let mut failures: Vec<String> = Vec::new();

        if cfg.mode.uses_dtn() {
            match (&self.dtn, dtn_crop(bbox, w, h)) {
                (None, _) => failures.push("dtn: model not loaded".into()),
                (_, None) => failures.push("dtn: no crop fits the face box in the image".into()),
                (Some(session), Some(rect)) => {
                    match run_dtn(session, img, rect, cfg.dtn_spoof_threshold) {
                        Ok((score, took)) => {
                            timing.dtn = Some(took);
                            dtn_out = Some(score);
                        }
                        Err(e) => failures.push(format!("dtn: {e}")),
                    }
                }
            }
        }
        if cfg.mode.uses_minifas() {
            match (
                &self.minifas,
                minifas_crop(bbox, w, h, cfg.minifas_crop_scale),
            ) {
                (None, _) => failures.push("minifas: model not loaded".into()),
                (_, None) => {
                    failures.push("minifas: no crop fits the face box in the image".into());
                }
                (Some(session), Some(rect)) => match run_minifas(session, img, rect) {
                    Ok((score, took)) => {
                        timing.minifas = Some(took);
                        minifas_out = Some(score);
                    }
                    Err(e) => failures.push(format!("minifas: {e}")),
                },
            }
        }
        // fr_liveness's part of the score: its own probability, or fused with human_liveness.
        // A human_liveness failure leaves no score at all (unknown, never live).
        let mut human_out = None;
        let mut minifas_part = minifas_out.map(|m| m.live_score);
        if let (Some(human), Some(fr)) = (&self.human, minifas_part) {
            match human.check(img, bbox) {
                Ok((p, _)) if !p.is_finite() => {
                    failures.push(format!("human_liveness: probability {p} is not a number"));
                    minifas_part = None;
                }
                Ok((p, took)) => {
                    timing.human_liveness = Some(took);
                    human_out = Some(p);
                    minifas_part = Some(fused_live_score(f64::from(fr), f64::from(p)) as f32);
                }
                Err(e) => {
                    failures.push(format!("human_liveness: {e}"));
                    minifas_part = None;
                }
            }
        }

        let score = combine_scores(cfg.mode, dtn_out.map(|d| d.live_score), minifas_part);
        if !failures.is_empty() {
            tracing::warn!(failure = %failures.join("; "), "passive liveness could not score a face");
        }
        (
            LivenessResult {
                score,
                dtn: dtn_out,
                minifas: minifas_out,
                human_liveness: human_out,
                failure: (!failures.is_empty()).then(|| failures.join("; ")),
            },
            timing,
        )
    }
}

/// Runs the DTN on `rect` of `img`.
fn run_dtn(
    session: &SessionPool,
    img: &RgbImage,
    rect: Rect,
    spoof_threshold: f32,
) -> Result<(DtnScore, Duration), SessionError> {
    let mut input = vec![0.0f32; DTN_INPUT * DTN_INPUT * 3];
    crop_resize_bilinear(
        img,
        rect,
        DTN_INPUT,
        DTN_INPUT,
        1.0 / 255.0,
        Layout::Hwc,
        &mut input,
    );
    let (spoof, took) = session.run(&[1, DTN_INPUT, DTN_INPUT, 3], &input, |out| {
        let (ls, leaf) = session.output(out, 0)?;
        let (ms, mask) = session.output(out, 1)?;
        if ls != [1, 8] || ms != [1, 8] {
            return Err(SessionError::Output {
                model: session.name(),
                detail: format!("expected two [1, 8] outputs, got {ls:?} and {ms:?}"),
            });
        }
        let spoof = dtn_spoof_score(leaf, mask);
        if !spoof.is_finite() {
            return Err(SessionError::Output {
                model: session.name(),
                detail: format!("spoof score is not a finite number ({spoof})"),
            });
        }
        Ok(spoof)
    })?;
    Ok((
        DtnScore {
            spoof_score: spoof,
            live_score: dtn_live_score(spoof, spoof_threshold),
        },
        took,
    ))
}

/// Runs the MiniFASNet-like model on `rect` of `img`.
fn run_minifas(
    session: &SessionPool,
    img: &RgbImage,
    rect: Rect,
) -> Result<(MiniFasScore, Duration), SessionError> {
    let mut input = vec![0.0f32; MINIFAS_INPUT * MINIFAS_INPUT * 3];
    crop_resize_bilinear(
        img,
        rect,
        MINIFAS_INPUT,
        MINIFAS_INPUT,
        1.0,
        Layout::Chw,
        &mut input,
    );
    let (probs, took) = session.run(&[1, 3, MINIFAS_INPUT, MINIFAS_INPUT], &input, |out| {
        let (shape, logits) = session.output(out, 0)?;
        if shape != [1, 3] {
            return Err(SessionError::Output {
                model: session.name(),
                detail: format!("expected [1, 3], got {shape:?}"),
            });
        }
        if !logits.iter().take(3).all(|v| v.is_finite()) {
            return Err(SessionError::Output {
                model: session.name(),
                detail: format!("logits are not finite numbers ({:?})", &logits[..3]),
            });
        }
        Ok(softmax3([logits[0], logits[1], logits[2]]))
    })?;
    Ok((
        MiniFasScore {
            probabilities: probs,
            live_score: probs[0],
        },
        took,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn bb(x: f32, y: f32, w: f32, h: f32) -> BoundingBox {
        BoundingBox {
            x,
            y,
            width: w,
            height: h,
        }
    }

    #[test]
    fn dtn_score_mapping() {
        assert_eq!(dtn_live_score(0.0, 0.2), 1.0);
        assert!((dtn_live_score(0.2, 0.2) - 0.5).abs() < 1e-6);
        assert!((dtn_live_score(0.4, 0.2) - 0.25).abs() < 1e-6);
        assert!(dtn_live_score(5.0, 0.2) < 1e-6);
        assert_eq!(dtn_live_score(f32::NAN, 0.2), 0.0, "NaN spoof is not live");
        assert_eq!(dtn_live_score(f32::INFINITY, 0.2), 0.0);
        assert_eq!(dtn_spoof_score(&[-0.5, 0.3, 2.0], &[1.0, 0.0, 0.5]), 1.5);
    }

    #[test]
    fn softmax_is_normalised() {
        let p = softmax3([2.0, 1.0, -1.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[0] > p[1] && p[1] > p[2]);
        let big = softmax3([1000.0, 0.0, 0.0]);
        assert!((big[0] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn combination_modes() {
        let both_mean = LivenessMode::Both {
            combine: Combine::Mean,
        };
        let both_min = LivenessMode::Both {
            combine: Combine::Min,
        };
        assert_eq!(combine_scores(both_mean, Some(0.2), Some(0.8)), Some(0.5));
        assert_eq!(combine_scores(both_min, Some(0.2), Some(0.8)), Some(0.2));
        assert_eq!(
            combine_scores(LivenessMode::Dtn, Some(0.3), None),
            Some(0.3)
        );
        assert_eq!(
            combine_scores(LivenessMode::MiniFas, None, Some(0.9)),
            Some(0.9)
        );
        assert_eq!(
            combine_scores(LivenessMode::Off, Some(1.0), Some(1.0)),
            None
        );
        assert_eq!(combine_scores(both_mean, None, Some(0.9)), None);
        // A model output that is not a number is unknown, never live (nor dropped in favour of
        // the other model's score).
        assert_eq!(combine_scores(both_min, Some(f32::NAN), Some(0.9)), None);
        assert_eq!(
            combine_scores(both_mean, Some(0.9), Some(f32::INFINITY)),
            None
        );
        assert_eq!(
            combine_scores(LivenessMode::Dtn, Some(f32::NAN), None),
            None
        );
        assert_eq!(
            combine_scores(LivenessMode::MiniFas, None, Some(f32::NAN)),
            None
        );
    }

    #[test]
    fn dtn_crop_is_centred_square_inside_image() {
        let r = dtn_crop(&bb(100.0, 100.0, 80.0, 100.0), 640, 480).unwrap();
        assert_eq!((r.w, r.h), (100, 100));
        assert_eq!((r.x, r.y), (90, 100));
        // Near the top-left corner the square is shrunk along the diagonal.
        let r = dtn_crop(&bb(0.0, 2.0, 40.0, 60.0), 640, 480).unwrap();
        assert_eq!((r.x, r.y), (0, 2 + 10));
        assert_eq!(r.w, r.h);
        assert!(r.x + r.w <= 640 && r.y + r.h <= 480);
        // Bottom-right corner.
        let r = dtn_crop(&bb(600.0, 440.0, 39.0, 39.0), 640, 480).unwrap();
        assert!(r.x + r.w <= 640 && r.y + r.h <= 480);
        assert!(dtn_crop(&bb(0.0, 0.0, 0.0, 0.0), 640, 480).is_none());
    }

    #[test]
    fn minifas_crop_scales_and_shifts_inside() {
        // 100x100 face in the middle of a big image: 270x270 around the centre (100 * 2.7 is
        // 270.00000000000003 in floating point, so the left edge truncates to 414 as in JS).
        let r = minifas_crop(&bb(500.0, 500.0, 100.0, 100.0), 2000, 2000, 2.7).unwrap();
        assert_eq!((r.x, r.y, r.w, r.h), (414, 414, 270, 270));
        // Near the left edge it is shifted right, not cut.
        let r = minifas_crop(&bb(10.0, 500.0, 100.0, 100.0), 2000, 2000, 2.7).unwrap();
        assert_eq!((r.x, r.w), (0, 270));
        // A face almost as large as the image: scale limited by (size - 1) / box.
        let r = minifas_crop(&bb(10.0, 10.0, 100.0, 100.0), 120, 120, 2.7).unwrap();
        assert!(r.x + r.w <= 120 && r.y + r.h <= 120);
        assert!(minifas_crop(&bb(0.0, 0.0, 0.5, 0.5), 100, 100, 2.7).is_none());
    }
}
