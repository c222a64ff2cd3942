//! Integration tests of the vision pipeline with the real ONNX models and the sample images in
//! `runtime/testdata/faces/` (provenance in PROVENANCE.md there). They need the ONNX Runtime
//! library: run `scripts/setup-onnxruntime.sh` once; without it these tests fail and say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use facekey_runtime::vision::{
    AnalyzeOptions, BoundingBox, Combine, Detection, Embedding, ErrorKind, LivenessMode,
    MultiFacePolicy, Vision, VisionConfig,
};
use image::{ImageFormat, RgbImage};

fn faces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/faces")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(faces_dir().join(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

/// The pipeline with both liveness models (the default runs only MiniFAS), so every model's
/// measurements are checked.
fn vision() -> &'static Vision {
    static V: OnceLock<Vision> = OnceLock::new();
    let mut cfg = VisionConfig::default();
    cfg.liveness.mode = LivenessMode::Both {
        combine: Combine::Mean,
    };
    V.get_or_init(|| match Vision::load(cfg) {
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

fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .unwrap();
    out
}

const EMBED_ONLY: AnalyzeOptions = AnalyzeOptions {
    liveness: false,
    quality: false,
};

/// A face of a sample image: where it is and its embedding.
struct Identity {
    label: String,
    image: RgbImage,
    face: Detection,
    embedding: Embedding,
}

/// One identity per face of the sample photos, except messi5.jpg (its faces are 28 and 50 px:
/// below what a verification photo looks like). Eight different people.
fn identities(v: &Vision) -> Vec<Identity> {
    let mut out = Vec::new();
    for name in ["astronaut.png", "Tom_Hanks_54745.png", "t1.jpg"] {
        let img = v.decode(&read(name)).unwrap();
        let (faces, _) = v.detect(&img).unwrap();
        for (i, face) in faces
            .iter()
            .enumerate()
            .filter(|(_, f)| f.bbox.width >= 60.0)
        {
            let a = v.analyze_face(&img, *face, EMBED_ONLY).unwrap();
            out.push(Identity {
                label: format!("{name}#{i}"),
                image: img.clone(),
                face: *face,
                embedding: a.embedding,
            });
        }
    }
    out
}

/// The face of `faces` (detected in a copy scaled by `scale`) nearest to the identity's face.
fn nearest_face(id: &Identity, faces: &[Detection], scale: f32) -> Detection {
    let (cx, cy) = (
        (id.face.bbox.x + id.face.bbox.width / 2.0) * scale,
        (id.face.bbox.y + id.face.bbox.height / 2.0) * scale,
    );
    let d = |f: &Detection| {
        let (x, y) = (
            f.bbox.x + f.bbox.width / 2.0,
            f.bbox.y + f.bbox.height / 2.0,
        );
        (x - cx).powi(2) + (y - cy).powi(2)
    };
    *faces
        .iter()
        .min_by(|a, b| d(a).total_cmp(&d(b)))
        .unwrap_or_else(|| panic!("{}: face lost after degradation", id.label))
}

/// Matching built from the sample photos (no labelled same-person pairs exist in the packages):
/// each face against degraded copies of itself (brighter, JPEG quality 40, half scale) must stay
/// under dlib's 0.6, and every face must be closer to its own copies than to any other person.
#[test]
fn embeddings_survive_degradation_and_separate_people() {
    let v = vision();
    let ids = identities(v);
    assert_eq!(ids.len(), 8, "expected 8 usable faces");
    let mut worst_genuine = 0f32;
    let mut sources: Vec<&RgbImage> = Vec::new();
    for id in &ids {
        if !sources.iter().any(|s| **s == id.image) {
            sources.push(&id.image);
        }
    }
    for src in sources {
        let bright = RgbImage::from_fn(src.width(), src.height(), |x, y| {
            let p = src.get_pixel(x, y);
            image::Rgb(p.0.map(|c| (f32::from(c) * 1.2 + 20.0).min(255.0) as u8))
        });
        let recoded = image::load_from_memory(&jpeg(src, 40)).unwrap().to_rgb8();
        let half = image::imageops::resize(
            src,
            src.width() / 2,
            src.height() / 2,
            image::imageops::FilterType::Triangle,
        );
        for (what, degraded, scale) in [
            ("brightness", &bright, 1.0),
            ("jpeg q40", &recoded, 1.0),
            ("half scale", &half, 0.5),
        ] {
            let (faces, _) = v.detect(degraded).unwrap();
            for id in ids.iter().filter(|id| id.image == *src) {
                let face = nearest_face(id, &faces, scale);
                let e = v
                    .analyze_face(degraded, face, EMBED_ONLY)
                    .unwrap()
                    .embedding;
                let d = id.embedding.distance(&e);
                let (other, nearest) = ids
                    .iter()
                    .filter(|o| o.label != id.label)
                    .map(|o| (o.label.as_str(), id.embedding.distance(&o.embedding)))
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .unwrap();
                eprintln!(
                    "{}: {what} distance {d:.3} (nearest other person {other} at {nearest:.3})",
                    id.label
                );
                worst_genuine = worst_genuine.max(d);
                assert!(d < 0.6, "{} {what}: distance {d}", id.label);
                assert!(d < nearest, "{} {what}: closer to {other}", id.label);
            }
        }
    }
    let mut impostors = Vec::new();
    for (i, a) in ids.iter().enumerate() {
        for b in &ids[i + 1..] {
            impostors.push(a.embedding.distance(&b.embedding));
        }
    }
    let under = impostors.iter().filter(|&&d| d < 0.6).count();
    let mean = impostors.iter().sum::<f32>() / impostors.len() as f32;
    let min = impostors.iter().copied().fold(f32::INFINITY, f32::min);
    eprintln!(
        "genuine max {worst_genuine:.3}; impostors: {} pairs, mean {mean:.3}, min {min:.3}, {under} under 0.6",
        impostors.len()
    );
    // dlib's own numbers: ~2 % of impostor pairs fall under 0.6 on such photos.
    assert!(mean > 0.7, "impostor mean {mean}");
    assert!(under <= 1, "{under} impostor pairs under 0.6");
}

#[test]
fn verify_reports_every_stage_on_a_selfie_sized_jpeg() {
    let v = vision();
    let a = v.verify(&read("astronaut_640x480.jpg")).unwrap();
    assert_eq!((a.image_width, a.image_height), (640, 480));
    assert_eq!(a.faces_detected, 1);
    assert!(a.face.confidence > 0.99);
    let live = a.liveness.clone().unwrap();
    let (dtn, mini) = (live.dtn.unwrap(), live.minifas.unwrap());
    let score = live.score.unwrap();
    // fr_liveness's part is fused with human_liveness (FACEKEY_PASSIVE_LIVENESS_MODELS default).
    let fr = fused_fr(&live);
    assert!((score - 0.5 * (dtn.live_score + fr)).abs() < 1e-6);
    assert!(live.failure.is_none(), "{live:?}");
    assert!((0.0..=1.0).contains(&score));
    assert!((mini.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    let q = a.quality.unwrap();
    for s in [q.score, q.size, q.sharpness, q.pose, q.exposure] {
        assert!((0.0..=1.0).contains(&s), "{q:?}");
    }
    assert!(
        q.yaw_degrees.abs() < 15.0 && q.roll_degrees.abs() < 10.0,
        "{q:?}"
    );
    let t = a.timings;
    // Liveness runs beside align/embed/quality (parallel_liveness, the default).
    assert!(t.total >= t.decode + t.detect + t.liveness);
    assert!(t.total >= t.decode + t.detect + t.align + t.embed + t.quality);
    let m = a.inference;
    assert_eq!(m.pnet_runs, 10);
    assert!(m.pnet + m.rnet + m.onet <= t.detect);
    assert!(m.embed.unwrap() <= t.embed);
    assert!(m.dtn.unwrap() + m.minifas.unwrap() <= t.liveness);
    assert!(m.total() <= t.total);
    // The same person as the 512x512 original.
    let original = v.enrol(&read("astronaut.png")).unwrap();
    let score = v.compare(&a.embedding, &original.embedding);
    assert!(score.distance < 0.6 && score.similarity > 0.9, "{score:?}");
    assert!(original.liveness.is_none() && original.quality.is_some());
    let json = serde_json::to_value(&a).unwrap();
    // Both models' values, dlib's first (the default matches fused), packed: 4 bytes each in
    // base64.
    assert_eq!(
        json["embedding"].as_str().unwrap().len(),
        (128 + facekey_runtime::vision::embed::FACERES_DIM) * 4 * 4 / 3
    );
    let back: facekey_runtime::vision::Embedding =
        serde_json::from_value(json["embedding"].clone()).unwrap();
    assert_eq!(back, a.embedding);
    assert!(json["timings"]["detect"].as_f64().unwrap() > 0.0);
    eprintln!("{}", serde_json::to_string(&json["liveness"]).unwrap());
}

#[test]
fn multi_face_policy_and_no_face() {
    let v = vision();
    let group = read("t1.jpg");
    let a = v.verify(&group).unwrap();
    assert_eq!(a.faces_detected, 6);
    let (faces, _) = v.detect(&v.decode(&group).unwrap()).unwrap();
    let largest = faces.iter().map(|f| f.bbox.area()).fold(0.0, f32::max);
    assert_eq!(a.face.bbox.area(), largest);

    let blank = encode(
        &RgbImage::from_fn(320, 240, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
        }),
        ImageFormat::Png,
    );
    let err = v.verify(&blank).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoFace, "{err}");
    // /v1/liveness-style: no face is an empty list, not an error.
    assert!(v.liveness_all(&blank).unwrap().faces.is_empty());
    let report = v.liveness_all(&group).unwrap();
    assert_eq!(report.faces.len(), 6);
    assert!(report.faces.iter().all(|f| f.liveness.score.is_some()));
}

/// A second pipeline with other settings: fr_liveness only (the DTN is not even loaded),
/// several faces rejected, liveness run sequentially.
#[test]
fn liveness_mode_and_reject_policy_from_config() {
    let mut cfg = VisionConfig::default();
    cfg.liveness.mode = LivenessMode::MiniFas;
    cfg.multi_face = MultiFacePolicy::Reject;
    cfg.runtime.parallel_liveness = false;
    let v = Vision::load(cfg).unwrap();
    let a = v.verify(&read("astronaut_640x480.jpg")).unwrap();
    let t = a.timings;
    // Sequential stages add up.
    assert!(t.total >= t.decode + t.detect + t.align + t.embed + t.liveness + t.quality);
    let live = a.liveness.unwrap();
    assert!(live.dtn.is_none() && a.inference.dtn.is_none());
    assert_eq!(live.score, Some(fused_fr(&live)));
    let err = v.verify(&read("t1.jpg")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MultipleFaces, "{err}");
    assert!(err.to_string().contains("6 faces"), "{err}");

    let mut cfg = VisionConfig::default();
    cfg.liveness.mode = LivenessMode::Both {
        combine: Combine::Min,
    };
    let v = Vision::load(cfg).unwrap();
    let live = v
        .verify(&read("astronaut_640x480.jpg"))
        .unwrap()
        .liveness
        .unwrap();
    let (d, m) = (live.dtn.unwrap().live_score, fused_fr(&live));
    assert_eq!(live.score, Some(d.min(m)));
}

/// fr_liveness's part of a liveness score: fused with human_liveness (the default
/// `FACEKEY_PASSIVE_LIVENESS_MODELS`), which must have run.
fn fused_fr(live: &facekey_runtime::vision::LivenessResult) -> f32 {
    facekey_runtime::vision::second_opinion::fused_live_score(
        f64::from(live.minifas.unwrap().live_score),
        f64::from(live.human_liveness.expect("human_liveness ran")),
    ) as f32
}

/// A face much larger than the 150-px chip (astronaut.png upscaled 3x to 1536x1536: ~250 px
/// face) is detected on a 1280-px copy (`max_input_side`), mapped back, aligned with
/// anti-aliasing and embeds like the original.
#[test]
fn large_faces_embed_like_small_ones() {
    let v = vision();
    let img = v.decode(&read("astronaut.png")).unwrap();
    let base = v.analyze_image(&img, EMBED_ONLY).unwrap();
    let big = image::imageops::resize(&img, 1536, 1536, image::imageops::FilterType::CatmullRom);
    let a = v.analyze_image(&big, EMBED_ONLY).unwrap();
    let (o, b) = (base.face.bbox, a.face.bbox);
    let pairs = |p: &BoundingBox, q: &BoundingBox| {
        [
            (p.x, q.x),
            (p.y, q.y),
            (p.width, q.width),
            (p.height, q.height),
        ]
    };
    // MTCNN's boxes shift a little with the working scale (here 2.5x the original).
    for (p, q) in pairs(&o, &b) {
        assert!(
            (3.0 * p - q).abs() < 0.05 * 3.0 * o.height,
            "{b:?} vs 3 x {o:?}"
        );
    }
    // Detecting on a 1280-px copy made by hand gives the same box once scaled by 1.2.
    let small = image::imageops::resize(&big, 1280, 1280, image::imageops::FilterType::Triangle);
    let (faces, _) = v.detect(&small).unwrap();
    for (p, q) in pairs(&faces[0].bbox, &b) {
        assert!(
            (1.2 * p - q).abs() < 3.0,
            "{b:?} vs 1.2 x {:?}",
            faces[0].bbox
        );
    }
    let d = a.embedding.distance(&base.embedding);
    eprintln!("3x upscaled: box {b:?} (3 x {o:?}), distance {d:.3}");
    assert!(d < 0.2, "{d}");
}

/// Liveness that cannot run on a face is recorded as a failure with no score (never a live
/// score), and the verifier judges it `unknown`, which strict verification rejects.
#[test]
fn liveness_without_a_possible_crop_is_unknown_never_live() {
    use facekey_runtime::decision::Decision;
    use facekey_runtime::fusion::FusionMlp;
    use facekey_runtime::verifier::{LivenessState, Reason, Verifier, VerifierConfig};

    let v = vision();
    let img = v.decode(&read("astronaut.png")).unwrap();
    let (faces, _) = v.detect(&img).unwrap();
    // Keep the real landmarks (alignment works) but shrink the box below one pixel, so no
    // liveness crop fits.
    let mut face = faces[0];
    face.bbox.x = face.bbox.x.floor() + 0.2;
    face.bbox.width = 0.5;
    face.bbox.height = 0.5;
    let a = v.analyze_face(&img, face, AnalyzeOptions::FULL).unwrap();
    let live = a.liveness.clone().unwrap();
    assert!(live.score.is_none(), "{live:?}");
    let failure = live.failure.clone().unwrap();
    assert!(failure.contains("crop"), "{failure}");

    let verifier = Verifier::new(FusionMlp::reference().unwrap(), VerifierConfig::default());
    let verdict = verifier.judge_liveness(a.liveness.as_ref());
    assert_eq!(verdict.state, LivenessState::Unknown);
    assert_eq!(verdict.decision(), Decision::Reject);
    let matched = verifier.judge_match(0.0, 1.0, 1);
    let out = verifier.decide(&matched, &verdict, 1.0);
    assert_eq!(out.decision, Decision::Reject);
    assert!(
        out.reasons.contains(&Reason::LivenessUnknown),
        "{:?}",
        out.reasons
    );
    assert_eq!(out.features[1], 0.0);
}

/// Work whose request went away stops at the next stage boundary instead of running every model.
#[test]
fn cancelled_work_stops_at_a_stage_boundary() {
    use facekey_runtime::vision::{Cancel, VisionError};
    let v = vision();
    let bytes = read("astronaut_640x480.jpg");
    let cancel = Cancel::default();
    assert!(!cancel.is_cancelled());
    // Not cancelled: the whole pipeline runs.
    assert!(v.analyze(&bytes, AnalyzeOptions::FULL, &cancel).is_ok());
    cancel.cancel();
    let err = v
        .analyze(&bytes, AnalyzeOptions::FULL, &cancel)
        .unwrap_err();
    assert!(
        matches!(err, VisionError::Cancelled { before: "decode" }),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert!(matches!(
        v.liveness_all_until(&bytes, &cancel),
        Err(VisionError::Cancelled { .. })
    ));
    // Cancelled from another thread while the first stages run: the pipeline either finished
    // before noticing or stopped at a later boundary; it never runs on after noticing.
    let cancel = Cancel::default();
    let other = cancel.clone();
    let handle = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(5));
        other.cancel();
    });
    let result = v.analyze(&read("t1.jpg"), AnalyzeOptions::FULL, &cancel);
    handle.join().unwrap();
    match result {
        Ok(_) => {}
        Err(VisionError::Cancelled { before }) => {
            assert!(["decode", "detect", "align"].contains(&before), "{before}")
        }
        Err(e) => panic!("{e}"),
    }
}
