//! YUV4MPEG2 (`.y4m`) writing: the raw 4:2:0 planar video Chromium's fake camera plays with
//! `--use-fake-device-for-media-stream --use-file-for-fake-video-capture=<file>.y4m` (it loops
//! the file at the header's frame rate and accepts no per-frame parameters: each frame is
//! `FRAME\n` then the Y, U and V planes).
//!
//! Colour: BT.601 limited range ("studio swing", Y 16–235), the matrix Chromium assumes for
//! I420 camera frames; chroma is the mean of each 2x2 block.

use std::io::Write;

use image::RgbImage;

/// The stream header for `w x h` frames at `fps` frames per second.
pub fn header(w: u32, h: u32, fps: u32) -> String {
    format!("YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n")
}

/// BT.601 limited-range Y, Cb, Cr of an RGB pixel.
pub fn rgb_to_ycbcr(r: f64, g: f64, b: f64) -> (f64, f64, f64) {
    let y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0;
    let cb = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0;
    let cr = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0;
    (y, cb, cr)
}

fn byte(v: f64) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// One frame's planes (without the `FRAME` line). `img` must have even sides.
pub fn planes(img: &RgbImage) -> Vec<u8> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut y = Vec::with_capacity(w * h * 3 / 2);
    let (cw, ch) = (w / 2, h / 2);
    let mut u = vec![0u8; cw * ch];
    let mut v = vec![0u8; cw * ch];
    for row in 0..h {
        for col in 0..w {
            let p = img.get_pixel(col as u32, row as u32);
            let (yy, _, _) = rgb_to_ycbcr(f64::from(p[0]), f64::from(p[1]), f64::from(p[2]));
            y.push(byte(yy));
        }
    }
    for cy in 0..ch {
        for cx in 0..cw {
            let (mut sb, mut sr) = (0.0, 0.0);
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let p = img.get_pixel((2 * cx + dx) as u32, (2 * cy + dy) as u32);
                let (_, cb, cr) = rgb_to_ycbcr(f64::from(p[0]), f64::from(p[1]), f64::from(p[2]));
                sb += cb;
                sr += cr;
            }
            u[cy * cw + cx] = byte(sb / 4.0);
            v[cy * cw + cx] = byte(sr / 4.0);
        }
    }
    y.extend_from_slice(&u);
    y.extend_from_slice(&v);
    y
}

/// Writes `frames` (each shown `repeats[i]` times) as a y4m stream at `fps`. Every frame must
/// have the first frame's size, with even sides.
pub fn write(out: &mut impl Write, frames: &[(&RgbImage, usize)], fps: u32) -> std::io::Result<()> {
    let Some((first, _)) = frames.first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no frames to write",
        ));
    };
    let (w, h) = first.dimensions();
    if w % 2 == 1 || h % 2 == 1 || w == 0 || h == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("y4m 4:2:0 needs even sides, got {w}x{h}"),
        ));
    }
    out.write_all(header(w, h, fps.max(1)).as_bytes())?;
    for (img, repeats) in frames {
        if img.dimensions() != (w, h) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "frames of different sizes",
            ));
        }
        let data = planes(img);
        for _ in 0..*repeats {
            out.write_all(b"FRAME\n")?;
            out.write_all(&data)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn layout_and_colours() {
        let red = RgbImage::from_pixel(4, 2, Rgb([255, 0, 0]));
        let white = RgbImage::from_pixel(4, 2, Rgb([255, 255, 255]));
        let mut buf = Vec::new();
        write(&mut buf, &[(&red, 2), (&white, 1)], 15).unwrap();
        let head = header(4, 2, 15);
        assert!(buf.starts_with(head.as_bytes()));
        let frame = 6 + 4 * 2 + 2 * 2;
        assert_eq!(buf.len(), head.len() + 3 * frame);
        let f1 = &buf[head.len()..head.len() + frame];
        assert_eq!(&f1[..6], b"FRAME\n");
        // Red: Y 81, Cb 90, Cr 240 in BT.601 limited range.
        assert_eq!(f1[6], 81);
        assert_eq!(f1[6 + 8], 90);
        assert_eq!(f1[6 + 10], 240);
        let f3 = &buf[head.len() + 2 * frame..];
        assert_eq!((f3[6], f3[6 + 8], f3[6 + 10]), (235, 128, 128));
    }

    #[test]
    fn odd_sizes_are_refused() {
        let img = RgbImage::new(3, 2);
        assert!(write(&mut Vec::new(), &[(&img, 1)], 10).is_err());
        assert!(write(&mut Vec::new(), &[], 10).is_err());
    }
}
