//! Integration tests of the vision pipeline with the real ONNX models and the sample images in
//! `runtime/testdata/faces/` (provenance in PROVENANCE.md there). They need the ONNX Runtime
//! library: run `scripts/setup-onnxruntime.sh` once; without it these tests fail and say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use facekey_runtime::vision::{Detection, Vision, VisionConfig};

fn faces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/faces")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(faces_dir().join(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

fn vision() -> &'static Vision {
    static V: OnceLock<Vision> = OnceLock::new();
    V.get_or_init(|| match Vision::load(VisionConfig::default()) {
        Ok(v) => v,
        Err(e) => panic!(
            "cannot load the vision pipeline: {e}\n(run scripts/setup-onnxruntime.sh to install \
             the ONNX Runtime library these tests need)"
        ),
    })
}

/// One reference detection from `reference_mtcnn.json`.
struct RefFace {
    bbox: [i64; 4],
    conf: f64,
    kp: [[i64; 2]; 5],
}

fn reference() -> Vec<(String, Vec<RefFace>)> {
    let json: serde_json::Value = serde_json::from_slice(&read("reference_mtcnn.json")).unwrap();
    let mut out = Vec::new();
    for (name, faces) in json.as_object().unwrap() {
        let faces = faces
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let ints = |v: &serde_json::Value| -> Vec<i64> {
                    v.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_i64().unwrap())
                        .collect()
                };
                let b = ints(&e["box"]);
                let kp = ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"].map(|k| {
                    let p = ints(&e["kp"][k]);
                    [p[0], p[1]]
                });
                RefFace {
                    bbox: [b[0], b[1], b[2], b[3]],
                    conf: e["conf"].as_f64().unwrap(),
                    kp,
                }
            })
            .collect();
        out.push((name.clone(), faces));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Largest per-coordinate deviation (pixels) of box and landmarks between a detection and a
/// reference face, rounding like the reference (half to even).
fn deviation(f: &Detection, r: &RefFace) -> (i64, i64) {
    let b = f.bbox.rounded();
    let box_dev = (0..4).map(|i| (b[i] - r.bbox[i]).abs()).max().unwrap();
    let kp_dev = f
        .landmarks
        .points()
        .iter()
        .zip(r.kp)
        .map(|(p, e)| {
            let x = f64::from(p.x).round_ties_even() as i64;
            let y = f64::from(p.y).round_ties_even() as i64;
            (x - e[0]).abs().max((y - e[1]).abs())
        })
        .max()
        .unwrap();
    (box_dev, kp_dev)
}

fn closest<'a>(faces: &'a [Detection], r: &RefFace) -> Option<&'a Detection> {
    faces.iter().min_by_key(|f| deviation(f, r).0)
}

/// The MTCNN implementation against the reference on the reference's own input pixels: the PNGs
/// as they are, and for the JPEGs the pixels the reference saw (decoded by PIL/libjpeg-turbo and
/// stored losslessly as `*.libjpeg.png`). Every face must be found with the same count, boxes and
/// landmarks within 1 px and confidence within 1e-3.
#[test]
fn mtcnn_matches_reference_on_reference_pixels() {
    let v = vision();
    let (mut worst_box, mut worst_kp, mut worst_conf) = (0i64, 0i64, 0f64);
    for (name, expected) in reference() {
        let input = name.replace(".jpg", ".libjpeg.png");
        let img = v.decode(&read(&input)).unwrap();
        let (faces, _) = v.detect(&img).unwrap();
        assert_eq!(faces.len(), expected.len(), "{name}: face count");
        for r in &expected {
            let f = closest(&faces, r).unwrap();
            let (db, dk) = deviation(f, r);
            let dc = (f64::from(f.confidence) - r.conf).abs();
            eprintln!(
                "{name}: ref {:?} got {:?} box dev {db}px landmarks dev {dk}px conf {:.6} vs {:.6}",
                r.bbox,
                f.bbox.rounded(),
                f.confidence,
                r.conf
            );
            worst_box = worst_box.max(db);
            worst_kp = worst_kp.max(dk);
            worst_conf = worst_conf.max(dc);
        }
    }
    eprintln!("worst: box {worst_box}px, landmarks {worst_kp}px, confidence {worst_conf:.2e}");
    assert!(
        worst_box <= 1 && worst_kp <= 1,
        "box {worst_box}px, landmarks {worst_kp}px"
    );
    assert!(worst_conf < 1e-3, "confidence off by {worst_conf}");
}

/// The whole input path (our JPEG decoder included) against the reference. JPEG decoders differ
/// by a few levels per pixel (the image crate vs libjpeg-turbo here: up to 5, mean 0.2), which
/// moves boxes by a few pixels (TensorFlow's own decoder moves the first t1.jpg face by 4 px too)
/// and can flip faces sitting right at ONet's 0.8 threshold. So every reference face above 0.85
/// must be found within max(3 px, 5 % of its size), borderline ones may be missing, and no extra
/// face may appear.
#[test]
fn mtcnn_matches_reference_through_own_decoder() {
    let v = vision();
    let mut worst = 0f64;
    for (name, expected) in reference() {
        let img = v.decode(&read(&name)).unwrap();
        let (faces, _) = v.detect(&img).unwrap();
        let solid = expected.iter().filter(|r| r.conf >= 0.85).count();
        assert!(
            faces.len() >= solid && faces.len() <= expected.len(),
            "{name}: {} faces, reference {} ({solid} above 0.85)",
            faces.len(),
            expected.len(),
        );
        for r in &expected {
            let tol = 3.max((0.05 * r.bbox[2].max(r.bbox[3]) as f64).round() as i64);
            match closest(&faces, r) {
                Some(f) if deviation(f, r).0 <= tol => {
                    let (db, dk) = deviation(f, r);
                    eprintln!(
                        "{name}: ref {:?} got {:?} box dev {db}px landmarks dev {dk}px (tolerance {tol}px)",
                        r.bbox,
                        f.bbox.rounded()
                    );
                    assert!(dk <= tol, "{name}: landmarks off by {dk}px");
                    worst = worst.max(db.max(dk) as f64 / r.bbox[2].max(r.bbox[3]) as f64);
                }
                _ => {
                    eprintln!(
                        "{name}: reference face {:?} (conf {:.3}) not found",
                        r.bbox, r.conf
                    );
                    assert!(r.conf < 0.85, "{name}: missed a solid face {:?}", r.bbox);
                }
            }
        }
    }
    eprintln!("worst deviation {:.1} % of the face size", worst * 100.0);
}
