//! The generators against the runtime's own models: a rendered blink reads closed to `fr_eye`, a
//! rendered turn moves `fr_landmark`'s nose the right way, an open mouth parts the lips, and a
//! clip is a pure function of its seed.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use facekey_eval::collect::Source;
use facekey_eval::rng::Rng;
use facekey_eval::sequences::observe::subjects;
use facekey_eval::sequences::render::{Camera, Pose, render_live};
use facekey_eval::sequences::{SequenceKind, generate};
use facekey_runtime::challenge::Action;
use facekey_runtime::challenge::signals::{mouth_opening, yaw};
use facekey_runtime::vision::landmarks::{ChallengeModels, observe_frame};
use facekey_runtime::vision::{Vision, VisionConfig};

#[test]
fn rendered_actions_read_as_actions_to_the_runtime_models() {
    let cfg = VisionConfig::default();
    let vision = Vision::load(cfg.clone()).unwrap();
    let models = ChallengeModels::load(&cfg).unwrap();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/faces/astronaut.png"
    );
    let image = vision.decode(&std::fs::read(path).unwrap()).unwrap();
    let src = [Source {
        name: "astronaut.png".into(),
        image,
    }];
    let (subs, _) = subjects(&vision, &models, &src, 640, 480, 24.0, 7).unwrap();
    let s = &subs[0];
    let look = |pose: Pose| {
        let (img, _) = render_live(
            &s.neutral,
            &s.landmarks,
            &pose,
            &Camera::STILL,
            &mut Rng::new(1),
        )
        .unwrap();
        observe_frame(&vision, &models, &img, 0)
            .face
            .expect("face found")
    };
    let neutral = look(Pose::default());
    let eyes = |f: &facekey_runtime::challenge::FaceObservation| f.eyes.unwrap().mean_open();
    assert!(eyes(&neutral) > 0.6, "neutral eyes {}", eyes(&neutral));
    let shut = look(Pose {
        eyes_closed: 1.0,
        ..Pose::default()
    });
    assert!(eyes(&shut) < 0.35, "shut eyes read {}", eyes(&shut));
    let y0 = yaw(&neutral.landmarks).unwrap();
    let left = yaw(&look(Pose {
        yaw: 0.45,
        ..Pose::default()
    })
    .landmarks)
    .unwrap();
    let right = yaw(&look(Pose {
        yaw: -0.45,
        ..Pose::default()
    })
    .landmarks)
    .unwrap();
    assert!(left > y0 + 0.1, "turn_left yaw {left} vs {y0}");
    assert!(right < y0 - 0.1, "turn_right yaw {right} vs {y0}");
    let m0 = mouth_opening(&neutral.landmarks).unwrap();
    let m1 = mouth_opening(
        &look(Pose {
            mouth_open: 0.6,
            ..Pose::default()
        })
        .landmarks,
    )
    .unwrap();
    assert!(m1 > m0 + 0.15, "mouth {m1} vs {m0}");
    // Determinism: the same seed gives the same bytes; another seed other bytes.
    let ch = [Action::Blink, Action::TurnLeft];
    let a = generate(s, SequenceKind::Genuine, &ch, 0, 12.0, 1.0, 5).unwrap();
    let b = generate(s, SequenceKind::Genuine, &ch, 0, 12.0, 1.0, 5).unwrap();
    let c = generate(s, SequenceKind::Genuine, &ch, 0, 12.0, 1.0, 6).unwrap();
    assert_eq!(a.frames.len(), b.frames.len());
    assert!(
        a.frames
            .iter()
            .zip(&b.frames)
            .all(|(x, y)| x.jpeg == y.jpeg && x.t_ms == y.t_ms)
    );
    assert!(
        a.frames
            .iter()
            .zip(&c.frames)
            .any(|(x, y)| x.jpeg != y.jpeg)
    );
}
