//! Eyeglasses drawn onto a real photo, for genuine pairs "with and without glasses": the seed
//! promises recognition either way, and glasses are what trips face detectors and embeddings
//! most (rims cross the eye landmarks, tinted lenses hide the eyes).
//!
//! Three styles ([`Style`]): dark thick rims, thin metal rims and tinted lenses (thin rims and a
//! translucent dark lens). Frames are placed from the face's five landmarks: a lens (a
//! superellipse, from round to rectangular) around each eye, a bridge between them and the start
//! of each temple arm, all rotated with the eye line. Drawing is anti-aliased (4x4 samples per
//! pixel) and a pure function of the image, the landmarks and the [`GlassesParams`].

use std::fmt;

use image::RgbImage;

use super::rng::Rng;

/// A frame style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Style {
    /// Thick, near-black plastic rims (clear lenses).
    DarkThick,
    /// Thin metal rims (clear lenses).
    ThinRim,
    /// Thin rims with a dark translucent lens (sunglasses-like tint).
    Tinted,
}

impl Style {
    /// Every style, in report order.
    pub const ALL: [Style; 3] = [Style::DarkThick, Style::ThinRim, Style::Tinted];

    /// The label prefix (`glasses_dark`, `glasses_thin`, `glasses_tinted`), also the variant
    /// family in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DarkThick => "glasses_dark",
            Self::ThinRim => "glasses_thin",
            Self::Tinted => "glasses_tinted",
        }
    }
}

impl fmt::Display for Style {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The parameters of one pair of glasses, relative to the face (lengths in units of the
/// inter-ocular distance).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlassesParams {
    /// The style.
    pub style: Style,
    /// Lens half-width.
    pub half_width: f64,
    /// Lens half-height.
    pub half_height: f64,
    /// Superellipse exponent: 2 = ellipse, larger = more rectangular.
    pub squareness: f64,
    /// Rim thickness.
    pub thickness: f64,
    /// Lens centre below the eye centre (positive = down).
    pub drop: f64,
    /// Rim colour (RGB 0–255).
    pub rim: [f32; 3],
    /// Lens tint colour (RGB 0–255).
    pub tint: [f32; 3],
    /// Lens opacity: 0 = clear.
    pub opacity: f32,
}

impl GlassesParams {
    /// Draws the parameters of a pair of `style` glasses.
    pub fn sample(style: Style, rng: &mut Rng) -> Self {
        let grey = |rng: &mut Rng, lo: f64, hi: f64| {
            let v = rng.uniform(lo, hi) as f32;
            [v, v * 0.97, v * 0.95]
        };
        let (thickness, rim, opacity, tint) = match style {
            Style::DarkThick => (
                rng.uniform(0.07, 0.11),
                grey(rng, 10.0, 35.0),
                0.0,
                [0.0; 3],
            ),
            Style::ThinRim => {
                // Dark metal or gold-ish.
                let rim = if rng.unit() < 0.5 {
                    grey(rng, 40.0, 90.0)
                } else {
                    [150.0, 120.0, 60.0]
                };
                (rng.uniform(0.015, 0.03), rim, 0.0, [0.0; 3])
            }
            Style::Tinted => {
                let tint = match rng.int(0, 2) {
                    0 => [20.0, 20.0, 22.0],
                    1 => [45.0, 30.0, 15.0],
                    _ => [20.0, 35.0, 25.0],
                };
                (
                    rng.uniform(0.02, 0.045),
                    grey(rng, 15.0, 50.0),
                    rng.uniform(0.45, 0.75) as f32,
                    tint,
                )
            }
        };
        Self {
            style,
            half_width: rng.uniform(0.38, 0.46),
            half_height: rng.uniform(0.26, 0.34),
            squareness: rng.uniform(2.0, 4.0),
            thickness,
            drop: rng.uniform(0.0, 0.08),
            rim,
            tint,
            opacity,
        }
    }

    /// A short comma-free label for sample ids and CSV cells.
    pub fn label(&self) -> String {
        format!(
            "{}(w{:.2};h{:.2};t{:.3};a{:.2})",
            self.style, self.half_width, self.half_height, self.thickness, self.opacity
        )
    }
}

/// Where the frame covers a point: rim, lens interior, or nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cover {
    Rim,
    Lens,
    None,
}

/// The frame geometry of one face, in image coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Frame {
    /// Eye-line unit vector (left eye → right eye in the image).
    u: (f64, f64),
    /// Lens centres.
    centres: [(f64, f64); 2],
    /// Inter-ocular distance, pixels.
    eye: f64,
    p: GlassesParams,
}

impl Frame {
    fn new(left_eye: (f64, f64), right_eye: (f64, f64), p: GlassesParams) -> Option<Self> {
        let (dx, dy) = (right_eye.0 - left_eye.0, right_eye.1 - left_eye.1);
        let eye = dx.hypot(dy);
        if !eye.is_finite() || eye < 2.0 {
            return None;
        }
        let u = (dx / eye, dy / eye);
        let n = (-u.1, u.0);
        let down = p.drop * eye;
        let c = |e: (f64, f64)| (e.0 + n.0 * down, e.1 + n.1 * down);
        Some(Self {
            u,
            centres: [c(left_eye), c(right_eye)],
            eye,
            p,
        })
    }

    /// Coordinates of `(x, y)` in the frame of lens `i`: along the eye line and across it, in
    /// inter-ocular units.
    fn local(&self, i: usize, x: f64, y: f64) -> (f64, f64) {
        let (cx, cy) = self.centres[i];
        let (rx, ry) = (x - cx, y - cy);
        let a = (rx * self.u.0 + ry * self.u.1) / self.eye;
        let b = (-rx * self.u.1 + ry * self.u.0) / self.eye;
        (a, b)
    }

    fn cover(&self, x: f64, y: f64) -> Cover {
        let p = &self.p;
        let half_t = p.thickness / 2.0;
        let mean_r = (p.half_width + p.half_height) / 2.0;
        let mut lens = false;
        for i in 0..2 {
            let (a, b) = self.local(i, x, y);
            let r = ((a / p.half_width).abs().powf(p.squareness)
                + (b / p.half_height).abs().powf(p.squareness))
            .powf(1.0 / p.squareness);
            // Distance to the outline, approximately, in inter-ocular units.
            let d = (r - 1.0) * mean_r;
            if d.abs() <= half_t {
                return Cover::Rim;
            }
            if r < 1.0 {
                lens = true;
            }
        }
        if lens {
            return Cover::Lens;
        }
        // Bridge: between the inner lens edges, slightly above the lens centres.
        let (a, b) = self.local(0, x, y);
        let bridge_y = -0.25 * p.half_height;
        if a > p.half_width - half_t && a < 1.0 - p.half_width + half_t {
            let sag = 0.05 * ((a - 0.5) / (0.5 - p.half_width + 1e-9)).powi(2);
            if (b - bridge_y - sag + 0.05).abs() <= half_t {
                return Cover::Rim;
            }
        }
        // Temple arms: outward from each lens' outer edge, near its top.
        let arm_len = 0.3;
        let arm_y = -0.55 * p.half_height;
        let (a1, b1) = self.local(1, x, y);
        let left_arm = a < -p.half_width + half_t && a > -p.half_width - arm_len;
        let right_arm = a1 > p.half_width - half_t && a1 < p.half_width + arm_len;
        if (left_arm && (b - arm_y).abs() <= half_t * 0.8)
            || (right_arm && (b1 - arm_y).abs() <= half_t * 0.8)
        {
            return Cover::Rim;
        }
        Cover::None
    }

    /// Pixel bounding box `[x0, x1) x [y0, y1)` of everything the frame can cover.
    fn bounds(&self, w: u32, h: u32) -> (u32, u32, u32, u32) {
        let reach = (self.p.half_width + 0.35 + self.p.thickness) * self.eye;
        let xs = [self.centres[0].0, self.centres[1].0];
        let ys = [self.centres[0].1, self.centres[1].1];
        let lo = |v: &[f64; 2]| (v[0].min(v[1]) - reach).floor().max(0.0);
        let hi =
            |v: &[f64; 2], lim: u32| ((v[0].max(v[1]) + reach).ceil().max(0.0) as u32).min(lim);
        (lo(&xs) as u32, hi(&xs, w), lo(&ys) as u32, hi(&ys, h))
    }
}

/// Draws a pair of glasses with `p` on the face whose eyes are at `left_eye` and `right_eye`
/// (image coordinates, the MTCNN landmarks); eyes closer than 2 px draw nothing.
pub fn draw_glasses(
    img: &mut RgbImage,
    left_eye: (f64, f64),
    right_eye: (f64, f64),
    p: &GlassesParams,
) {
    let Some(frame) = Frame::new(left_eye, right_eye, *p) else {
        return;
    };
    let (w, h) = img.dimensions();
    let (x0, x1, y0, y1) = frame.bounds(w, h);
    const S: u32 = 4;
    let inv = 1.0 / f64::from(S * S);
    for y in y0..y1 {
        for x in x0..x1 {
            let (mut rim, mut lens) = (0.0f64, 0.0f64);
            for sy in 0..S {
                for sx in 0..S {
                    let fx = f64::from(x) + (f64::from(sx) + 0.5) / f64::from(S);
                    let fy = f64::from(y) + (f64::from(sy) + 0.5) / f64::from(S);
                    match frame.cover(fx, fy) {
                        Cover::Rim => rim += inv,
                        Cover::Lens => lens += inv,
                        Cover::None => {}
                    }
                }
            }
            if rim == 0.0 && (lens == 0.0 || p.opacity == 0.0) {
                continue;
            }
            let px = img.get_pixel_mut(x, y);
            for c in 0..3 {
                let v = f32::from(px[c]);
                let tinted = v * (1.0 - p.opacity) + p.tint[c] * p.opacity;
                let out = v * (1.0 - rim as f32 - lens as f32)
                    + tinted * lens as f32
                    + p.rim[c] * rim as f32;
                px[c] = out.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn grey(w: u32, h: u32) -> RgbImage {
        RgbImage::from_pixel(w, h, image::Rgb([180, 170, 160]))
    }

    fn changed(a: &RgbImage, b: &RgbImage) -> usize {
        a.pixels().zip(b.pixels()).filter(|(p, q)| p != q).count()
    }

    #[test]
    fn styles_differ_in_coverage_and_darkness() {
        let (le, re) = ((70.0, 80.0), (130.0, 80.0));
        let mut counts = Vec::new();
        for style in Style::ALL {
            let p = GlassesParams::sample(style, &mut Rng::new(3));
            let mut img = grey(200, 160);
            draw_glasses(&mut img, le, re, &p);
            counts.push(changed(&grey(200, 160), &img));
            // The eye centres lie inside the lenses: untouched unless tinted.
            let eye = img.get_pixel(70, 80 + (p.drop * 60.0) as u32);
            if style == Style::Tinted {
                assert!(eye[0] < 150, "tinted lens left the eye at {eye:?}");
            } else {
                assert_eq!(*eye, image::Rgb([180, 170, 160]), "{style}");
            }
            // Nothing far from the eyes changes.
            assert_eq!(*img.get_pixel(100, 150), image::Rgb([180, 170, 160]));
            assert_eq!(*img.get_pixel(5, 5), image::Rgb([180, 170, 160]));
        }
        let [dark, thin, tinted] = counts[..] else {
            panic!()
        };
        assert!(
            dark > thin,
            "thick rims cover more than thin ones: {dark} vs {thin}"
        );
        assert!(
            tinted > dark,
            "tinted lenses cover the most: {tinted} vs {dark}"
        );
        assert!(thin > 50, "thin rims must still be drawn: {thin}");
    }

    #[test]
    fn frame_follows_the_eye_line() {
        // Rotated eyes: the rim at the outer edge of the left lens moves with the rotation.
        let p = GlassesParams {
            style: Style::DarkThick,
            half_width: 0.4,
            half_height: 0.3,
            squareness: 2.0,
            thickness: 0.1,
            drop: 0.0,
            rim: [0.0; 3],
            tint: [0.0; 3],
            opacity: 0.0,
        };
        let mut level = grey(200, 200);
        draw_glasses(&mut level, (70.0, 100.0), (130.0, 100.0), &p);
        // Outer edge of the left lens: 0.4 * 60 = 24 px left of the eye.
        assert!(level.get_pixel(46, 100)[0] < 60);
        let mut tilted = grey(200, 200);
        // The same eyes rotated by 90 degrees about (100, 100).
        draw_glasses(&mut tilted, (100.0, 70.0), (100.0, 130.0), &p);
        assert!(tilted.get_pixel(100, 46)[0] < 60);
        assert_eq!(*tilted.get_pixel(46, 100), image::Rgb([180, 170, 160]));
    }

    #[test]
    fn deterministic_and_degenerate_safe() {
        let p = GlassesParams::sample(Style::ThinRim, &mut Rng::new(9));
        assert_eq!(p, GlassesParams::sample(Style::ThinRim, &mut Rng::new(9)));
        let mut a = grey(100, 100);
        let mut b = grey(100, 100);
        draw_glasses(&mut a, (30.0, 40.0), (60.0, 42.0), &p);
        draw_glasses(&mut b, (30.0, 40.0), (60.0, 42.0), &p);
        assert_eq!(a, b);
        let mut c = grey(100, 100);
        draw_glasses(&mut c, (30.0, 40.0), (30.5, 40.0), &p);
        assert_eq!(c, grey(100, 100));
        // Eyes at the border: clipped, no panic.
        draw_glasses(&mut c, (-5.0, 2.0), (20.0, 1.0), &p);
        assert!(!p.label().contains(','));
    }
}
