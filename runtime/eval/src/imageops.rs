//! Small pixel operations the simulations are built from: per-pixel tone maps, Gaussian blur,
//! sensor noise, JPEG re-encoding, resampling, a synthetic background, and a difference measure
//! for tests.

use image::{Rgb, RgbImage};

use super::EvalError;
use super::rng::Rng;

/// Applies `f(rgb, x, y)` to every pixel (values 0–255 as `f32`, rounded and clamped back).
pub fn map_pixels(img: &RgbImage, f: impl Fn([f32; 3], u32, u32) -> [f32; 3]) -> RgbImage {
    let mut out = img.clone();
    for (x, y, p) in out.enumerate_pixels_mut() {
        let v = f(p.0.map(f32::from), x, y);
        *p = Rgb(v.map(|c| c.round().clamp(0.0, 255.0) as u8));
    }
    out
}

/// BT.601 luma of an RGB triple.
pub fn luma(p: [f32; 3]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

/// Separable Gaussian blur with clamp-to-edge borders; `sigma <= 0` returns a copy.
pub fn gaussian_blur(img: &RgbImage, sigma: f32) -> RgbImage {
    if sigma <= 0.0 || img.width() == 0 || img.height() == 0 {
        return img.clone();
    }
    let radius = (3.0 * sigma).ceil() as i64;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let norm: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / norm).collect();
    let (w, h) = (img.width() as i64, img.height() as i64);
    let src: Vec<f32> = img.as_raw().iter().map(|&v| f32::from(v)).collect();
    let mut tmp = vec![0.0f32; src.len()];
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0.0f32; 3];
            for (k, kv) in kernel.iter().enumerate() {
                let sx = (x + k as i64 - radius).clamp(0, w - 1);
                let i = ((y * w + sx) * 3) as usize;
                for c in 0..3 {
                    acc[c] += kv * src[i + c];
                }
            }
            let o = ((y * w + x) * 3) as usize;
            tmp[o..o + 3].copy_from_slice(&acc);
        }
    }
    let mut out = vec![0u8; src.len()];
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0.0f32; 3];
            for (k, kv) in kernel.iter().enumerate() {
                let sy = (y + k as i64 - radius).clamp(0, h - 1);
                let i = ((sy * w + x) * 3) as usize;
                for c in 0..3 {
                    acc[c] += kv * tmp[i + c];
                }
            }
            let o = ((y * w + x) * 3) as usize;
            for c in 0..3 {
                out[o + c] = acc[c].round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    RgbImage::from_raw(img.width(), img.height(), out).unwrap_or_else(|| img.clone())
}

/// Adds independent Gaussian noise of standard deviation `sigma` (0–255 units) to every sample.
pub fn add_noise(img: &RgbImage, sigma: f64, rng: &mut Rng) -> RgbImage {
    let mut out = img.clone();
    for v in out.iter_mut() {
        let n = f64::from(*v) + sigma * rng.normal();
        *v = n.round().clamp(0.0, 255.0) as u8;
    }
    out
}

/// Encodes as JPEG at `quality` (1–100) and decodes again.
pub fn jpeg_roundtrip(img: &RgbImage, quality: u8) -> Result<RgbImage, EvalError> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality.clamp(1, 100))
        .encode_image(img)
        .map_err(|source| EvalError::Image {
            context: format!("encoding JPEG quality {quality}"),
            source,
        })?;
    image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
        .map(|d| d.to_rgb8())
        .map_err(|source| EvalError::Image {
            context: format!("decoding JPEG quality {quality}"),
            source,
        })
}

/// Resamples to `w x h` (at least 1x1) with a triangle (bilinear, area-aware) filter.
pub fn resize(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    image::imageops::resize(
        img,
        w.max(1),
        h.max(1),
        image::imageops::FilterType::Triangle,
    )
}

/// A synthetic indoor background without faces: a wall colour with a lighting gradient,
/// low-frequency blotches and a few darker or lighter rectangles (furniture, frames), blurred.
pub fn background(w: u32, h: u32, rng: &mut Rng) -> RgbImage {
    let base = [
        rng.uniform(90.0, 200.0),
        rng.uniform(80.0, 190.0),
        rng.uniform(70.0, 180.0),
    ];
    let (gx, gy) = (rng.uniform(-0.35, 0.35), rng.uniform(-0.45, 0.15));
    // Low-frequency noise: a coarse random grid, bilinearly interpolated.
    let (cols, rows) = (9usize, 7usize);
    let grid: Vec<f64> = (0..cols * rows).map(|_| rng.uniform(-22.0, 22.0)).collect();
    let rects: Vec<([f64; 4], f64)> = (0..rng.int(2, 5))
        .map(|_| {
            let x0 = rng.uniform(0.0, f64::from(w));
            let y0 = rng.uniform(0.0, f64::from(h));
            let rw = rng.uniform(0.1, 0.5) * f64::from(w);
            let rh = rng.uniform(0.1, 0.6) * f64::from(h);
            ([x0, y0, x0 + rw, y0 + rh], rng.uniform(-60.0, 40.0))
        })
        .collect();
    let mut img = RgbImage::new(w, h);
    let (fw, fh) = (f64::from(w.max(2) - 1), f64::from(h.max(2) - 1));
    for (x, y, p) in img.enumerate_pixels_mut() {
        let (u, v) = (f64::from(x) / fw, f64::from(y) / fh);
        let gxf = u * (cols - 1) as f64;
        let gyf = v * (rows - 1) as f64;
        let (i0, j0) = (
            (gxf.floor() as usize).min(cols - 2),
            (gyf.floor() as usize).min(rows - 2),
        );
        let (fx, fy) = (gxf - i0 as f64, gyf - j0 as f64);
        let g = |i: usize, j: usize| grid[j * cols + i];
        let noise = (g(i0, j0) * (1.0 - fx) + g(i0 + 1, j0) * fx) * (1.0 - fy)
            + (g(i0, j0 + 1) * (1.0 - fx) + g(i0 + 1, j0 + 1) * fx) * fy;
        let light = 1.0 + gx * (u - 0.5) + gy * (v - 0.5);
        let mut shift = noise;
        for (r, d) in &rects {
            let (fxp, fyp) = (f64::from(x), f64::from(y));
            if fxp >= r[0] && fxp < r[2] && fyp >= r[1] && fyp < r[3] {
                shift += d;
            }
        }
        *p = Rgb(base.map(|b| (b * light + shift).round().clamp(0.0, 255.0) as u8));
    }
    gaussian_blur(&img, 2.0)
}

/// Mean absolute difference per sample of two images of the same size (0–255), or `None` when
/// the sizes differ.
pub fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> Option<f64> {
    if a.dimensions() != b.dimensions() {
        return None;
    }
    let n = a.as_raw().len().max(1) as f64;
    let s: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| f64::from(x.abs_diff(y)))
        .sum();
    Some(s / n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn checker(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            if (x / 4 + y / 4) % 2 == 0 {
                Rgb([230, 200, 30])
            } else {
                Rgb([20, 60, 220])
            }
        })
    }

    #[test]
    fn blur_keeps_the_mean_and_smooths() {
        let img = checker(40, 30);
        let b = gaussian_blur(&img, 2.0);
        assert_eq!(b.dimensions(), img.dimensions());
        let mean = |i: &RgbImage| {
            i.as_raw().iter().map(|&v| f64::from(v)).sum::<f64>() / i.as_raw().len() as f64
        };
        assert!((mean(&img) - mean(&b)).abs() < 2.0);
        // Neighbouring-pixel differences shrink.
        let tv = |i: &RgbImage| {
            let mut s = 0.0;
            for y in 0..i.height() {
                for x in 1..i.width() {
                    s += f64::from(i.get_pixel(x, y)[0].abs_diff(i.get_pixel(x - 1, y)[0]));
                }
            }
            s
        };
        assert!(tv(&b) < tv(&img) * 0.5, "{} vs {}", tv(&b), tv(&img));
        assert_eq!(gaussian_blur(&img, 0.0), img);
    }

    #[test]
    fn jpeg_roundtrip_is_lossy_but_close() {
        let img = checker(64, 48);
        let j = jpeg_roundtrip(&img, 35).unwrap();
        assert_eq!(j.dimensions(), img.dimensions());
        let d = mean_abs_diff(&img, &j).unwrap();
        assert!(d > 0.5 && d < 40.0, "{d}");
    }

    #[test]
    fn background_is_deterministic_and_varied() {
        let a = background(64, 48, &mut Rng::new(1));
        let b = background(64, 48, &mut Rng::new(1));
        let c = background(64, 48, &mut Rng::new(2));
        assert_eq!(a, b);
        assert!(mean_abs_diff(&a, &c).unwrap() > 3.0);
        let lumas: Vec<f32> = a.pixels().map(|p| luma(p.0.map(f32::from))).collect();
        let lo = lumas.iter().copied().fold(f32::MAX, f32::min);
        let hi = lumas.iter().copied().fold(f32::MIN, f32::max);
        assert!(hi - lo > 5.0, "flat background {lo}..{hi}");
    }

    #[test]
    fn noise_changes_pixels_by_about_sigma() {
        let img = RgbImage::from_pixel(50, 50, Rgb([128, 128, 128]));
        let n = add_noise(&img, 5.0, &mut Rng::new(9));
        let d = mean_abs_diff(&img, &n).unwrap();
        // E|N(0, 5)| = 5 * sqrt(2 / pi) ~ 4.0 (before rounding).
        assert!((d - 4.0).abs() < 0.5, "{d}");
        assert!(mean_abs_diff(&img, &RgbImage::new(2, 2)).is_none());
    }
}
