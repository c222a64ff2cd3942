//! Capture degradations of a real photo, for genuine pairs: brightness/contrast shift, JPEG
//! re-encoding at quality 30–50, down- and up-scaling, slight blur, small rotation and crops that
//! keep every face. Each returns the degraded image and the map from source to output
//! coordinates, and is a pure function of its parameters; [`plan`] draws the parameters from a
//! seed.

use std::fmt;

use image::RgbImage;

use super::EvalError;
use super::geometry::{Homography, warp_clamped};
use super::imageops::{gaussian_blur, jpeg_roundtrip, map_pixels, resize};
use super::rng::Rng;

/// An image produced by a transform, with the map from source to output coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Transformed {
    /// The output image.
    pub image: RgbImage,
    /// Source → output coordinates.
    pub map: Homography,
}

/// An axis-aligned region in source coordinates `[x0, y0, x1, y1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    /// Left.
    pub x0: f64,
    /// Top.
    pub y0: f64,
    /// Right (exclusive).
    pub x1: f64,
    /// Bottom (exclusive).
    pub y1: f64,
}

impl Region {
    /// The whole of a `width` x `height` image.
    pub fn whole(width: u32, height: u32) -> Region {
        Region {
            x0: 0.0,
            y0: 0.0,
            x1: f64::from(width),
            y1: f64::from(height),
        }
    }

    /// The smallest region holding both.
    pub fn union(&self, o: &Region) -> Region {
        Region {
            x0: self.x0.min(o.x0),
            y0: self.y0.min(o.y0),
            x1: self.x1.max(o.x1),
            y1: self.y1.max(o.y1),
        }
    }

    /// Grown by `frac` of its size on every side.
    pub fn grown(&self, frac: f64) -> Region {
        let (dx, dy) = ((self.x1 - self.x0) * frac, (self.y1 - self.y0) * frac);
        Region {
            x0: self.x0 - dx,
            y0: self.y0 - dy,
            x1: self.x1 + dx,
            y1: self.y1 + dy,
        }
    }
}

/// One capture degradation with its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Degradation {
    /// `v' = (v - 128) * contrast + 128 + brightness` on every channel.
    Tone {
        /// Additive shift (0–255 units).
        brightness: f32,
        /// Contrast factor around mid-grey.
        contrast: f32,
    },
    /// JPEG re-encoding.
    Jpeg {
        /// Encoder quality (1–100).
        quality: u8,
    },
    /// Down-scaling by `factor` and back up to the original size.
    Rescale {
        /// Intermediate scale, e.g. 0.5.
        factor: f32,
    },
    /// Gaussian blur.
    Blur {
        /// Standard deviation in pixels.
        sigma: f32,
    },
    /// Rotation about the image centre, same output size, edges replicated.
    Rotate {
        /// Angle in degrees (clockwise on screen).
        degrees: f32,
    },
    /// Cropping to `[x, x + w) x [y, y + h)`.
    Crop {
        /// Left column.
        x: u32,
        /// Top row.
        y: u32,
        /// Width.
        w: u32,
        /// Height.
        h: u32,
    },
}

impl fmt::Display for Degradation {
    /// A short comma-free label for sample ids and CSV cells.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Tone {
                brightness,
                contrast,
            } => write!(f, "tone(b{brightness:+.0};c{contrast:.2})"),
            Self::Jpeg { quality } => write!(f, "jpeg(q{quality})"),
            Self::Rescale { factor } => write!(f, "rescale({factor:.2})"),
            Self::Blur { sigma } => write!(f, "blur({sigma:.2})"),
            Self::Rotate { degrees } => write!(f, "rotate({degrees:+.1})"),
            Self::Crop { x, y, w, h } => write!(f, "crop({x};{y};{w}x{h})"),
        }
    }
}

impl Degradation {
    /// Applies the degradation.
    pub fn apply(&self, img: &RgbImage) -> Result<Transformed, EvalError> {
        let (w, h) = img.dimensions();
        Ok(match *self {
            Self::Tone {
                brightness,
                contrast,
            } => Transformed {
                image: map_pixels(img, |p, _, _| {
                    p.map(|v| (v - 128.0) * contrast + 128.0 + brightness)
                }),
                map: Homography::IDENTITY,
            },
            Self::Jpeg { quality } => Transformed {
                image: jpeg_roundtrip(img, quality)?,
                map: Homography::IDENTITY,
            },
            Self::Rescale { factor } => {
                let f = f64::from(factor.clamp(0.05, 1.0));
                let sw = (f64::from(w) * f).round() as u32;
                let sh = (f64::from(h) * f).round() as u32;
                Transformed {
                    image: resize(&resize(img, sw, sh), w, h),
                    map: Homography::IDENTITY,
                }
            }
            Self::Blur { sigma } => Transformed {
                image: gaussian_blur(img, sigma),
                map: Homography::IDENTITY,
            },
            Self::Rotate { degrees } => {
                let map = Homography::rotation_about(
                    f64::from(w) / 2.0,
                    f64::from(h) / 2.0,
                    f64::from(degrees),
                );
                Transformed {
                    image: warp_clamped(img, &map, w, h),
                    map,
                }
            }
            Self::Crop { x, y, w: cw, h: ch } => {
                let x = x.min(w.saturating_sub(1));
                let y = y.min(h.saturating_sub(1));
                let cw = cw.clamp(1, w - x);
                let ch = ch.clamp(1, h - y);
                Transformed {
                    image: image::imageops::crop_imm(img, x, y, cw, ch).to_image(),
                    map: Homography::translation(-f64::from(x), -f64::from(y)),
                }
            }
        })
    }

    /// Order in a chain: geometry first, then optics, then tone, JPEG last (as a camera would).
    fn stage(&self) -> u8 {
        match self {
            Self::Crop { .. } => 0,
            Self::Rotate { .. } => 1,
            Self::Rescale { .. } => 2,
            Self::Blur { .. } => 3,
            Self::Tone { .. } => 4,
            Self::Jpeg { .. } => 5,
        }
    }
}

/// Applies several degradations in order, composing their maps.
pub fn apply_chain(img: &RgbImage, chain: &[Degradation]) -> Result<Transformed, EvalError> {
    let mut cur = Transformed {
        image: img.clone(),
        map: Homography::IDENTITY,
    };
    for d in chain {
        let next = d.apply(&cur.image)?;
        cur = Transformed {
            image: next.image,
            map: cur.map.then(&next.map),
        };
    }
    Ok(cur)
}

/// A label for a chain (`+`-joined).
pub fn chain_label(chain: &[Degradation]) -> String {
    chain
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("+")
}

/// The kinds of degradation, in the order [`plan`] draws them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// [`Degradation::Tone`].
    Tone,
    /// [`Degradation::Jpeg`].
    Jpeg,
    /// [`Degradation::Rescale`].
    Rescale,
    /// [`Degradation::Blur`].
    Blur,
    /// [`Degradation::Rotate`].
    Rotate,
    /// [`Degradation::Crop`].
    Crop,
}

/// Every kind.
pub const KINDS: [Kind; 6] = [
    Kind::Tone,
    Kind::Jpeg,
    Kind::Rescale,
    Kind::Blur,
    Kind::Rotate,
    Kind::Crop,
];

/// Draws parameters of `kind` for a `width x height` image whose faces lie inside `keep`
/// (crops never cut into it).
pub fn sample(kind: Kind, rng: &mut Rng, width: u32, height: u32, keep: Region) -> Degradation {
    match kind {
        Kind::Tone => Degradation::Tone {
            brightness: (rng.sign() * rng.uniform(10.0, 40.0)) as f32,
            contrast: rng.uniform(0.6, 1.4) as f32,
        },
        Kind::Jpeg => Degradation::Jpeg {
            quality: rng.int(30, 50) as u8,
        },
        Kind::Rescale => Degradation::Rescale {
            factor: rng.uniform(0.45, 0.55) as f32,
        },
        Kind::Blur => Degradation::Blur {
            sigma: rng.uniform(0.8, 1.6) as f32,
        },
        Kind::Rotate => Degradation::Rotate {
            degrees: (rng.sign() * rng.uniform(3.0, 10.0)) as f32,
        },
        Kind::Crop => {
            let (fw, fh) = (f64::from(width), f64::from(height));
            let k = Region {
                x0: keep.x0.clamp(0.0, fw),
                y0: keep.y0.clamp(0.0, fh),
                x1: keep.x1.clamp(0.0, fw),
                y1: keep.y1.clamp(0.0, fh),
            };
            // Remove 30–100 % of the margin on each side.
            let x0 = (k.x0 * rng.uniform(0.3, 1.0)).floor();
            let y0 = (k.y0 * rng.uniform(0.3, 1.0)).floor();
            let x1 = (k.x1 + (fw - k.x1) * rng.uniform(0.0, 0.7)).ceil();
            let y1 = (k.y1 + (fh - k.y1) * rng.uniform(0.0, 0.7)).ceil();
            Degradation::Crop {
                x: x0 as u32,
                y: y0 as u32,
                w: (x1 - x0).max(1.0) as u32,
                h: (y1 - y0).max(1.0) as u32,
            }
        }
    }
}

/// The degradation chains of one source image: `per_kind` single degradations of every kind,
/// then `combos` chains of 2–3 different kinds, all drawn from `(seed, source)`.
pub fn plan(
    seed: u64,
    source: &str,
    width: u32,
    height: u32,
    keep: Region,
    per_kind: usize,
    combos: usize,
) -> Vec<Vec<Degradation>> {
    let mut rng = Rng::derive(seed, &format!("degrade/{source}"));
    let mut out = Vec::new();
    for kind in KINDS {
        for _ in 0..per_kind {
            out.push(vec![sample(kind, &mut rng, width, height, keep)]);
        }
    }
    for _ in 0..combos {
        let mut kinds = KINDS.to_vec();
        rng.shuffle(&mut kinds);
        let n = rng.int(2, 3) as usize;
        let mut chain: Vec<Degradation> = kinds[..n]
            .iter()
            .map(|&k| sample(k, &mut rng, width, height, keep))
            .collect();
        chain.sort_by_key(Degradation::stage);
        out.push(chain);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::imageops::mean_abs_diff;
    use super::*;

    fn scene() -> RgbImage {
        RgbImage::from_fn(120, 90, |x, y| {
            let v = ((x * 7 + y * 3) % 200) as u8;
            image::Rgb([v, 255 - v, ((x * y) % 256) as u8])
        })
    }

    const KEEP: Region = Region {
        x0: 40.0,
        y0: 30.0,
        x1: 80.0,
        y1: 60.0,
    };

    #[test]
    fn plans_are_deterministic_and_seed_dependent() {
        let a = plan(1, "a.png", 120, 90, KEEP, 2, 3);
        assert_eq!(a.len(), 2 * KINDS.len() + 3);
        assert_eq!(a, plan(1, "a.png", 120, 90, KEEP, 2, 3));
        assert_ne!(a, plan(2, "a.png", 120, 90, KEEP, 2, 3));
        assert_ne!(a, plan(1, "b.png", 120, 90, KEEP, 2, 3));
        for chain in &a[2 * KINDS.len()..] {
            assert!((2..=3).contains(&chain.len()));
            assert!(chain.windows(2).all(|w| w[0].stage() < w[1].stage()));
        }
        assert!(!chain_label(&a[0]).contains(','));
    }

    #[test]
    fn every_degradation_changes_the_image_and_keeps_the_size() {
        let img = scene();
        let mut rng = Rng::new(5);
        for kind in KINDS {
            let d = sample(kind, &mut rng, 120, 90, KEEP);
            let t = d.apply(&img).unwrap();
            assert_eq!(t, d.apply(&img).unwrap(), "{d} is not deterministic");
            if let Degradation::Crop { w, h, .. } = d {
                assert_eq!(t.image.dimensions(), (w, h));
                assert!(w < 120 || h < 90, "{d} crops nothing");
            } else {
                assert_eq!(t.image.dimensions(), img.dimensions());
                let diff = mean_abs_diff(&img, &t.image).unwrap();
                assert!(diff > 1.0, "{d} changed the image by only {diff}");
            }
        }
    }

    #[test]
    fn crops_keep_the_face_region() {
        let mut rng = Rng::new(11);
        for _ in 0..50 {
            let d = sample(Kind::Crop, &mut rng, 120, 90, KEEP);
            let Degradation::Crop { x, y, w, h } = d else {
                panic!("not a crop: {d}");
            };
            assert!(f64::from(x) <= KEEP.x0 && f64::from(y) <= KEEP.y0, "{d}");
            assert!(
                f64::from(x + w) >= KEEP.x1 && f64::from(y + h) >= KEEP.y1,
                "{d}"
            );
            assert!(x + w <= 120 && y + h <= 90, "{d}");
        }
    }

    #[test]
    fn chain_maps_follow_the_pixels() {
        // A bright marker must land where the composed map sends it.
        let mut img = RgbImage::from_pixel(120, 90, image::Rgb([0, 0, 0]));
        for dy in 0..3 {
            for dx in 0..3 {
                img.put_pixel(59 + dx, 39 + dy, image::Rgb([255, 255, 255]));
            }
        }
        let chain = [
            Degradation::Crop {
                x: 20,
                y: 10,
                w: 90,
                h: 70,
            },
            Degradation::Rotate { degrees: 8.0 },
        ];
        let t = apply_chain(&img, &chain).unwrap();
        let (ex, ey) = t.map.apply(60.0, 40.0).unwrap();
        let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
        for (x, y, p) in t.image.enumerate_pixels() {
            let w = f64::from(p[0]);
            sx += w * f64::from(x);
            sy += w * f64::from(y);
            n += w;
        }
        assert!((sx / n - ex).abs() < 1.0 && (sy / n - ey).abs() < 1.0);
    }
}
