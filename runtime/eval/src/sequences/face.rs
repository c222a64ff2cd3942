//! A crude 3-D face built from 68 image landmarks (iBUG 300-W order, as `fr_landmark` gives
//! them), and the landmark motions of each challenge action.
//!
//! Depth comes from a generic model, not from the person: a vertical cylinder through the jaw
//! line (depth `0.75 R` at the midline, 0 at the jaw's outermost points), plus per-landmark
//! relief (the nose stands out, the eyes sit back). The photo's own head yaw is read from the
//! nose tip's offset, so a face photographed turned is a turned cylinder (radius `R` = half the
//! jaw width over the cosine of that yaw) whose points are found on it, not a frontal one; rotating
//! these points about the cylinder's axis from that yaw and projecting orthographically gives where
//! the landmarks of a turned or raised head fall; a thin-plate spline then moves the pixels with
//! them.
//!
//! Index ranges (0-based): jaw 0–16 (0 on the image's left), brows 17–26, nose bridge 27–30,
//! nostrils 31–35, eyes 36–41 (image left) and 42–47, outer lips 48–59, inner lips 60–67.

/// 68 landmark positions in image pixels.
pub type Points68 = [(f64, f64); 68];

/// Jaw contour.
pub const JAW: std::ops::RangeInclusive<usize> = 0..=16;
/// The eye on the image's left (the subject's right eye in an unmirrored image).
pub const EYE_A: [usize; 6] = [36, 37, 38, 39, 40, 41];
/// The eye on the image's right.
pub const EYE_B: [usize; 6] = [42, 43, 44, 45, 46, 47];
/// Inner lip contour, clockwise from the left corner: 60, 61, 62, 63 (upper), 64, 65, 66, 67 (lower).
pub const INNER_LIPS: [usize; 8] = [60, 61, 62, 63, 64, 65, 66, 67];
/// Nose tip.
pub const NOSE_TIP: usize = 30;

/// Extra depth of a landmark above the cylinder, in units of `W`.
fn relief(i: usize) -> f64 {
    match i {
        27 => 0.06,
        28 => 0.14,
        29 => 0.24,
        30 => 0.34,
        31 | 35 => 0.10,
        32 | 34 => 0.17,
        33 => 0.22,
        36..=47 => -0.08,
        48..=67 => 0.06,
        7..=9 => 0.04,
        _ => 0.0,
    }
}

/// Depth of the nose tip in front of the cylinder's axis, in units of the radius.
const NOSE_DEPTH: f64 = 0.75 + 0.34;

/// The largest head yaw read from a photo (radians): a nose further out is taken as this turn.
const MAX_REST_YAW: f64 = std::f64::consts::FRAC_PI_4;

/// The face's own frame: origin at the jaw's midpoint level with the nose bridge, `u` along the
/// line from the image-left jaw point to the image-right one, `v` perpendicular (down).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceFrame {
    /// Origin.
    pub origin: (f64, f64),
    /// Unit vector of `u` in the image.
    pub ex: (f64, f64),
    /// Unit vector of `v` in the image.
    pub ey: (f64, f64),
    /// Half the jaw width (pixels).
    pub half_width: f64,
    /// The head's yaw in the photo (radians, the sign of [`posed`]'s), read from the nose tip.
    pub rest_yaw: f64,
    /// The cylinder's radius (pixels): `half_width` over the cosine of `rest_yaw`.
    pub radius: f64,
}

impl FaceFrame {
    /// The frame of `lm`, or `None` for a degenerate face (jaw width under 4 px).
    pub fn of(lm: &Points68) -> Option<FaceFrame> {
        let (l, r) = (lm[0], lm[16]);
        let (dx, dy) = (r.0 - l.0, r.1 - l.1);
        let len = dx.hypot(dy);
        if len < 4.0 || !len.is_finite() {
            return None;
        }
        let ex = (dx / len, dy / len);
        let ey = (-ex.1, ex.0);
        let mid = ((l.0 + r.0) / 2.0, (l.1 + r.1) / 2.0);
        // Slide the origin along v to the nose bridge's level.
        let b = lm[28];
        let t = (b.0 - mid.0) * ey.0 + (b.1 - mid.1) * ey.1;
        let half_width = len / 2.0;
        // The nose tip (on the midline, NOSE_DEPTH R in front of the axis) of a head turned by
        // θ lies NOSE_DEPTH R sin θ from the axis, and the jaw's ends R cos θ: their ratio is
        // NOSE_DEPTH tan θ.
        let n = lm[NOSE_TIP];
        let nose_u = (n.0 - mid.0) * ex.0 + (n.1 - mid.1) * ex.1;
        let rest_yaw = (nose_u / (NOSE_DEPTH * half_width))
            .atan()
            .clamp(-MAX_REST_YAW, MAX_REST_YAW);
        Some(FaceFrame {
            origin: (mid.0 + t * ey.0, mid.1 + t * ey.1),
            ex,
            ey,
            half_width,
            rest_yaw,
            radius: half_width / rest_yaw.cos(),
        })
    }

    /// Image point to `(u, v)`.
    pub fn to_face(&self, p: (f64, f64)) -> (f64, f64) {
        let (dx, dy) = (p.0 - self.origin.0, p.1 - self.origin.1);
        (
            dx * self.ex.0 + dy * self.ex.1,
            dx * self.ey.0 + dy * self.ey.1,
        )
    }

    /// `(u, v)` to an image point.
    pub fn to_image(&self, (u, v): (f64, f64)) -> (f64, f64) {
        (
            self.origin.0 + u * self.ex.0 + v * self.ey.0,
            self.origin.1 + u * self.ex.1 + v * self.ey.1,
        )
    }

    /// Model depth of the head point `u0` across the unturned head, plus `extra` (units of the
    /// radius).
    pub fn depth(&self, u0: f64, extra: f64) -> f64 {
        let r = self.radius;
        let c = (1.0 - (u0 / r).powi(2)).max(0.0).sqrt();
        r * (0.75 * c + extra)
    }

    /// Where the head point `u0` (with relief `extra`) lies across the image and in depth when
    /// the head is turned by `yaw`: `(u, z)`.
    fn turned(&self, u0: f64, extra: f64, yaw: f64) -> (f64, f64) {
        let z0 = self.depth(u0, extra);
        let (s, c) = yaw.sin_cos();
        (u0 * c + z0 * s, -u0 * s + z0 * c)
    }

    /// The head point `u0` seen at `u` in the photo (turned by `rest_yaw`), searched on the half
    /// of the cylinder facing the camera; a point beyond its outline is taken at the outline.
    pub fn head_point(&self, u: f64, extra: f64) -> f64 {
        let (r, t) = (self.radius, self.rest_yaw);
        // The outline: where the turned cylinder's u stops growing (t > 0) or shrinking.
        let k = t.cos() / (0.75 * t.sin().abs()).max(1e-9);
        let edge = r * k / (1.0 + k * k).sqrt();
        let (mut lo, mut hi) = if t >= 0.0 { (-r, edge) } else { (-edge, r) };
        let at = |u0: f64| self.turned(u0, extra, t).0;
        if u <= at(lo) {
            return lo;
        }
        if u >= at(hi) {
            return hi;
        }
        for _ in 0..60 {
            let m = 0.5 * (lo + hi);
            if at(m) < u {
                lo = m;
            } else {
                hi = m;
            }
        }
        0.5 * (lo + hi)
    }

    /// Turns the head point at face coordinates `(u, v)` (relief `extra`, units of the radius)
    /// further by `yaw` (positive: the points in front move toward +u, the image's right) and
    /// raises it by `pitch` (positive: they move up, toward -v) about the cylinder axis, from
    /// the photo's own pose, and projects it back to the image (no pose: the point itself).
    pub fn rotate(&self, (u, v): (f64, f64), extra: f64, yaw: f64, pitch: f64) -> (f64, f64) {
        let u0 = self.head_point(u, extra);
        let (ua, _) = self.turned(u0, extra, self.rest_yaw);
        let (ub, z1) = self.turned(u0, extra, self.rest_yaw + yaw);
        // Moved by the model's displacement, so a point the model does not fit exactly (one
        // beyond the outline) still stays put without a pose.
        let u1 = u + ub - ua;
        let (sp, cp) = pitch.sin_cos();
        // The pitch axis sits behind the face at the level of the ears (v = 0).
        let v1 = v * cp - z1 * sp;
        self.to_image((u1, v1))
    }
}

/// Landmarks of the head turned by `yaw` and raised by `pitch` (radians). `yaw > 0` moves the
/// nose toward the image's right: the person turns to their own left in an unmirrored image.
pub fn posed(lm: &Points68, frame: &FaceFrame, yaw: f64, pitch: f64) -> Points68 {
    let mut out = *lm;
    for (i, o) in out.iter_mut().enumerate() {
        *o = frame.rotate(frame.to_face(lm[i]), relief(i), yaw, pitch);
    }
    out
}

/// Landmarks with the jaw dropped by `drop` pixels along the face's down axis: the lower lip
/// (outer 55–59, inner 65–67) moves by `drop`, the jaw contour by up to `drop` at the chin,
/// tapering to nothing at the jaw's ends; the upper lip and everything above stay.
pub fn mouth_opened(lm: &Points68, frame: &FaceFrame, drop: f64) -> Points68 {
    let mut out = *lm;
    let down = (frame.ey.0 * drop, frame.ey.1 * drop);
    let mv = |p: (f64, f64), k: f64| (p.0 + down.0 * k, p.1 + down.1 * k);
    for i in [55, 56, 57, 58, 59, 65, 66, 67] {
        out[i] = mv(lm[i], 1.0);
    }
    // Mouth corners move a little (the lips stretch round the opening).
    for i in [48, 54, 60, 64] {
        out[i] = mv(lm[i], 0.25);
    }
    for i in JAW {
        let k = 1.0 - (i as f64 - 8.0).abs() / 8.0; // 1 at the chin, 0 at 0 and 16
        out[i] = mv(lm[i], 0.9 * k.powf(0.7));
    }
    out
}

/// Extra control points that move with the head but are not landmarks: the forehead (above the
/// brows) and the cheeks beside the nose, with their relief (units of the radius; so a turn
/// carries the forehead along instead of stretching it).
pub fn virtual_points(lm: &Points68, frame: &FaceFrame) -> Vec<((f64, f64), f64)> {
    let w = frame.half_width;
    let mut out = Vec::new();
    for i in [17, 19, 21, 22, 24, 26] {
        let (u, v) = frame.to_face(lm[i]);
        for lift in [0.35, 0.7] {
            let f = (u * (1.0 - 0.1 * lift), v - lift * w);
            out.push((f, 0.0));
        }
    }
    for (a, b) in [(2, 31), (14, 35), (4, 48), (12, 54)] {
        let (pa, pb) = (frame.to_face(lm[a]), frame.to_face(lm[b]));
        let f = ((pa.0 + pb.0) / 2.0, (pa.1 + pb.1) / 2.0);
        out.push((f, 0.05));
    }
    out
}

/// Anchor points that never move: an ellipse around the face (1.9 W wide, 2.6 W tall each side
/// of the origin) and the image border, so the background stays where it is.
pub fn anchors(frame: &FaceFrame, width: u32, height: u32) -> Vec<(f64, f64)> {
    let w = frame.half_width;
    let mut out: Vec<(f64, f64)> = (0..20)
        .map(|k| {
            let t = std::f64::consts::TAU * f64::from(k) / 20.0;
            frame.to_image((1.9 * w * t.cos(), 0.3 * w + 2.3 * w * t.sin()))
        })
        .collect();
    let (fw, fh) = (f64::from(width) - 1.0, f64::from(height) - 1.0);
    for k in 0..=4 {
        let t = f64::from(k) / 4.0;
        out.extend([(t * fw, 0.0), (t * fw, fh), (0.0, t * fh), (fw, t * fh)]);
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    out.dedup_by(|a, b| (a.0 - b.0).hypot(a.1 - b.1) < 1.0);
    out
}

/// Mean of some landmarks.
pub fn centroid(lm: &Points68, idx: &[usize]) -> (f64, f64) {
    let n = idx.len().max(1) as f64;
    let (sx, sy) = idx
        .iter()
        .fold((0.0, 0.0), |(sx, sy), &i| (sx + lm[i].0, sy + lm[i].1));
    (sx / n, sy / n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    /// A plausible frontal face: jaw 200 px wide centred at (320, 240).
    #[allow(clippy::needless_range_loop)] // Index ranges are the iBUG numbering.
    pub(crate) fn frontal() -> Points68 {
        let mut lm = [(0.0, 0.0); 68];
        for i in 0..=16 {
            let t = std::f64::consts::PI * (i as f64) / 16.0;
            lm[i] = (320.0 - 100.0 * t.cos(), 230.0 + 110.0 * t.sin());
        }
        for k in 0..5 {
            lm[17 + k] = (250.0 + 15.0 * k as f64, 195.0);
            lm[22 + k] = (330.0 + 15.0 * k as f64, 195.0);
        }
        for k in 0..4 {
            lm[27 + k] = (320.0, 215.0 + 15.0 * k as f64);
        }
        for k in 0..5 {
            lm[31 + k] = (304.0 + 8.0 * k as f64, 272.0);
        }
        let eye = |cx: f64| {
            [
                (cx - 18.0, 220.0),
                (cx - 7.0, 213.0),
                (cx + 7.0, 213.0),
                (cx + 18.0, 220.0),
                (cx + 7.0, 226.0),
                (cx - 7.0, 226.0),
            ]
        };
        lm[36..42].copy_from_slice(&eye(280.0));
        lm[42..48].copy_from_slice(&eye(360.0));
        for k in 0..12 {
            let t = std::f64::consts::TAU * k as f64 / 12.0;
            lm[48 + k] = (320.0 - 30.0 * t.cos(), 300.0 - 10.0 * t.sin());
        }
        for k in 0..8 {
            let t = std::f64::consts::TAU * k as f64 / 8.0;
            lm[60 + k] = (320.0 - 24.0 * t.cos(), 300.0 - 1.5 * t.sin());
        }
        lm
    }

    #[test]
    fn yaw_moves_the_nose_more_than_the_jaw_and_in_its_sign() {
        let lm = frontal();
        let f = FaceFrame::of(&lm).unwrap();
        assert!((f.half_width - 100.0).abs() < 1e-9);
        let left = posed(&lm, &f, 0.4, 0.0);
        let jaw_mid = |l: &Points68| (l[0].0 + l[16].0) / 2.0;
        let nose_offset = |l: &Points68| l[NOSE_TIP].0 - jaw_mid(l);
        assert!(nose_offset(&lm).abs() < 1e-9);
        assert!(nose_offset(&left) > 30.0, "{}", nose_offset(&left));
        let right = posed(&lm, &f, -0.4, 0.0);
        assert!(nose_offset(&right) < -30.0);
        // No pose: nothing moves.
        let same = posed(&lm, &f, 0.0, 0.0);
        for (a, b) in same.iter().zip(&lm) {
            assert!((a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9);
        }
    }

    /// A face photographed turned is a turned head, not a frontal one: the photo's yaw is read
    /// back from the nose, turning it back by that yaw brings the nose to where the frontal
    /// face has it, and a further turn moves the nose about as far as it does on the frontal
    /// face (the frontal cylinder gave this off-centre nose less depth: a turn moved it less).
    #[test]
    fn a_face_photographed_turned_turns_from_its_own_pose() {
        let lm = frontal();
        let f = FaceFrame::of(&lm).unwrap();
        assert!(f.rest_yaw.abs() < 1e-9 && (f.radius - 100.0).abs() < 1e-9);
        let photo = posed(&lm, &f, -0.6, 0.0);
        let fp = FaceFrame::of(&photo).unwrap();
        assert!((fp.rest_yaw + 0.6).abs() < 1e-6, "{}", fp.rest_yaw);
        let back = posed(&photo, &fp, 0.6, 0.0);
        assert!(
            (back[NOSE_TIP].0 - lm[NOSE_TIP].0).abs() < 1.0,
            "{:?}",
            back[NOSE_TIP]
        );
        // The frontal cylinder moved this nose 32 px for a turn of 0.4, against 42 px frontal.
        let moved = |a: &Points68, b: &Points68| b[NOSE_TIP].0 - a[NOSE_TIP].0;
        let frontal_turn = moved(&lm, &posed(&lm, &f, 0.4, 0.0));
        let photo_turn = moved(&photo, &posed(&photo, &fp, 0.4, 0.0));
        assert!(
            photo_turn > 0.9 * frontal_turn,
            "{photo_turn} vs {frontal_turn}"
        );
        // No pose: nothing moves, even points the model does not fit.
        let same = posed(&photo, &fp, 0.0, 0.0);
        for (a, b) in same.iter().zip(&photo) {
            assert!((a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9);
        }
    }

    #[test]
    fn pitch_up_raises_the_nose_tip_relative_to_the_eyes() {
        let lm = frontal();
        let f = FaceFrame::of(&lm).unwrap();
        let up = posed(&lm, &f, 0.0, 0.35);
        let eyes = |l: &Points68| centroid(l, &[36, 39, 42, 45]).1;
        let gap = |l: &Points68| l[NOSE_TIP].1 - eyes(l);
        assert!(gap(&up) < gap(&lm) - 8.0, "{} vs {}", gap(&up), gap(&lm));
    }

    #[test]
    fn mouth_opening_parts_the_inner_lips_only_below() {
        let lm = frontal();
        let f = FaceFrame::of(&lm).unwrap();
        let open = mouth_opened(&lm, &f, 20.0);
        assert!((open[66].1 - lm[66].1 - 20.0).abs() < 1e-9);
        assert_eq!(open[62], lm[62]);
        assert_eq!(open[30], lm[30]);
        assert!(open[8].1 > lm[8].1 + 15.0);
        assert!((open[0].1 - lm[0].1).abs() < 1e-9);
    }

    #[test]
    fn anchors_surround_the_face() {
        let lm = frontal();
        let f = FaceFrame::of(&lm).unwrap();
        let a = anchors(&f, 640, 480);
        assert!(a.len() >= 30);
        assert!(a.iter().all(|p| (p.0 - 320.0).hypot(p.1 - 260.0) > 150.0));
    }
}
