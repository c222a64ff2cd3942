//! Per-frame geometric signals from the 68 landmarks, each a ratio of landmark distances so it
//! does not depend on face size, and mostly invariant to moving a flat print as a whole (an
//! affine squeeze of a photo keeps ratios along each axis):
//! - yaw: nose-tip offset from the jaw midline over the jaw width (positive: nose toward the
//!   image's right, i.e. the person turned to their own left);
//! - pitch: eye line to nose tip over eye line to the nostrils, along the face's own vertical
//!   axis (drops when looking up; the nose and eyes do not move when the mouth opens);
//! - mouth opening: inner-lip gap over the eyes-to-nose-tip distance;
//! - eye opening: mean eyelid gap over the eyes-to-nose-tip distance, the landmark half of the
//!   blink check (judged relative to the person's own open baseline in the session);
//! - eye aspect ratio (EAR, Soukupová & Čech 2016), reported for diagnostics and evaluation.

use super::Landmarks68;
use crate::vision::detect::Point;

fn dist(a: Point, b: Point) -> f32 {
    ((a.x - b.x).powi(2) + (a.y - b.y).powi(2)).sqrt()
}

fn mid(a: Point, b: Point) -> Point {
    Point {
        x: 0.5 * (a.x + b.x),
        y: 0.5 * (a.y + b.y),
    }
}

fn finite(v: f32) -> Option<f32> {
    v.is_finite().then_some(v)
}

/// Yaw signal: `(nose_tip.x - jaw_mid.x) / jaw_width`, using jaw points 0 and 16 and nose tip 30.
/// About 0 for a frontal face; positive when the nose is toward the image's right.
pub fn yaw(lm: &Landmarks68) -> Option<f32> {
    let (l, r, nose) = (lm.at(0), lm.at(16), lm.at(30));
    let width = r.x - l.x;
    if width.abs() < 1e-3 {
        return None;
    }
    finite((nose.x - 0.5 * (l.x + r.x)) / width)
}

/// Pitch signal: how far the nose tip (30) lies below the eye line, over how far the nostrils
/// (mean of 31–35) lie below it, both measured along the face's own vertical axis (perpendicular
/// to the line through the eye centres 36–41 and 42–47, so a rolled head reads the same). 0.66–0.97
/// frontal on the lab's faces; smaller when the head pitches up, because the tip stands further out of the
/// face than the nostrils and rises more. Only the eyes and the nose enter it: an open mouth or
/// a dropped jaw does not move it (the mouth-centre denominator it replaces dropped with the jaw,
/// so an open mouth read as a look-up), and a flat print pitched as a whole scales both lengths
/// alike.
pub fn pitch(lm: &Landmarks68) -> Option<f32> {
    let (l, r) = (eye_centre(lm, 36), eye_centre(lm, 42));
    let eye_line = dist(l, r);
    if eye_line < 1e-3 {
        return None;
    }
    let eyes = mid(l, r);
    // Unit vector down the face: the eye line turned by 90 degrees.
    let (dx, dy) = (-(r.y - l.y) / eye_line, (r.x - l.x) / eye_line);
    let below = |p: Point| (p.x - eyes.x) * dx + (p.y - eyes.y) * dy;
    let mut nostrils = Point { x: 0.0, y: 0.0 };
    for i in 31..=35 {
        let p = lm.at(i);
        nostrils.x += p.x / 5.0;
        nostrils.y += p.y / 5.0;
    }
    let span = below(nostrils);
    if span.abs() < 1e-3 {
        return None;
    }
    finite(below(lm.at(30)) / span)
}

/// Mouth opening: mean inner-lip gap (61–67, 62–66, 63–65) over the distance from the eyes'
/// midpoint to the nose tip (30). Both lengths run roughly vertically in the face, so a flat print
/// turned about its vertical axis (a horizontal squeeze) does not open the mouth, as it would
/// with the mouth width as denominator; the eyes and nose do not move when the mouth opens.
pub fn mouth_opening(lm: &Landmarks68) -> Option<f32> {
    let eyes = mid(eye_centre(lm, 36), eye_centre(lm, 42));
    let span = dist(eyes, lm.at(30));
    if span < 1e-3 {
        return None;
    }
    let gap =
        (dist(lm.at(61), lm.at(67)) + dist(lm.at(62), lm.at(66)) + dist(lm.at(63), lm.at(65)))
            / 3.0;
    finite(gap / span)
}

/// Eye opening: mean eyelid gap of both eyes (37–41, 38–40, 43–47, 44–46) over the distance
/// from the eyes' midpoint to the nose tip (30). Like the eye aspect ratio it falls when the lids
/// close, but both lengths run roughly vertically in the face, so a flat print pitched toward
/// or away from the camera (a vertical squeeze) keeps it, where it would shrink the EAR.
pub fn eye_opening(lm: &Landmarks68) -> Option<f32> {
    let eyes = mid(eye_centre(lm, 36), eye_centre(lm, 42));
    let span = dist(eyes, lm.at(30));
    if span < 1e-3 {
        return None;
    }
    let gap = (dist(lm.at(37), lm.at(41))
        + dist(lm.at(38), lm.at(40))
        + dist(lm.at(43), lm.at(47))
        + dist(lm.at(44), lm.at(46)))
        / 4.0;
    finite(gap / span)
}

/// Centre of the six points of the eye starting at `first` (36 or 42).
pub fn eye_centre(lm: &Landmarks68, first: usize) -> Point {
    let (mut x, mut y) = (0.0, 0.0);
    for i in first..first + 6 {
        let p = lm.at(i);
        x += p.x;
        y += p.y;
    }
    Point {
        x: x / 6.0,
        y: y / 6.0,
    }
}

/// Width of the eye starting at `first`: distance between its corners (first, first + 3).
pub fn eye_width(lm: &Landmarks68, first: usize) -> f32 {
    dist(lm.at(first), lm.at(first + 3))
}

/// Eye aspect ratio of both eyes, averaged: `(|p2-p6| + |p3-p5|) / (2 |p1-p4|)`.
pub fn eye_aspect_ratio(lm: &Landmarks68) -> Option<f32> {
    let ear = |f: usize| {
        let w = dist(lm.at(f), lm.at(f + 3));
        (w > 1e-3).then(|| {
            (dist(lm.at(f + 1), lm.at(f + 5)) + dist(lm.at(f + 2), lm.at(f + 4))) / (2.0 * w)
        })
    };
    finite(0.5 * (ear(36)? + ear(42)?))
}

/// The frontal synthetic face of this module's tests, for other modules' tests.
#[cfg(test)]
pub(crate) fn tests_face() -> Landmarks68 {
    tests::face(0.0, 0.0, 0.0, 1.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    /// A frontal synthetic face: 68 points of a 100-px-wide face around (200, 200), with knobs
    /// for yaw (nose and inner features shifted along x), pitch (nose tip shifted up by
    /// `40 × pitch_up` px, the nostrils by half that), mouth gap and eye opening. The pitch
    /// signal is `(30 - 40 u) / (35 - 20 u)` for `pitch_up = u`: 0.857 level. Shared by the checker's tests.
    pub(crate) fn face(yaw: f32, pitch_up: f32, mouth_gap: f32, eye_open: f32) -> Landmarks68 {
        let mut p = vec![Point { x: 0.0, y: 0.0 }; 68];
        let (cx, cy) = (200.0f32, 200.0f32);
        // Jaw 0..=16 from (150, 180) round to (250, 180) via the chin at (200, 260).
        for (i, q) in p.iter_mut().enumerate().take(17) {
            let t = i as f32 / 16.0 * std::f32::consts::PI;
            *q = Point {
                x: cx - 50.0 * t.cos(),
                y: cy - 20.0 + 60.0 * t.sin(),
            };
        }
        let shift = yaw * 100.0; // inner features follow the nose direction
        for (i, q) in p.iter_mut().enumerate().take(27).skip(17) {
            *q = Point {
                x: cx - 40.0 + (i - 17) as f32 * 9.0 + 0.5 * shift,
                y: cy - 45.0,
            };
        }
        // Nose bridge 27..=30 down to the tip, 31..=35 nostrils.
        for (k, q) in p.iter_mut().enumerate().take(31).skip(27) {
            *q = Point {
                x: cx + shift,
                y: cy - 30.0 + (k - 27) as f32 * 10.0 - pitch_up * 40.0 * (k - 27) as f32 / 3.0,
            };
        }
        for (k, q) in p.iter_mut().enumerate().take(36).skip(31) {
            *q = Point {
                x: cx - 10.0 + (k - 31) as f32 * 5.0 + shift,
                // The nostrils stand out of the face less than the tip: they rise half as much.
                y: cy + 5.0 - pitch_up * 20.0,
            };
        }
        // Eyes: corners 20 px apart; lids `eye_open * 4` px from the centre line.
        for (first, ex) in [(36usize, cx - 25.0), (42, cx + 25.0)] {
            let ex = ex + 0.5 * shift;
            let ey = cy - 30.0;
            let h = 4.0 * eye_open;
            let pts = [
                (ex - 10.0, ey),
                (ex - 4.0, ey - h),
                (ex + 4.0, ey - h),
                (ex + 10.0, ey),
                (ex + 4.0, ey + h),
                (ex - 4.0, ey + h),
            ];
            for (j, (x, y)) in pts.into_iter().enumerate() {
                p[first + j] = Point { x, y };
            }
        }
        // Mouth: corners 48 and 54 at y = cy + 30, outer lips, inner lips with `mouth_gap` px.
        let my = cy + 30.0;
        let mx = cx + 0.7 * shift;
        for k in 0..12 {
            let t = k as f32 / 12.0 * 2.0 * std::f32::consts::PI;
            p[48 + k] = Point {
                x: mx - 25.0 * t.cos(),
                y: my - (8.0 + 0.5 * mouth_gap) * t.sin(),
            };
        }
        // Inner: 60 left corner, 61-63 upper, 64 right corner, 65-67 lower.
        let inner = [
            (mx - 18.0, my),
            (mx - 8.0, my - 0.5 * mouth_gap),
            (mx, my - 0.5 * mouth_gap),
            (mx + 8.0, my - 0.5 * mouth_gap),
            (mx + 18.0, my),
            (mx + 8.0, my + 0.5 * mouth_gap),
            (mx, my + 0.5 * mouth_gap),
            (mx - 8.0, my + 0.5 * mouth_gap),
        ];
        for (j, (x, y)) in inner.into_iter().enumerate() {
            p[60 + j] = Point { x, y };
        }
        Landmarks68::new(p).unwrap()
    }

    #[test]
    fn yaw_sign_follows_nose() {
        let f = yaw(&face(0.0, 0.0, 0.0, 1.0)).unwrap();
        assert!(f.abs() < 1e-3, "{f}");
        assert!(yaw(&face(0.2, 0.0, 0.0, 1.0)).unwrap() > 0.15);
        assert!(yaw(&face(-0.2, 0.0, 0.0, 1.0)).unwrap() < -0.15);
    }

    #[test]
    fn yaw_is_invariant_to_a_flat_squeeze() {
        // A print rotated about its vertical axis squeezes x: the ratio must not move.
        let mut pts: Vec<Point> = face(0.03, 0.0, 0.0, 1.0).into();
        for q in &mut pts {
            q.x = 200.0 + (q.x - 200.0) * 0.7;
        }
        let squeezed = yaw(&Landmarks68::new(pts).unwrap()).unwrap();
        let flat = yaw(&face(0.03, 0.0, 0.0, 1.0)).unwrap();
        assert!((squeezed - flat).abs() < 1e-4);
    }

    #[test]
    fn pitch_drops_when_looking_up() {
        let level = pitch(&face(0.0, 0.0, 0.0, 1.0)).unwrap();
        let up = pitch(&face(0.0, 0.3, 0.0, 1.0)).unwrap();
        assert!(level > 0.4 && level < 0.9, "{level}");
        assert!(level - up > 0.1, "{level} {up}");
    }

    #[test]
    fn pitch_ignores_the_mouth_and_the_jaw() {
        // An open mouth drops the lower lip, the mouth corners a little and the chin (as the
        // lab's renderer does): the pitch must not move, where the mouth-centre ratio dropped.
        let level = face(0.0, 0.0, 0.0, 1.0);
        let mut open: Vec<Point> = face(0.0, 0.0, 30.0, 1.0).into();
        for i in [48, 54, 60, 64] {
            open[i].y += 8.0;
        }
        for (i, q) in open.iter_mut().enumerate().take(17) {
            q.y += 30.0 * (1.0 - (i as f32 - 8.0).abs() / 8.0);
        }
        let open = Landmarks68::new(open).unwrap();
        assert!(mouth_opening(&open).unwrap() > 0.5);
        assert!((pitch(&open).unwrap() - pitch(&level).unwrap()).abs() < 1e-4);
        // Turning the head does not move it either.
        assert!((pitch(&face(0.25, 0.0, 0.0, 1.0)).unwrap() - pitch(&level).unwrap()).abs() < 1e-4);
    }

    #[test]
    fn pitch_is_invariant_to_roll_and_to_a_flat_squeeze() {
        let flat = pitch(&face(0.0, 0.1, 0.0, 1.0)).unwrap();
        // The head (or the camera) rolled by 20 degrees about the face centre.
        let (sin, cos) = 20f32.to_radians().sin_cos();
        let mut rolled: Vec<Point> = face(0.0, 0.1, 0.0, 1.0).into();
        for q in &mut rolled {
            let (x, y) = (q.x - 200.0, q.y - 200.0);
            *q = Point {
                x: 200.0 + cos * x - sin * y,
                y: 200.0 + sin * x + cos * y,
            };
        }
        assert!((pitch(&Landmarks68::new(rolled).unwrap()).unwrap() - flat).abs() < 1e-4);
        // A print pitched as a whole squeezes y: both lengths shrink alike.
        let mut squeezed: Vec<Point> = face(0.0, 0.1, 0.0, 1.0).into();
        for q in &mut squeezed {
            q.y = 200.0 + (q.y - 200.0) * 0.7;
        }
        assert!((pitch(&Landmarks68::new(squeezed).unwrap()).unwrap() - flat).abs() < 1e-4);
    }

    #[test]
    fn mouth_and_eyes() {
        assert!(mouth_opening(&face(0.0, 0.0, 0.0, 1.0)).unwrap() < 0.01);
        assert!(mouth_opening(&face(0.0, 0.0, 20.0, 1.0)).unwrap() > 0.3);
        let open = eye_aspect_ratio(&face(0.0, 0.0, 0.0, 1.0)).unwrap();
        let shut = eye_aspect_ratio(&face(0.0, 0.0, 0.0, 0.1)).unwrap();
        assert!(open > 0.3 && shut < 0.1, "{open} {shut}");
        assert!((eye_width(&face(0.0, 0.0, 0.0, 1.0), 36) - 20.0).abs() < 1e-3);
        let open = eye_opening(&face(0.0, 0.0, 0.0, 1.0)).unwrap();
        let narrow = eye_opening(&face(0.0, 0.0, 0.0, 0.5)).unwrap();
        let shut = eye_opening(&face(0.0, 0.0, 0.0, 0.1)).unwrap();
        assert!(
            (narrow / open - 0.5).abs() < 1e-3 && shut / open < 0.15,
            "{open} {shut}"
        );
    }

    #[test]
    fn eye_opening_is_invariant_to_a_vertical_squeeze() {
        // A print pitched toward the camera squeezes y: the EAR drops, the opening must not.
        let mut pts: Vec<Point> = face(0.0, 0.0, 0.0, 1.0).into();
        for q in &mut pts {
            q.y = 200.0 + (q.y - 200.0) * 0.7;
        }
        let squeezed = Landmarks68::new(pts).unwrap();
        let flat = face(0.0, 0.0, 0.0, 1.0);
        assert!((eye_opening(&squeezed).unwrap() - eye_opening(&flat).unwrap()).abs() < 1e-4);
        assert!(eye_aspect_ratio(&squeezed).unwrap() < 0.8 * eye_aspect_ratio(&flat).unwrap());
    }

    #[test]
    fn degenerate_geometry_gives_none() {
        let lm = Landmarks68::new(vec![Point { x: 1.0, y: 1.0 }; 68]).unwrap();
        assert!(yaw(&lm).is_none());
        assert!(pitch(&lm).is_none());
        assert!(mouth_opening(&lm).is_none());
        assert!(eye_aspect_ratio(&lm).is_none());
        assert!(eye_opening(&lm).is_none());
        assert!(Landmarks68::new(vec![Point { x: 1.0, y: 1.0 }; 5]).is_err());
    }
}
