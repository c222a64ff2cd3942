//! Enrolling a photo with glasses beside the plain one (issue 13, item 8; `facekey-eval
//! enrolment`, docs/evaluation.md "Glasses"): on the single-face sample photos, a subject
//! holding the original and the evaluation's first dark-rim copy must accept every thin-rim and
//! tinted copy of its own photo through the runtime's own matching (fused dlib + faceres-deep,
//! the closest template decides), while the other photos' faces, with or without glasses,
//! stay rejected against those two templates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use facekey_eval::collect::{
    CollectOptions, Source, expected_landmarks, find_face, glasses_variants,
};
use facekey_eval::glasses::Style;
use facekey_runtime::decision::Decision;
use facekey_runtime::fusion::FusionMlp;
use facekey_runtime::verifier::{Verifier, VerifierConfig};
use facekey_runtime::vision::embed::compare_with;
use facekey_runtime::vision::second_opinion::MatchModels;
use facekey_runtime::vision::{AnalyzeOptions, Embedding, MatchConfig, Vision, VisionConfig};

fn faces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/faces")
}

/// One photo's person: its original's embedding and its glasses copies' (style, embedding).
struct Person {
    name: &'static str,
    original: Embedding,
    glasses: Vec<(Style, usize, Embedding)>,
}

fn verdict(v: &Verifier, probe: &Embedding, templates: &[&Embedding]) -> (Decision, f64) {
    let scores: Vec<_> = templates
        .iter()
        .map(|t| compare_with(probe, t, &MatchConfig::default(), MatchModels::DlibFaceres))
        .collect();
    let m = v.judge_templates(&scores).unwrap();
    assert_eq!(
        m.models,
        MatchModels::DlibFaceres,
        "the fused match decides"
    );
    (m.decision, m.similarity)
}

#[test]
fn a_dark_rim_template_accepts_the_other_styles_and_no_other_person() {
    let vision = Vision::load(VisionConfig::default()).unwrap_or_else(|e| {
        panic!("cannot load the vision pipeline: {e} (run scripts/setup-onnxruntime.sh)")
    });
    let names = ["Tom_Hanks_54745.png", "astronaut.png", "messi5.jpg"];
    let sources: Vec<Source> = names
        .iter()
        .map(|n| Source {
            name: n.to_string(),
            image: vision
                .decode(&std::fs::read(faces_dir().join(n)).unwrap())
                .unwrap(),
        })
        .collect();
    let opts = CollectOptions::default();
    let identities = facekey_eval::eyes::enrol(&vision, &sources, opts.min_face_px).unwrap();
    assert_eq!(identities.len(), 3, "one face per photo");
    let mut people = Vec::new();
    for (si, (src, ident)) in sources.iter().zip(&identities).enumerate() {
        let mut glasses = Vec::new();
        let variants = glasses_variants(src, si, &identities, &opts).unwrap();
        for (k, (style, t, label)) in variants.into_iter().enumerate() {
            let (dets, _) = vision.detect(&t.image).unwrap();
            let expected = expected_landmarks(&ident.face, &t.map).unwrap();
            let i = find_face(&dets, &expected)
                .unwrap_or_else(|| panic!("{}: {label} not detected", ident.name));
            let a = vision
                .analyze_face(&t.image, dets[i], AnalyzeOptions::ENROL)
                .unwrap();
            glasses.push((style, k % opts.glasses_per_style, a.embedding));
        }
        assert!(ident.template.faceres().is_some(), "faceres-deep is loaded");
        people.push(Person {
            name: names[si],
            original: ident.template.clone(),
            glasses,
        });
    }
    let verifier = Verifier::new(FusionMlp::reference().unwrap(), VerifierConfig::default());
    let mut rejected_plain = 0;
    let mut probes = 0;
    for p in &people {
        let enrolled = p
            .glasses
            .iter()
            .find(|(s, k, _)| *s == Style::DarkThick && *k == 0)
            .map(|g| &g.2)
            .unwrap();
        let templates = [&p.original, enrolled];
        for (style, k, e) in p.glasses.iter().filter(|g| g.0 != Style::DarkThick) {
            probes += 1;
            let (plain, s_plain) = verdict(&verifier, e, &[&p.original]);
            let (multi, s_multi) = verdict(&verifier, e, &templates);
            rejected_plain += usize::from(plain != Decision::Accept);
            assert_eq!(
                multi,
                Decision::Accept,
                "{} {style} #{k}: fused score {s_multi:.3} with the dark-rim template (plain \
                 alone {s_plain:.3})",
                p.name
            );
        }
        // Every other person's face, plain or with any glasses, against both templates.
        for other in people.iter().filter(|o| o.name != p.name) {
            let faces = std::iter::once(&other.original).chain(other.glasses.iter().map(|g| &g.2));
            for e in faces {
                let (d, s) = verdict(&verifier, e, &templates);
                assert_eq!(
                    d,
                    Decision::Reject,
                    "{} accepted as {} (fused score {s:.3})",
                    other.name,
                    p.name
                );
            }
        }
    }
    assert_eq!(probes, 3 * 2 * opts.glasses_per_style);
    // The gap the second template closes: plain enrolment alone rejects some of these probes.
    assert!(
        rejected_plain > 0,
        "plain enrolment alone accepted every thin-rim and tinted probe: the measured gap \
         (docs/evaluation.md) is gone, re-run `facekey-eval enrolment`"
    );
}
