//! Simulated presentation attacks built from real photos. They imitate the visible traits of an
//! attacker holding a print or a phone/tablet screen up to the camera; they are **simulations**,
//! not captures of real attack instruments, and say nothing certain about real attacks.
//!
//! - Printed photo ([`simulate_print`]): reduced dynamic range with an ink black level and a
//!   warm paper white point, desaturation, a darker print gamma, a rotated halftone dot pattern
//!   and grain, ink spread (blur), a paper border, then placed over a synthetic background with
//!   a slight perspective tilt and re-photographed (blur, sensor noise, JPEG).
//! - Screen replay ([`simulate_replay`]): the photo resampled to a screen resolution with an
//!   RGB sub-pixel stripe grid and pixel gaps, a moiré interference band, display gamma with a
//!   blue cast and raised black level, a specular glare band, a dark bezel, then placed with a
//!   perspective tilt and re-photographed (down/up resampling, noise, JPEG).
//!
//! Every function returns the frame and the map from the source photo's coordinates to the
//! frame's, so the face can be located in it.

use image::{Rgb, RgbImage};

use super::EvalError;
use super::degrade::{Region, Transformed};
use super::geometry::{Homography, warp_onto};
use super::imageops::{
    add_noise, background, gaussian_blur, jpeg_roundtrip, luma, map_pixels, resize,
};
use super::rng::Rng;

/// The square region of side `scale * max(w, h)` around a face box, clipped to the image: what
/// an attacker would print or show (the face with its surroundings).
pub fn face_crop_region(face: Region, width: u32, height: u32, scale: f64) -> Region {
    let side = scale * (face.x1 - face.x0).max(face.y1 - face.y0);
    let (cx, cy) = ((face.x0 + face.x1) / 2.0, (face.y0 + face.y1) / 2.0);
    Region {
        x0: (cx - side / 2.0).max(0.0).floor(),
        y0: (cy - side / 2.0).max(0.0).floor(),
        x1: (cx + side / 2.0).min(f64::from(width)).ceil(),
        y1: (cy + side / 2.0).min(f64::from(height)).ceil(),
    }
}

/// Crops `region` and resizes it to `height` pixels high (aspect kept), with the map from source
/// coordinates to the result's (pixel-centre exact for the resize).
fn crop_and_scale(src: &RgbImage, region: Region, height: u32) -> Transformed {
    let x = (region.x0.max(0.0) as u32).min(src.width().saturating_sub(1));
    let y = (region.y0.max(0.0) as u32).min(src.height().saturating_sub(1));
    let w = ((region.x1 - region.x0).max(1.0) as u32).min(src.width() - x);
    let h = ((region.y1 - region.y0).max(1.0) as u32).min(src.height() - y);
    let crop = image::imageops::crop_imm(src, x, y, w, h).to_image();
    let out_h = height.max(1);
    let out_w = ((f64::from(w) * f64::from(out_h) / f64::from(h)).round() as u32).max(1);
    let (sx, sy) = (
        f64::from(out_w) / f64::from(w),
        f64::from(out_h) / f64::from(h),
    );
    let map = Homography::translation(-f64::from(x) + 0.5, -f64::from(y) + 0.5)
        .then(&Homography::scale(sx, sy))
        .then(&Homography::translation(-0.5, -0.5));
    Transformed {
        image: resize(&crop, out_w, out_h),
        map,
    }
}

/// Surrounds `img` with a `border`-pixel frame of `colour`.
fn add_border(img: &RgbImage, border: u32, colour: [u8; 3]) -> Transformed {
    let mut out = RgbImage::from_pixel(
        img.width() + 2 * border,
        img.height() + 2 * border,
        Rgb(colour),
    );
    image::imageops::replace(&mut out, img, i64::from(border), i64::from(border));
    Transformed {
        image: out,
        map: Homography::translation(f64::from(border), f64::from(border)),
    }
}

/// How an attack instrument is held in front of the camera.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Centre offset from the frame centre, as fractions of the frame size.
    pub offset: (f64, f64),
    /// In-plane rotation, degrees.
    pub rotation: f64,
    /// Independent corner displacements (perspective tilt), as fractions of the instrument size.
    pub corners: [(f64, f64); 4],
}

impl Placement {
    fn sample(rng: &mut Rng, max_tilt: f64, max_rotation: f64) -> Self {
        let mut corners = [(0.0, 0.0); 4];
        for c in &mut corners {
            *c = (
                rng.uniform(-max_tilt, max_tilt),
                rng.uniform(-max_tilt, max_tilt),
            );
        }
        Self {
            offset: (rng.uniform(-0.08, 0.08), rng.uniform(-0.06, 0.06)),
            rotation: rng.uniform(-max_rotation, max_rotation),
            corners,
        }
    }

    /// The map from the instrument's image (`w x h`) into the `fw x fh` frame.
    pub fn homography(&self, w: u32, h: u32, fw: u32, fh: u32) -> Option<Homography> {
        let (w, h) = (f64::from(w), f64::from(h));
        let (cx, cy) = (
            f64::from(fw) * (0.5 + self.offset.0),
            f64::from(fh) * (0.5 + self.offset.1),
        );
        let rot = Homography::rotation_about(0.0, 0.0, self.rotation);
        let src = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)];
        let mut dst = [(0.0, 0.0); 4];
        for (d, (&(x, y), &(jx, jy))) in dst.iter_mut().zip(src.iter().zip(self.corners.iter())) {
            let (px, py) = (x - w / 2.0 + jx * w, y - h / 2.0 + jy * h);
            let (rx, ry) = rot.apply(px, py)?;
            *d = (rx + cx, ry + cy);
        }
        Homography::from_quad(src, dst)
    }
}

/// Re-photographing: optional down/up resampling, blur, sensor noise, JPEG.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capture {
    /// Intermediate scale of a down/up resampling (1 = none).
    pub resample: f64,
    /// Optical blur sigma, pixels.
    pub blur: f32,
    /// Sensor noise sigma, 0–255 units.
    pub noise: f64,
    /// JPEG quality of the captured frame.
    pub jpeg_quality: u8,
    /// Seed of the sensor noise.
    pub noise_seed: u64,
}

impl Capture {
    fn apply(&self, frame: &RgbImage) -> Result<RgbImage, EvalError> {
        let (w, h) = frame.dimensions();
        let mut img = if self.resample < 0.999 {
            let sw = (f64::from(w) * self.resample).round() as u32;
            let sh = (f64::from(h) * self.resample).round() as u32;
            resize(&resize(frame, sw, sh), w, h)
        } else {
            frame.clone()
        };
        img = gaussian_blur(&img, self.blur);
        img = add_noise(&img, self.noise, &mut Rng::new(self.noise_seed));
        jpeg_roundtrip(&img, self.jpeg_quality)
    }
}

/// Parameters of a printed-photo simulation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrintParams {
    /// Printed picture height as a fraction of the frame height (border excluded).
    pub height_frac: f64,
    /// Saturation kept (1 = unchanged, 0 = grey).
    pub saturation: f32,
    /// Print gamma (> 1 darkens mid-tones).
    pub gamma: f32,
    /// Darkest ink level (0–255).
    pub black: f32,
    /// Paper white point, RGB.
    pub paper: [f32; 3],
    /// Halftone dot period in print pixels.
    pub halftone_period: f32,
    /// Halftone screen angle, degrees.
    pub halftone_angle: f32,
    /// Halftone modulation depth (fraction of the value).
    pub halftone_amp: f32,
    /// Paper grain noise sigma.
    pub grain: f64,
    /// Ink spread blur sigma.
    pub ink_blur: f32,
    /// Paper border as a fraction of the picture height.
    pub border_frac: f64,
    /// How the print is held.
    pub placement: Placement,
    /// The camera.
    pub capture: Capture,
    /// Seed of the background scene.
    pub background_seed: u64,
    /// Seed of the paper grain.
    pub grain_seed: u64,
}

impl PrintParams {
    /// Draws parameters from `rng`.
    pub fn sample(rng: &mut Rng) -> Self {
        Self {
            height_frac: rng.uniform(0.45, 0.7),
            saturation: rng.uniform(0.5, 0.8) as f32,
            gamma: rng.uniform(1.1, 1.3) as f32,
            black: rng.uniform(25.0, 45.0) as f32,
            paper: [
                rng.uniform(228.0, 246.0) as f32,
                rng.uniform(220.0, 238.0) as f32,
                rng.uniform(198.0, 222.0) as f32,
            ],
            halftone_period: rng.uniform(2.5, 4.0) as f32,
            halftone_angle: rng.uniform(15.0, 45.0) as f32,
            halftone_amp: rng.uniform(0.06, 0.12) as f32,
            grain: rng.uniform(2.0, 5.0),
            ink_blur: rng.uniform(0.4, 0.9) as f32,
            border_frac: rng.uniform(0.06, 0.12),
            placement: Placement::sample(rng, 0.05, 6.0),
            capture: Capture {
                resample: 1.0,
                blur: rng.uniform(0.5, 1.1) as f32,
                noise: rng.uniform(1.5, 3.5),
                jpeg_quality: rng.int(75, 92) as u8,
                noise_seed: rng.next_u64(),
            },
            background_seed: rng.next_u64(),
            grain_seed: rng.next_u64(),
        }
    }

    /// A short comma-free label for sample ids.
    pub fn label(&self) -> String {
        format!(
            "print(h{:.2};sat{:.2};ht{:.1}@{:.0};q{})",
            self.height_frac,
            self.saturation,
            self.halftone_period,
            self.halftone_angle,
            self.capture.jpeg_quality
        )
    }
}

/// The printed-photo tone and halftone of one pixel at print coordinates `(x, y)`.
fn print_tone(p: [f32; 3], x: u32, y: u32, prm: &PrintParams) -> [f32; 3] {
    let g = luma(p);
    let (s, c) = prm.halftone_angle.to_radians().sin_cos();
    let (fx, fy) = (x as f32, y as f32);
    let (u, v) = (fx * c + fy * s, -fx * s + fy * c);
    let k = std::f32::consts::TAU / prm.halftone_period.max(1.0);
    let dots = 1.0 + prm.halftone_amp * (k * u).cos() * (k * v).cos();
    let mut out = [0.0; 3];
    for ch in 0..3 {
        let sat = g + prm.saturation * (p[ch] - g);
        let t = (sat / 255.0).clamp(0.0, 1.0).powf(prm.gamma);
        out[ch] = (prm.black + (prm.paper[ch] - prm.black) * t) * dots;
    }
    out
}

/// Simulates a print of `region` of `src` held up to a camera producing a `frame_w x frame_h`
/// frame.
pub fn simulate_print(
    src: &RgbImage,
    region: Region,
    frame_w: u32,
    frame_h: u32,
    prm: &PrintParams,
) -> Result<Transformed, EvalError> {
    let height = (f64::from(frame_h) * prm.height_frac).round() as u32;
    let picture = crop_and_scale(src, region, height);
    let toned = map_pixels(&picture.image, |p, x, y| print_tone(p, x, y, prm));
    let grained = add_noise(&toned, prm.grain, &mut Rng::new(prm.grain_seed));
    let border = (f64::from(height) * prm.border_frac).round() as u32;
    let paper = prm.paper.map(|v| v.round().clamp(0.0, 255.0) as u8);
    let sheet = add_border(&grained, border, paper);
    let sheet_img = gaussian_blur(&sheet.image, prm.ink_blur);
    let mut frame = background(frame_w, frame_h, &mut Rng::new(prm.background_seed));
    let place = prm
        .placement
        .homography(sheet_img.width(), sheet_img.height(), frame_w, frame_h)
        .ok_or_else(|| {
            EvalError::Data(format!("degenerate print placement {:?}", prm.placement))
        })?;
    warp_onto(&mut frame, &sheet_img, &place);
    Ok(Transformed {
        image: prm.capture.apply(&frame)?,
        map: picture.map.then(&sheet.map).then(&place),
    })
}

/// Parameters of a screen-replay simulation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayParams {
    /// Displayed picture height as a fraction of the frame height (bezel excluded).
    pub height_frac: f64,
    /// Size of one screen pixel in picture pixels.
    pub pixel_pitch: f32,
    /// Depth of the RGB sub-pixel stripes.
    pub subpixel_amp: f32,
    /// Darkening of the gap row between screen pixels.
    pub gap_amp: f32,
    /// Moiré band period in picture pixels.
    pub moire_period: f32,
    /// Moiré band direction, degrees.
    pub moire_angle: f32,
    /// Moiré modulation depth.
    pub moire_amp: f32,
    /// Display gamma (< 1 brightens mid-tones).
    pub gamma: f32,
    /// Per-channel gains (a blue cast: red below 1, blue above).
    pub cast: [f32; 3],
    /// Display black level (0–255).
    pub black: f32,
    /// Glare strength (fraction of the headroom to white added at the band's centre).
    pub glare_strength: f32,
    /// Glare band half-width as a fraction of the picture height.
    pub glare_width: f32,
    /// Glare band direction, degrees.
    pub glare_angle: f32,
    /// Glare band position along the picture diagonal (0–1).
    pub glare_position: f32,
    /// Bezel width as a fraction of the picture height.
    pub bezel_frac: f64,
    /// Bezel colour.
    pub bezel: [u8; 3],
    /// How the device is held.
    pub placement: Placement,
    /// The camera.
    pub capture: Capture,
    /// Seed of the background scene.
    pub background_seed: u64,
}

impl ReplayParams {
    /// Draws parameters from `rng`.
    pub fn sample(rng: &mut Rng) -> Self {
        let grey = rng.int(12, 32) as u8;
        Self {
            height_frac: rng.uniform(0.5, 0.72),
            pixel_pitch: rng.uniform(1.3, 2.2) as f32,
            subpixel_amp: rng.uniform(0.05, 0.15) as f32,
            gap_amp: rng.uniform(0.05, 0.15) as f32,
            moire_period: rng.uniform(6.0, 16.0) as f32,
            moire_angle: rng.uniform(0.0, 180.0) as f32,
            moire_amp: rng.uniform(0.03, 0.06) as f32,
            gamma: rng.uniform(0.75, 0.9) as f32,
            cast: [
                rng.uniform(0.86, 0.95) as f32,
                rng.uniform(0.95, 1.0) as f32,
                rng.uniform(1.05, 1.15) as f32,
            ],
            black: rng.uniform(10.0, 22.0) as f32,
            glare_strength: rng.uniform(0.2, 0.45) as f32,
            glare_width: rng.uniform(0.08, 0.18) as f32,
            glare_angle: rng.uniform(20.0, 70.0) as f32,
            glare_position: rng.uniform(0.2, 0.8) as f32,
            bezel_frac: rng.uniform(0.04, 0.08),
            bezel: [grey, grey, grey.saturating_add(3)],
            placement: Placement::sample(rng, 0.035, 5.0),
            capture: Capture {
                resample: rng.uniform(0.55, 0.8),
                blur: rng.uniform(0.3, 0.7) as f32,
                noise: rng.uniform(1.5, 3.0),
                jpeg_quality: rng.int(78, 92) as u8,
                noise_seed: rng.next_u64(),
            },
            background_seed: rng.next_u64(),
        }
    }

    /// A short comma-free label for sample ids.
    pub fn label(&self) -> String {
        format!(
            "replay(h{:.2};pitch{:.1};moire{:.0};g{:.2};q{})",
            self.height_frac,
            self.pixel_pitch,
            self.moire_period,
            self.gamma,
            self.capture.jpeg_quality
        )
    }
}

/// The display's pixel grid, moiré, gamma, cast and glare at picture coordinates `(x, y)` of a
/// `w x h` picture.
fn screen_tone(p: [f32; 3], x: u32, y: u32, w: u32, h: u32, prm: &ReplayParams) -> [f32; 3] {
    let pitch = prm.pixel_pitch.max(1.0);
    let (fx, fy) = (x as f32, y as f32);
    let sub = (((fx % pitch) / pitch) * 3.0).floor().clamp(0.0, 2.0) as usize;
    let mean_gain = (1.0 + 2.0 * (1.0 - prm.subpixel_amp)) / 3.0;
    let gap = if fy % pitch < 0.8 {
        1.0 - prm.gap_amp
    } else {
        1.0
    };
    let (ms, mc) = prm.moire_angle.to_radians().sin_cos();
    let moire = 1.0
        + prm.moire_amp
            * (std::f32::consts::TAU * (fx * mc + fy * ms) / prm.moire_period.max(1.0)).cos();
    let (gs, gc) = prm.glare_angle.to_radians().sin_cos();
    let (px, py) = (prm.glare_position * w as f32, prm.glare_position * h as f32);
    // Distance to the glare line through (px, py) with direction (gc, gs).
    let d = ((fx - px) * gs - (fy - py) * gc).abs() / (prm.glare_width * h as f32).max(1.0);
    let glare = prm.glare_strength * (-d * d).exp();
    let mut out = [0.0; 3];
    for ch in 0..3 {
        let stripe = if ch == sub {
            1.0
        } else {
            1.0 - prm.subpixel_amp
        };
        let lit = (p[ch] / 255.0).clamp(0.0, 1.0).powf(prm.gamma) * prm.cast[ch];
        let v = prm.black + (255.0 - prm.black) * lit;
        let v = v * stripe / mean_gain * gap * moire;
        out[ch] = v + glare * (255.0 - v).max(0.0);
    }
    out
}

/// Simulates `region` of `src` shown on a screen held up to a camera producing a
/// `frame_w x frame_h` frame.
pub fn simulate_replay(
    src: &RgbImage,
    region: Region,
    frame_w: u32,
    frame_h: u32,
    prm: &ReplayParams,
) -> Result<Transformed, EvalError> {
    let height = (f64::from(frame_h) * prm.height_frac).round() as u32;
    let picture = crop_and_scale(src, region, height);
    let (w, h) = picture.image.dimensions();
    // The display's own resolution: one sample per screen pixel, shown smoothly scaled.
    let pitch = f64::from(prm.pixel_pitch.max(1.0));
    let sw = (f64::from(w) / pitch).round() as u32;
    let sh = (f64::from(h) / pitch).round() as u32;
    let screen_res = resize(&resize(&picture.image, sw, sh), w, h);
    let shown = map_pixels(&screen_res, |p, x, y| screen_tone(p, x, y, w, h, prm));
    let bezel = (f64::from(height) * prm.bezel_frac).round() as u32;
    let device = add_border(&shown, bezel, prm.bezel);
    let mut frame = background(frame_w, frame_h, &mut Rng::new(prm.background_seed));
    let place = prm
        .placement
        .homography(
            device.image.width(),
            device.image.height(),
            frame_w,
            frame_h,
        )
        .ok_or_else(|| {
            EvalError::Data(format!("degenerate replay placement {:?}", prm.placement))
        })?;
    warp_onto(&mut frame, &device.image, &place);
    Ok(Transformed {
        image: prm.capture.apply(&frame)?,
        map: picture.map.then(&device.map).then(&place),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::imageops::mean_abs_diff;
    use super::*;

    /// A synthetic "photo": smooth colour gradients with a bright disc marking the face centre.
    fn photo() -> RgbImage {
        RgbImage::from_fn(200, 160, |x, y| {
            let (dx, dy) = (x as f32 - 100.0, y as f32 - 70.0);
            if dx * dx + dy * dy < 36.0 {
                Rgb([255, 255, 255])
            } else {
                Rgb([(x + 30) as u8, (y + 40) as u8, 120])
            }
        })
    }

    const FACE: Region = Region {
        x0: 80.0,
        y0: 45.0,
        x1: 120.0,
        y1: 95.0,
    };

    fn marker_centre(img: &RgbImage, near: (f64, f64), radius: f64) -> (f64, f64) {
        // Centroid of the brightest pixels near the expected position.
        let mut pts = Vec::new();
        for (x, y, p) in img.enumerate_pixels() {
            let (fx, fy) = (f64::from(x), f64::from(y));
            if (fx - near.0).hypot(fy - near.1) < radius {
                pts.push((luma(p.0.map(f32::from)), fx, fy));
            }
        }
        pts.sort_by(|a, b| b.0.total_cmp(&a.0));
        let top = &pts[..pts.len().min(20)];
        let n = top.len() as f64;
        (
            top.iter().map(|p| p.1).sum::<f64>() / n,
            top.iter().map(|p| p.2).sum::<f64>() / n,
        )
    }

    #[test]
    fn crop_region_is_square_around_the_face_and_clipped() {
        let r = face_crop_region(FACE, 200, 160, 2.0);
        assert_eq!((r.x0, r.x1), (50.0, 150.0));
        assert_eq!((r.y0, r.y1), (20.0, 120.0));
        let r = face_crop_region(FACE, 200, 160, 4.0);
        assert_eq!((r.x0, r.y0, r.y1), (0.0, 0.0, 160.0));
    }

    #[test]
    fn print_is_deterministic_sized_and_maps_the_face() {
        let src = photo();
        let region = face_crop_region(FACE, 200, 160, 2.6);
        let prm = PrintParams::sample(&mut Rng::new(1));
        let a = simulate_print(&src, region, 320, 240, &prm).unwrap();
        let b = simulate_print(&src, region, 320, 240, &prm).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.image.dimensions(), (320, 240));
        let other = simulate_print(
            &src,
            region,
            320,
            240,
            &PrintParams::sample(&mut Rng::new(2)),
        )
        .unwrap();
        assert!(mean_abs_diff(&a.image, &other.image).unwrap() > 3.0);
        let expected = a.map.apply(100.0, 70.0).unwrap();
        let found = marker_centre(&a.image, expected, 12.0);
        assert!(
            (found.0 - expected.0).hypot(found.1 - expected.1) < 2.5,
            "marker at {found:?}, map says {expected:?}"
        );
    }

    #[test]
    fn print_compresses_range_and_desaturates() {
        let src = photo();
        let region = face_crop_region(FACE, 200, 160, 2.6);
        let prm = PrintParams::sample(&mut Rng::new(3));
        let out = simulate_print(&src, region, 320, 240, &prm).unwrap();
        // The marker's pure white is printed no brighter than the paper white (plus noise).
        let c = out.map.apply(100.0, 70.0).unwrap();
        let p = out.image.get_pixel(c.0.round() as u32, c.1.round() as u32);
        let paper_luma = luma(prm.paper);
        assert!(
            luma(p.0.map(f32::from)) < paper_luma + 15.0,
            "{p:?} vs paper {paper_luma}"
        );
        // A saturated source colour keeps less chroma.
        let q = out.map.apply(30.0, 140.0).unwrap();
        let pq = out
            .image
            .get_pixel(q.0.round() as u32, q.1.round() as u32)
            .0;
        let chroma = |v: [u8; 3]| {
            i32::from(*v.iter().max().unwrap_or(&0)) - i32::from(*v.iter().min().unwrap_or(&0))
        };
        let s = src.get_pixel(30, 140).0;
        assert!(chroma(pq) < chroma(s), "{pq:?} vs source {s:?}");
    }

    #[test]
    fn replay_is_deterministic_sized_and_maps_the_face() {
        let src = photo();
        let region = face_crop_region(FACE, 200, 160, 2.6);
        let prm = ReplayParams::sample(&mut Rng::new(4));
        let a = simulate_replay(&src, region, 320, 240, &prm).unwrap();
        assert_eq!(a, simulate_replay(&src, region, 320, 240, &prm).unwrap());
        assert_eq!(a.image.dimensions(), (320, 240));
        let expected = a.map.apply(100.0, 70.0).unwrap();
        let found = marker_centre(&a.image, expected, 12.0);
        assert!(
            (found.0 - expected.0).hypot(found.1 - expected.1) < 3.0,
            "marker at {found:?}, map says {expected:?}"
        );
    }

    #[test]
    fn screen_tone_has_a_pixel_grid_and_a_blue_cast() {
        let prm = ReplayParams::sample(&mut Rng::new(6));
        let grey = [128.0, 128.0, 128.0];
        // Along a row the lit sub-pixel changes: the channel balance oscillates.
        let row: Vec<[f32; 3]> = (0..12)
            .map(|x| screen_tone(grey, x, 5, 400, 400, &prm))
            .collect();
        let lit: std::collections::BTreeSet<usize> = row
            .iter()
            .map(|p| {
                (0..3)
                    .max_by(|&a, &b| (p[a] / prm.cast[a]).total_cmp(&(p[b] / prm.cast[b])))
                    .unwrap_or(0)
            })
            .collect();
        assert!(lit.len() >= 2, "no sub-pixel stripes: {row:?}");
        // Averaged over the grid, grey comes out bluer than red.
        let mut sum = [0.0f32; 3];
        for y in 0..30 {
            for x in 0..30 {
                let p = screen_tone(grey, x, y, 4000, 4000, &prm);
                for c in 0..3 {
                    sum[c] += p[c];
                }
            }
        }
        assert!(sum[2] > sum[0] * 1.05, "{sum:?}");
    }
}
