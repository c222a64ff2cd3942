//! Image input: JPEG, PNG and WebP bytes to an upright 8-bit RGB image, with limits on the
//! encoded size and on the pixel count read from the header before any pixel buffer is allocated
//! (decompression bombs), and EXIF orientation applied.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
use serde::{Deserialize, Serialize};

/// Limits applied to every decoded image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeLimits {
    /// Largest accepted encoded image, in bytes (default 5 MiB, like CompreFace and AWS).
    pub max_bytes: usize,
    /// Largest accepted `width * height` (default 16 megapixels).
    pub max_pixels: u64,
    /// Largest accepted width or height (default 8192).
    pub max_dimension: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_bytes: facekey_settings::defaults::MAX_IMAGE_BYTES,
            max_pixels: facekey_settings::defaults::MAX_IMAGE_PIXELS,
            max_dimension: 8192,
        }
    }
}

/// Why an image was rejected.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body was empty.
    #[error("empty image")]
    Empty,
    /// More encoded bytes than allowed.
    #[error("image is {size} bytes, the limit is {limit}")]
    TooManyBytes {
        /// Encoded size.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// Not a JPEG, PNG or WebP (by content, not by name).
    #[error("unsupported image format{}; send JPEG, PNG or WebP", detected.map(|f| format!(" ({f:?})")).unwrap_or_default())]
    UnsupportedFormat {
        /// The format sniffed from the bytes, if any.
        detected: Option<ImageFormat>,
    },
    /// The header declares more pixels or a larger side than allowed.
    #[error(
        "image is {width}x{height} pixels, the limit is {max_pixels} pixels and {max_dimension} per side"
    )]
    TooManyPixels {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// Configured pixel limit.
        max_pixels: u64,
        /// Configured side limit.
        max_dimension: u32,
    },
    /// The JPEG's entropy-coded data ends before its end-of-image marker: a cut-off upload,
    /// which the decoder would otherwise fill with grey.
    #[error("truncated JPEG image: the data ends before its end-of-image marker")]
    TruncatedJpeg,
    /// The data is not a valid image of its format.
    #[error("corrupt or truncated {format:?} image")]
    Corrupt {
        /// The sniffed format.
        format: ImageFormat,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },
}

/// Decodes `bytes` into an upright RGB image within `limits`.
///
/// Order of checks: encoded size, format sniffing, header dimensions (no pixel allocation yet),
/// then decoding with the decoder's own allocation limit as a second guard, then EXIF orientation.
pub fn decode_image(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::TooManyBytes {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let format = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP)) => f,
        Ok(other) => {
            return Err(DecodeError::UnsupportedFormat {
                detected: Some(other),
            });
        }
        Err(_) => return Err(DecodeError::UnsupportedFormat { detected: None }),
    };
    let corrupt = |source| DecodeError::Corrupt { format, source };
    if format == ImageFormat::Jpeg && !jpeg_reaches_end_marker(bytes) {
        return Err(DecodeError::TruncatedJpeg);
    }

    // 1. Header only: the declared size, before any pixel buffer exists.
    let mut header = ImageReader::with_format(Cursor::new(bytes), format);
    header.no_limits();
    let (width, height) = header.into_dimensions().map_err(corrupt)?;
    if width == 0
        || height == 0
        || u64::from(width) * u64::from(height) > limits.max_pixels
        || width > limits.max_dimension
        || height > limits.max_dimension
    {
        return Err(too_many(width, height, limits));
    }

    // 2. Decode, with the decoder's own limits as a second guard.
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(limits.max_dimension);
    decoder_limits.max_image_height = Some(limits.max_dimension);
    // Decoded RGBA at 16 bits per sample plus scratch: a generous bound that still stops bombs.
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(12).max(1 << 20));
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(|e| match e {
        image::ImageError::Limits(_) => too_many(width, height, limits),
        other => corrupt(other),
    })?;
    let orientation = decoder.orientation().map_err(corrupt)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| match e {
        image::ImageError::Limits(_) => too_many(width, height, limits),
        other => corrupt(other),
    })?;
    img.apply_orientation(orientation);
    Ok(match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}

/// Whether a JPEG's marker structure reaches its EOI (end of image) marker: segments are
/// skipped by their lengths (so an EXIF thumbnail's own EOI inside APP1 does not count), and
/// entropy-coded data after each SOS is scanned for the next marker. Bytes after EOI (camera
/// trailers, motion-photo videos) are allowed.
fn jpeg_reaches_end_marker(bytes: &[u8]) -> bool {
    const SOI: u8 = 0xD8;
    const EOI: u8 = 0xD9;
    const SOS: u8 = 0xDA;
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != SOI {
        return false;
    }
    let mut i = 2;
    loop {
        // Find the next marker: 0xFF (fill bytes allowed) followed by a non-0xFF code.
        while i < bytes.len() && bytes[i] != 0xFF {
            i += 1;
        }
        while i < bytes.len() && bytes[i] == 0xFF {
            i += 1;
        }
        let Some(&code) = bytes.get(i) else {
            return false;
        };
        i += 1;
        match code {
            EOI => return true,
            // Standalone markers without a length: TEM and RST0-7.
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(len) = bytes
            .get(i..i + 2)
            .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
        else {
            return false;
        };
        if len < 2 {
            return false;
        }
        i += len;
        if i > bytes.len() {
            return false;
        }
        if code == SOS {
            // Entropy-coded data: 0xFF00 is a stuffed byte and RSTn a restart; any other marker
            // ends the scan.
            loop {
                while i < bytes.len() && bytes[i] != 0xFF {
                    i += 1;
                }
                match bytes.get(i + 1) {
                    None => return false,
                    Some(0x00 | 0xD0..=0xD7) => i += 2,
                    Some(0xFF) => i += 1,
                    Some(_) => break,
                }
            }
        }
    }
}

fn too_many(width: u32, height: u32, limits: &DecodeLimits) -> DecodeError {
    DecodeError::TooManyPixels {
        width,
        height,
        max_pixels: limits.max_pixels,
        max_dimension: limits.max_dimension,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn sample() -> RgbImage {
        let mut img = RgbImage::new(6, 4);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([(x * 40) as u8, (y * 60) as u8, 128]);
        }
        img
    }

    /// A small PNG whose IHDR claims `width x height` RGB pixels, followed by a tiny IDAT (a
    /// deflate stream of a few zero bytes, far too short for the claim) and IEND: the shape of a
    /// decompression bomb's header, all chunk CRCs valid.
    pub(crate) fn png_header_only(width: u32, height: u32) -> Vec<u8> {
        fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut body = kind.to_vec();
            body.extend_from_slice(data);
            out.extend_from_slice(&body);
            out.extend_from_slice(&crc32(&body).to_be_bytes());
        }
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        // zlib header, one stored final block of 4 zero bytes, Adler-32 of those bytes.
        let idat = [
            0x78, 0x01, 0x01, 0x04, 0x00, 0xFB, 0xFF, 0, 0, 0, 0, 0x00, 0x04, 0x00, 0x01,
        ];
        chunk(&mut out, b"IDAT", &idat);
        chunk(&mut out, b"IEND", &[]);
        out
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn png_round_trips() {
        let img = sample();
        let out = decode_image(&encode(&img, ImageFormat::Png), &DecodeLimits::default()).unwrap();
        assert_eq!(out, img);
    }

    #[test]
    fn jpeg_and_webp_decode() {
        let img = sample();
        for f in [ImageFormat::Jpeg, ImageFormat::WebP] {
            let out = decode_image(&encode(&img, f), &DecodeLimits::default()).unwrap();
            assert_eq!(out.dimensions(), (6, 4), "{f:?}");
        }
    }

    #[test]
    fn rejects_unsupported_and_empty() {
        let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00";
        assert!(matches!(
            decode_image(gif, &DecodeLimits::default()),
            Err(DecodeError::UnsupportedFormat {
                detected: Some(ImageFormat::Gif)
            })
        ));
        assert!(matches!(
            decode_image(b"hello world", &DecodeLimits::default()),
            Err(DecodeError::UnsupportedFormat { detected: None })
        ));
        assert!(matches!(
            decode_image(b"", &DecodeLimits::default()),
            Err(DecodeError::Empty)
        ));
    }

    #[test]
    fn rejects_too_many_bytes() {
        let bytes = encode(&sample(), ImageFormat::Png);
        let limits = DecodeLimits {
            max_bytes: 10,
            ..DecodeLimits::default()
        };
        assert!(matches!(
            decode_image(&bytes, &limits),
            Err(DecodeError::TooManyBytes { limit: 10, .. })
        ));
    }

    #[test]
    fn decompression_bomb_rejected_from_header() {
        let bomb = png_header_only(100_000, 100_000);
        let err = decode_image(&bomb, &DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::TooManyPixels { .. }), "{err:?}");
        // Within the side limit but over the pixel count.
        let limits = DecodeLimits {
            max_pixels: 1000,
            ..DecodeLimits::default()
        };
        let err = decode_image(&png_header_only(100, 100), &limits).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::TooManyPixels {
                    width: 100,
                    height: 100,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn truncated_photos_are_refused_not_filled_with_grey() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/faces");
        for name in ["astronaut_640x480.jpg", "t1.jpg", "messi5.jpg"] {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            assert!(
                decode_image(&bytes, &DecodeLimits::default()).is_ok(),
                "{name}"
            );
            for frac in [0.3, 0.5, 0.9, 0.99] {
                let cut = &bytes[..(bytes.len() as f64 * frac) as usize];
                let err = decode_image(cut, &DecodeLimits::default()).unwrap_err();
                assert!(
                    matches!(
                        err,
                        DecodeError::TruncatedJpeg | DecodeError::Corrupt { .. }
                    ),
                    "{name} cut at {frac}: {err:?}"
                );
            }
            // Missing only the final EOI marker.
            let err = decode_image(&bytes[..bytes.len() - 2], &DecodeLimits::default());
            assert!(err.is_err(), "{name} without EOI");
            // Trailing data after EOI (camera trailers, motion photos) is fine.
            let mut trailer = bytes.clone();
            trailer.extend_from_slice(b"\x00\x00ftypmp42 trailing video bytes");
            assert!(
                decode_image(&trailer, &DecodeLimits::default()).is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn truncated_image_is_corrupt() {
        let bytes = encode(&sample(), ImageFormat::Jpeg);
        let err = decode_image(&bytes[..bytes.len() / 3], &DecodeLimits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Corrupt { .. } | DecodeError::TruncatedJpeg
            ),
            "{err:?}"
        );
        let err = decode_image(&png_header_only(10, 10), &DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt { .. }), "{err:?}");
    }

    /// Inserts an EXIF APP1 segment with only an Orientation tag right after the JPEG SOI marker.
    pub(crate) fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
        tiff.extend_from_slice(&1u16.to_be_bytes()); // one IFD entry
        tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_be_bytes()); // count
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        let mut payload = b"Exif\x00\x00".to_vec();
        payload.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_applied() {
        // 6 x 4 image, left half dark and right half bright; orientation 6 means "rotate 90
        // degrees clockwise to display", so the upright image is 4 x 6 with the bright half at
        // the bottom.
        let mut img = RgbImage::new(6, 4);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = if x < 3 {
                image::Rgb([10, 10, 10])
            } else {
                image::Rgb([240, 240, 240])
            };
        }
        let jpeg = encode(&img, ImageFormat::Jpeg);
        let plain = decode_image(&jpeg, &DecodeLimits::default()).unwrap();
        assert_eq!(plain.dimensions(), (6, 4));
        let rotated =
            decode_image(&with_exif_orientation(&jpeg, 6), &DecodeLimits::default()).unwrap();
        assert_eq!(rotated.dimensions(), (4, 6));
        assert!(rotated.get_pixel(1, 0)[0] < 80);
        assert!(rotated.get_pixel(1, 5)[0] > 180);
    }

    #[test]
    fn limits_default_and_serde() {
        let l: DecodeLimits = serde_json::from_str(r#"{"max_bytes": 1000}"#).unwrap();
        assert_eq!(l.max_bytes, 1000);
        assert_eq!(l.max_pixels, DecodeLimits::default().max_pixels);
    }
}
