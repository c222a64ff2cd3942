//! Renders one camera frame of a synthetic sequence from a neutral frame and its 68 landmarks:
//! the face posed (turned, raised, jaw dropped) by a thin-plate spline through the moved
//! landmarks, the upper lids slid down over the eyes and the mouth interior painted, or — for
//! the attacks — the whole neutral frame shown as a flat print tilted in 3-D; then the camera:
//! a small sway (shift, roll, scale), exposure flicker, sensor noise and JPEG.

use image::{Rgb, RgbImage};

use super::face::{FaceFrame, Points68, anchors, mouth_opened, posed, virtual_points};
use super::paint::{LidSlide, mouth_interior, slide_lids};
use super::tps::Tps;
use crate::EvalError;
use crate::geometry::Homography;
use crate::geometry::sample_bilinear;
use crate::rng::Rng;

/// What the face does in one frame (all zero: neutral).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Pose {
    /// Head yaw, radians; positive turns the nose toward the image's right (the person's own
    /// left in an unmirrored image).
    pub yaw: f64,
    /// Head pitch, radians; positive raises the face (looking up).
    pub pitch: f64,
    /// Eyelid closure, 0 (open) to 1 (shut).
    pub eyes_closed: f64,
    /// Jaw drop as a fraction of the mouth width (0 closed; 0.4 wide open).
    pub mouth_open: f64,
}

/// How a flat print is held: its rotation out of the camera's image plane.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PrintTilt {
    /// Rotation about the print's vertical axis, radians.
    pub yaw: f64,
    /// Rotation about its horizontal axis, radians.
    pub pitch: f64,
    /// Side of the print relative to the frame (1: the print fills the frame when flat).
    pub size: f64,
}

/// The camera's per-frame imperfections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Camera {
    /// Shift of the whole image, pixels.
    pub shift: (f64, f64),
    /// Roll about the frame centre, degrees.
    pub roll_deg: f64,
    /// Zoom about the frame centre (1: none).
    pub scale: f64,
    /// Exposure gain (1: none).
    pub gain: f64,
    /// Sensor noise, standard deviation in grey levels.
    pub noise: f64,
    /// JPEG quality of the frame the client sends.
    pub jpeg_quality: u8,
}

impl Camera {
    /// A still camera: no sway, no noise, quality 92.
    pub const STILL: Camera = Camera {
        shift: (0.0, 0.0),
        roll_deg: 0.0,
        scale: 1.0,
        gain: 1.0,
        noise: 0.0,
        jpeg_quality: 92,
    };

    /// The map from scene coordinates to the frame's.
    pub fn homography(&self, w: u32, h: u32) -> Homography {
        let (cx, cy) = (f64::from(w) / 2.0, f64::from(h) / 2.0);
        Homography::translation(-cx, -cy)
            .then(&Homography::scale(self.scale, self.scale))
            .then(&Homography::rotation_about(0.0, 0.0, self.roll_deg))
            .then(&Homography::translation(
                cx + self.shift.0,
                cy + self.shift.1,
            ))
    }
}

/// The map taking the neutral frame's coordinates to those of a flat print of it tilted by
/// `tilt` and seen by a pinhole camera with focal length 1.2 x the frame width: the print's
/// corners rotated in 3-D about its centre and projected.
pub fn print_homography(w: u32, h: u32, tilt: &PrintTilt) -> Option<Homography> {
    let (fw, fh) = (f64::from(w), f64::from(h));
    let f = 1.2 * fw;
    let (cx, cy) = (fw / 2.0, fh / 2.0);
    let (sy, cyaw) = tilt.yaw.sin_cos();
    let (sp, cp) = tilt.pitch.sin_cos();
    let project = |x: f64, y: f64| {
        // Print coordinates centred, scaled to the print's size, on the plane z = 0.
        let (px, py) = ((x - cx) * tilt.size, (y - cy) * tilt.size);
        // Yaw about the vertical axis, then pitch about the horizontal one.
        let (x1, z1) = (px * cyaw, -px * sy);
        let (y2, z2) = (py * cp - z1 * sp, py * sp + z1 * cp);
        let depth = f + z2;
        (cx + f * x1 / depth, cy + f * y2 / depth)
    };
    let src = [(0.0, 0.0), (fw, 0.0), (fw, fh), (0.0, fh)];
    let dst = src.map(|(x, y)| project(x, y));
    Homography::from_quad(src, dst)
}

/// Landmarks of `neutral` posed by `pose` (no painting, no camera).
pub fn posed_landmarks(neutral: &Points68, frame: &FaceFrame, pose: &Pose) -> Points68 {
    let turned = posed(neutral, frame, pose.yaw, pose.pitch);
    if pose.mouth_open > 0.0 {
        let width = (neutral[54].0 - neutral[48].0).hypot(neutral[54].1 - neutral[48].1);
        // The jaw drops in the turned face's own frame.
        let f2 = FaceFrame::of(&turned).unwrap_or(*frame);
        mouth_opened(&turned, &f2, pose.mouth_open * width)
    } else {
        turned
    }
}

/// Points in pixels.
type Pts = Vec<(f64, f64)>;

/// Control point pairs (output position, neutral position) of a posed face, without pairs
/// whose output positions coincide (closed lips), which would make the spline singular.
fn control_points(
    neutral: &Points68,
    frame: &FaceFrame,
    pose: &Pose,
    w: u32,
    h: u32,
) -> (Pts, Pts) {
    let target = posed_landmarks(neutral, frame, pose);
    let mut out: Vec<(f64, f64)> = Vec::new();
    let mut src: Vec<(f64, f64)> = Vec::new();
    let mut push = |o: (f64, f64), s: (f64, f64)| {
        if out.iter().all(|q| (q.0 - o.0).hypot(q.1 - o.1) > 0.75) {
            out.push(o);
            src.push(s);
        }
    };
    for (o, s) in target.iter().zip(neutral) {
        push(*o, *s);
    }
    for (f, extra) in virtual_points(neutral, frame) {
        push(
            frame.rotate(f, extra, pose.yaw, pose.pitch),
            frame.to_image(f),
        );
    }
    for a in anchors(frame, w, h) {
        push(a, a);
    }
    (out, src)
}

/// Renders a live face's frame: `neutral` is the neutral frame and `landmarks` its 68 points.
/// Returns the frame and the landmarks where the rendering put them (in frame coordinates).
pub fn render_live(
    neutral: &RgbImage,
    landmarks: &Points68,
    pose: &Pose,
    camera: &Camera,
    rng: &mut Rng,
) -> Result<(RgbImage, Points68), EvalError> {
    let (w, h) = neutral.dimensions();
    let frame = FaceFrame::of(landmarks)
        .ok_or_else(|| EvalError::Data("degenerate landmarks: jaw narrower than 4 px".into()))?;
    let cam = camera.homography(w, h);
    let cam_inv = cam
        .inverse()
        .ok_or_else(|| EvalError::Data("singular camera map".into()))?;
    let identity = *pose == Pose::default();
    let tps = if identity || (pose.yaw == 0.0 && pose.pitch == 0.0 && pose.mouth_open == 0.0) {
        None
    } else {
        let (out, src) = control_points(landmarks, &frame, pose, w, h);
        Some(
            Tps::fit(&out, &src, 0.0)
                .ok_or_else(|| EvalError::Data("the pose's spline is singular".into()))?,
        )
    };
    let mut img = super::tps::warp(neutral, w, h, 4, |x, y| {
        let (sx, sy) = cam_inv.apply(x, y).unwrap_or((x, y));
        match &tps {
            Some(t) => t.apply(sx, sy),
            None => (sx, sy),
        }
    });
    let target = posed_landmarks(landmarks, &frame, pose);
    let mut seen = target;
    for p in seen.iter_mut() {
        *p = cam.apply(p.0, p.1).unwrap_or(*p);
    }
    if pose.mouth_open > 0.02 {
        mouth_interior(&mut img, &seen);
    }
    if pose.eyes_closed > 0.0 {
        slide_lids(&mut img, &seen, pose.eyes_closed, &LidSlide::default());
    }
    Ok((finish(&img, camera, rng), seen))
}

/// Renders an attack frame: the neutral frame printed flat, tilted by `tilt` in front of
/// `background`, then filmed by `camera`.
pub fn render_print(
    neutral: &RgbImage,
    background: &RgbImage,
    tilt: &PrintTilt,
    camera: &Camera,
    rng: &mut Rng,
) -> Result<RgbImage, EvalError> {
    let (w, h) = neutral.dimensions();
    let plane = print_homography(w, h, tilt)
        .ok_or_else(|| EvalError::Data("degenerate print tilt".into()))?;
    let map = plane.then(&camera.homography(w, h));
    let inv = map
        .inverse()
        .ok_or_else(|| EvalError::Data("singular print map".into()))?;
    let (fw, fh) = (f64::from(w), f64::from(h));
    let mut img = RgbImage::new(w, h);
    for (x, y, p) in img.enumerate_pixels_mut() {
        let inside = inv
            .apply(f64::from(x), f64::from(y))
            .filter(|&(sx, sy)| sx >= -0.5 && sy >= -0.5 && sx <= fw - 0.5 && sy <= fh - 0.5);
        let v = match inside {
            Some((sx, sy)) => sample_bilinear(neutral, sx, sy),
            None => {
                let b = background.get_pixel(
                    x.min(background.width() - 1),
                    y.min(background.height() - 1),
                );
                [f64::from(b[0]), f64::from(b[1]), f64::from(b[2])]
            }
        };
        *p = Rgb(v.map(|c| c.round().clamp(0.0, 255.0) as u8));
    }
    Ok(finish(&img, camera, rng))
}

/// Exposure gain and sensor noise (the JPEG comes at encoding).
fn finish(img: &RgbImage, camera: &Camera, rng: &mut Rng) -> RgbImage {
    let mut out = img.clone();
    for v in out.iter_mut() {
        let n = f64::from(*v) * camera.gain + camera.noise * rng.normal();
        *v = n.round().clamp(0.0, 255.0) as u8;
    }
    out
}

/// Encodes a frame as the client would send it.
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, EvalError> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality.clamp(1, 100))
        .encode_image(img)
        .map_err(|source| EvalError::Image {
            context: format!("encoding a JPEG frame at quality {quality}"),
            source,
        })?;
    Ok(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::face::NOSE_TIP;
    use super::super::face::tests::frontal;
    use super::*;

    fn textured(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([
                (x * 7 % 251) as u8,
                (y * 5 % 241) as u8,
                ((x + y) % 200) as u8,
            ])
        })
    }

    #[test]
    fn a_turn_moves_the_pixels_under_the_nose_and_leaves_the_corners() {
        let lm = frontal();
        let img = textured(640, 480);
        let mut rng = Rng::new(1);
        let pose = Pose {
            yaw: 0.35,
            ..Pose::default()
        };
        let (out, seen) = render_live(&img, &lm, &pose, &Camera::STILL, &mut rng).unwrap();
        assert!(seen[NOSE_TIP].0 > lm[NOSE_TIP].0 + 20.0);
        // The pixel now at the nose tip's new place came from the old nose tip.
        let (nx, ny) = seen[NOSE_TIP];
        let want = sample_bilinear(&img, lm[NOSE_TIP].0, lm[NOSE_TIP].1);
        let got = out.get_pixel(nx.round() as u32, ny.round() as u32);
        for k in 0..3 {
            assert!(
                (f64::from(got[k]) - want[k]).abs() < 40.0,
                "{got:?} vs {want:?}"
            );
        }
        assert_eq!(out.get_pixel(2, 2), img.get_pixel(2, 2));
        assert_eq!(out.get_pixel(630, 470), img.get_pixel(630, 470));
    }

    #[test]
    fn neutral_still_frame_is_the_input() {
        let lm = frontal();
        let img = textured(320, 240);
        let (out, _) = render_live(
            &img,
            &lm,
            &Pose::default(),
            &Camera::STILL,
            &mut Rng::new(3),
        )
        .unwrap();
        assert_eq!(out, img);
    }

    #[test]
    fn a_flat_print_turned_keeps_its_centre_and_narrows() {
        let tilt = PrintTilt {
            yaw: 0.5,
            pitch: 0.0,
            size: 0.8,
        };
        let h = print_homography(640, 480, &tilt).unwrap();
        let (x, y) = h.apply(320.0, 240.0).unwrap();
        assert!((x - 320.0).abs() < 1e-6 && (y - 240.0).abs() < 1e-6);
        let (l, _) = h.apply(0.0, 240.0).unwrap();
        let (r, _) = h.apply(640.0, 240.0).unwrap();
        assert!(r - l < 0.8 * 640.0 * 0.95, "{}", r - l);
        let bg = RgbImage::from_pixel(640, 480, Rgb([1, 2, 3]));
        let img = textured(640, 480);
        let out = render_print(&img, &bg, &tilt, &Camera::STILL, &mut Rng::new(2)).unwrap();
        assert_eq!(out.get_pixel(0, 0), &Rgb([1, 2, 3]));
    }
}
