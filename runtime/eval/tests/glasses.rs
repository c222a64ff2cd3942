//! Regression test for recognition with glasses (issue 13, item 8): every glasses style drawn
//! on the single-face sample photos must still be detected where the face is and matched by
//! the runtime's pipeline (dlib distance ≤ 0.6), and the second embedding (faceres-deep, when
//! its file is present) must still call the pair the same person more than an impostor.
//! The measured margins are in `docs/evaluation.md` ("Glasses").
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use facekey_eval::collect::{expected_landmarks, find_face};
use facekey_eval::geometry::Homography;
use facekey_eval::glasses::{GlassesParams, Style, draw_glasses};
use facekey_eval::rng::Rng;
use facekey_runtime::vision::onnx::{SessionOptions, ort_runtime};
use facekey_runtime::vision::second_opinion::{FACERES, SecondEmbedder, SecondModel, cosine};
use facekey_runtime::vision::{AnalyzeOptions, Vision, VisionConfig};

fn faces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/faces")
}

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

#[test]
fn every_glasses_style_is_detected_and_matched() {
    let vision = Vision::load(VisionConfig::default()).unwrap_or_else(|e| {
        panic!("cannot load the vision pipeline: {e} (run scripts/setup-onnxruntime.sh)")
    });
    let faceres = models_dir().join(FACERES.file).is_file().then(|| {
        let rt = ort_runtime(None).unwrap();
        let options = SessionOptions {
            intra_threads: 1,
            sessions: 1,
        };
        SecondEmbedder::load(rt, &models_dir(), SecondModel::Faceres, true, options).unwrap()
    });
    let mut templates = Vec::new();
    for name in ["astronaut.png", "Tom_Hanks_54745.png"] {
        let bytes = std::fs::read(faces_dir().join(name)).unwrap();
        let img = vision.decode(&bytes).unwrap();
        let (faces, _) = vision.detect(&img).unwrap();
        assert_eq!(faces.len(), 1, "{name}");
        let face = faces[0];
        let a = vision
            .analyze_face(&img, face, AnalyzeOptions::ENROL)
            .unwrap();
        let second = faceres
            .as_ref()
            .map(|e| e.embed(&img, &face.landmarks).unwrap().0);
        templates.push((name, img, face, a.embedding, second));
    }
    for (name, img, face, template, second) in &templates {
        for style in Style::ALL {
            for k in 0..3 {
                let p = GlassesParams::sample(style, &mut Rng::derive(7, &format!("{name}{k}")));
                let mut probe = img.clone();
                let l = &face.landmarks;
                draw_glasses(
                    &mut probe,
                    (f64::from(l.left_eye.x), f64::from(l.left_eye.y)),
                    (f64::from(l.right_eye.x), f64::from(l.right_eye.y)),
                    &p,
                );
                assert_ne!(&probe, img, "{name} {}: nothing drawn", p.label());
                let (dets, _) = vision.detect(&probe).unwrap();
                let expected = expected_landmarks(face, &Homography::IDENTITY).unwrap();
                let i = find_face(&dets, &expected)
                    .unwrap_or_else(|| panic!("{name} {}: face not detected", p.label()));
                let a = vision
                    .analyze_face(&probe, dets[i], AnalyzeOptions::ENROL)
                    .unwrap();
                let d = a.embedding.distance(template);
                assert!(d <= 0.6, "{name} {}: dlib distance {d:.3}", p.label());
                // Against the other photo's person, the same probe must be farther.
                let other = templates.iter().find(|t| t.0 != *name).unwrap();
                assert!(a.embedding.distance(&other.3) > d, "{name} {}", p.label());
                if let (Some(e), Some(own), Some(theirs)) = (&faceres, second, &other.4) {
                    let v = e.embed(&probe, &dets[i].landmarks).unwrap().0;
                    let (c_own, c_other) = (cosine(&v, own), cosine(&v, theirs));
                    assert!(
                        c_own > c_other,
                        "{name} {}: faceres cosine own {c_own:.3} vs other {c_other:.3}",
                        p.label()
                    );
                }
            }
        }
    }
}
