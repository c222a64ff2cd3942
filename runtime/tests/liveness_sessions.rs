//! Challenge-response liveness sessions (issue 13) with the real models: the landmark and eye
//! models on real photos, the challenge checker on frames synthesised from a real face
//! (landmark-driven warps for head turns, pitch and mouth; eyes painted shut for a blink), and
//! the HTTP contract (`/v1/liveness/sessions`, frames, verdict, verify with a session): key
//! binding, expiry, single use, bounds, bad frames, metrics, and a static photo repeated or
//! jittered failing. Synthetic frames show what the checker sees, not what a camera of a live
//! person gives: real head turns rotate the face in depth, and a real blink takes 100–400 ms.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
#[path = "common/challenge_frames.rs"]
mod frames;

use std::time::Duration;

use base64::Engine as _;
use common::{Running, error_code, face, metric};
use facekey_runtime::challenge::session::every_challenge;
use facekey_runtime::challenge::{
    Action, ChallengePolicy, FailReason, FrameObservation, Outcome, evaluate, signals,
};
use facekey_runtime::config::Config;
use facekey_runtime::vision::landmarks::observe_frame;
use frames::{
    astronaut, brighten, frames_json, geometry, jpeg, models, passed_recording,
    passed_recording_brightened, performance, pose, warp,
};
use image::{Rgb, RgbImage};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

fn observe_all(frames: &[RgbImage]) -> Vec<FrameObservation> {
    let (v, m) = models();
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| observe_frame(v, m, f, 1_000 + 150 * i as u64))
        .collect()
}

#[test]
fn landmarks_and_eye_state_on_real_photos() {
    let (v, m) = models();
    let base = astronaut();
    let obs = observe_frame(v, m, &base, 0);
    let f = obs.face.unwrap();
    let eyes = f.eyes.unwrap();
    assert!(eyes.left_open > 0.9 && eyes.right_open > 0.9, "{eyes:?}");
    assert!(f.embedding.is_some() && f.quality.is_some());
    // The 68 points agree with MTCNN's five within 10 % of the inter-ocular distance.
    let (faces, _) = v.detect(&base).unwrap();
    let five = faces[0].landmarks;
    let iod = (five.right_eye.x - five.left_eye.x).hypot(five.right_eye.y - five.left_eye.y);
    let pairs = [
        (signals::eye_centre(&f.landmarks, 36), five.left_eye),
        (signals::eye_centre(&f.landmarks, 42), five.right_eye),
        (f.landmarks.at(30), five.nose),
        (f.landmarks.at(48), five.mouth_left),
        (f.landmarks.at(54), five.mouth_right),
    ];
    for (a, b) in pairs {
        let d = (a.x - b.x).hypot(a.y - b.y) / iod;
        assert!(d < 0.1, "landmark {a:?} vs MTCNN {b:?}: {d}");
    }
    // Eyes painted shut read closed.
    let g = geometry(&base);
    let shut = observe_frame(v, m, &pose(&base, &g, Some(Action::Blink)), 0);
    let e = shut.face.unwrap().eyes.unwrap();
    assert!(e.mean_open() < 0.35, "{e:?}");
    // A frame without a face is unusable, with the reason.
    let grey = RgbImage::from_pixel(200, 200, Rgb([120, 120, 120]));
    let none = observe_frame(v, m, &grey, 0);
    assert!(none.face.is_none() && none.unusable.is_some());
}

#[test]
fn each_synthetic_action_is_seen_and_only_its_own_turn() {
    let policy = ChallengePolicy::default();
    for a in Action::ALL {
        let obs = observe_all(&performance(&[a]));
        let v = evaluate(&[a], &obs, &policy);
        let sig: Vec<_> = obs
            .iter()
            .map(|o| {
                o.face.as_ref().map(|f| {
                    (
                        signals::yaw(&f.landmarks),
                        signals::pitch(&f.landmarks),
                        signals::mouth_opening(&f.landmarks),
                        f.eyes.map(|e| e.mean_open()),
                    )
                })
            })
            .collect();
        assert!(v.actions[0].passed, "{a}: {sig:?} {v:?}");
        assert_eq!(v.outcome, Outcome::Passed, "{a}: {v:?}");
    }
    // Turning right is not turning left.
    let obs = observe_all(&performance(&[Action::TurnRight]));
    assert!(!evaluate(&[Action::TurnLeft], &obs, &policy).actions[0].passed);
}

/// Every ordered challenge of 2 and 3 actions passes when performed, and fails its order check
/// when performed in another order: observations of each pose are measured once and assembled
/// (the duplicate-frame rule is off here, since poses repeat; it is tested on its own).
#[test]
fn every_challenge_order_passes_when_performed() {
    let base = astronaut();
    let g = geometry(&base);
    let (v, m) = models();
    let neutral = observe_frame(v, m, &base, 0);
    let peaks: Vec<(Action, FrameObservation)> = Action::ALL
        .iter()
        .map(|&a| (a, observe_frame(v, m, &pose(&base, &g, Some(a)), 0)))
        .collect();
    let peak = |a: Action| peaks.iter().find(|(b, _)| *b == a).unwrap().1.clone();
    let policy = ChallengePolicy {
        duplicate_max_difference: -1.0,
        duplicate_max_shape_difference: -1.0,
        ..ChallengePolicy::default()
    };
    let perform = |order: &[Action]| -> Vec<FrameObservation> {
        let mut frames = vec![neutral.clone()];
        for &a in order {
            frames.push(peak(a));
            frames.push(neutral.clone());
        }
        for (i, f) in frames.iter_mut().enumerate() {
            f.timestamp_ms = 1_000 + 150 * i as u64;
        }
        frames
    };
    let challenges = every_challenge();
    assert_eq!(challenges.len(), 80);
    for ch in &challenges {
        let verdict = evaluate(ch, &perform(ch), &policy);
        assert_eq!(verdict.outcome, Outcome::Passed, "{ch:?}: {verdict:?}");
        let mut reversed = ch.clone();
        reversed.reverse();
        let verdict = evaluate(ch, &perform(&reversed), &policy);
        assert_ne!(
            verdict.outcome,
            Outcome::Passed,
            "{ch:?} performed reversed"
        );
    }
    // A recording of every action, three rounds over, holds every challenge in order (it used
    // to pass all 80). On the models' own readings it now passes only the challenges that its
    // first actions perform before one they leave out; the rest fail `unrequested_action`.
    let every: Vec<Action> = (0..3).flat_map(|_| Action::ALL).collect();
    let recording = perform(&every);
    let mut passed = Vec::new();
    for ch in &challenges {
        let verdict = evaluate(ch, &recording, &policy);
        if verdict.outcome == Outcome::Passed {
            passed.push(ch.clone());
        } else {
            assert_eq!(
                verdict.reasons,
                vec![FailReason::UnrequestedAction],
                "{ch:?}: {verdict:?}"
            );
        }
    }
    // Which ones depends on how the models read this crude warp in sequence (after the turns
    // its look-up frame reads as an open mouth): a handful, among those it starts with.
    assert!(
        passed.len() <= 8,
        "{} of 80 passed: {passed:?}",
        passed.len()
    );
}

/// A flat print turned or tilted as a whole (horizontal or vertical squeeze, keystone) moves
/// the landmarks but not the ratios the signals use: no action is seen (with the mouth width as
/// the mouth's denominator, a print turned by 53° read as an open mouth).
#[test]
fn a_photo_moved_as_a_whole_shows_no_action() {
    let base = astronaut();
    let (cx, cy) = (222.0f32, 120.0f32);
    let moved: Vec<RgbImage> = vec![
        base.clone(),
        // Turned about the vertical axis: squeezed horizontally around the face.
        warp(&base, |x, _| ((x - cx) * (1.0 - 1.0 / 0.75), 0.0)),
        warp(&base, |x, _| ((x - cx) * (1.0 - 1.0 / 0.6), 0.0)),
        // Tilted back: squeezed vertically.
        warp(&base, |_, y| (0.0, (y - cy) * (1.0 - 1.0 / 0.75))),
        // Keystone: the top of the print further away than the bottom.
        warp(&base, |x, y| {
            let k = 1.0 - 0.25 * ((cy + 100.0 - y) / 200.0).clamp(0.0, 1.0);
            ((x - cx) * (1.0 - 1.0 / k), 0.0)
        }),
        // Keystone sideways: the left edge further away.
        warp(&base, |x, y| {
            let k = 1.0 - 0.25 * ((cx + 100.0 - x) / 200.0).clamp(0.0, 1.0);
            (0.0, (y - cy) * (1.0 - 1.0 / k))
        }),
        brighten(&base, 6),
    ];
    let obs = observe_all(&moved);
    assert!(
        obs.iter().all(|o| o.face.is_some()),
        "every moved print has a face"
    );
    let policy = ChallengePolicy::default();
    for a in Action::ALL {
        let v = evaluate(&[a], &obs, &policy);
        let yaws: Vec<_> = obs
            .iter()
            .map(|o| {
                o.face.as_ref().map(|f| {
                    (
                        signals::yaw(&f.landmarks),
                        signals::pitch(&f.landmarks),
                        signals::mouth_opening(&f.landmarks),
                    )
                })
            })
            .collect();
        assert!(
            !v.actions[0].passed,
            "{a} seen on a moved print: (yaw, pitch, mouth) {yaws:?}"
        );
    }
}

#[test]
fn a_static_photo_fails_repeated_or_jittered() {
    let policy = ChallengePolicy::default();
    let base = astronaut();
    // The same photo again and again: near-duplicate frames.
    let same = vec![base.clone(); 6];
    let v = evaluate(
        &[Action::Blink, Action::TurnLeft],
        &observe_all(&same),
        &policy,
    );
    assert_eq!(v.outcome, Outcome::Failed, "{v:?}");
    // Shifted, brightened and re-encoded copies: no action is ever seen.
    let jittered: Vec<RgbImage> = (0..8u32)
        .map(|i| {
            let shifted = warp(&base, |_, _| ((i % 3) as f32 * 2.0, (i % 2) as f32 * 3.0));
            let img = brighten(&shifted, (i * 4) as u8);
            image::load_from_memory(&jpeg(&img)).unwrap().to_rgb8()
        })
        .collect();
    for challenge in [
        vec![Action::Blink, Action::TurnLeft],
        vec![Action::TurnRight, Action::LookUp, Action::OpenMouth],
    ] {
        let v = evaluate(&challenge, &observe_all(&jittered), &policy);
        assert_ne!(v.outcome, Outcome::Passed, "{v:?}");
        assert!(v.actions.iter().all(|a| !a.passed), "{v:?}");
    }
}

// ---- HTTP -------------------------------------------------------------------------------------

fn config() -> Config {
    let mut c = Config::for_tests();
    c.max_sessions_per_key = 50;
    c
}

async fn open(s: &Running, client: &reqwest::Client, body: Value) -> (StatusCode, Value) {
    s.json(client.post(s.url("/v1/liveness/sessions")).json(&body))
        .await
}

async fn send(
    s: &Running,
    client: &reqwest::Client,
    id: &str,
    body: &Value,
) -> (StatusCode, Value) {
    s.json(
        client
            .post(s.url(&format!("/v1/liveness/sessions/{id}/frames")))
            .json(body),
    )
    .await
}

/// Closes session `id` with `client` (`DELETE`), which must answer 204.
async fn close(s: &Running, client: &reqwest::Client, id: &str) {
    let r = client
        .delete(s.url(&format!("/v1/liveness/sessions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

fn challenge_of(v: &Value) -> Vec<Action> {
    serde_json::from_value(v["challenge"].clone()).unwrap()
}

#[tokio::test]
async fn contract_key_binding_pass_and_verify_once() {
    let s = Running::start(config()).await;
    let verify = s.client_for("verify");
    // A subject to verify.
    let (st, subj) = s
        .json(
            s.client
                .post(s.url("/v1/subjects"))
                .json(&json!({"name": "Eileen"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{subj}");
    let subject = subj["id"].as_str().unwrap().to_owned();
    // A session bound to a subject it could never verify is refused at once, not after the
    // challenge: unknown, then (not yet enrolled) without a face.
    let (st, v) = open(&s, &verify, json!({"subject": "nobody"})).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::NOT_FOUND, "subject_not_found"),
        "{v}"
    );
    let (st, v) = open(&s, &verify, json!({"subject": subject})).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::CONFLICT, "subject_has_no_faces"),
        "{v}"
    );
    let form = Form::new().part(
        "image",
        Part::bytes(face("astronaut.png")).file_name("a.png"),
    );
    let (st, v) = s
        .json(
            s.client
                .post(s.url(&format!("/v1/subjects/{subject}/faces")))
                .multipart(form),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");

    let (st, opened) = open(&s, &verify, json!({"subject": subject})).await;
    assert_eq!(st, StatusCode::CREATED, "{opened}");
    let id = opened["id"].as_str().unwrap().to_owned();
    let challenge = challenge_of(&opened);
    assert!((2..=3).contains(&challenge.len()));
    assert!(opened["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        opened["max_frames"],
        facekey_settings::defaults::SESSION_MAX_FRAMES
    );

    // Another key: never revealed.
    let other = s.client_for("admin");
    let (st, v) = s
        .json(other.get(s.url(&format!("/v1/liveness/sessions/{id}"))))
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::NOT_FOUND, "session_not_found")
    );
    let (st, v) = send(
        &s,
        &other,
        &id,
        &frames_json(&performance(&challenge)[..1], 1),
    )
    .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::NOT_FOUND, "session_not_found")
    );

    // Not yet passed: verify refuses it.
    let (st, v) = s
        .json(
            verify
                .post(s.url("/v1/verify"))
                .json(&json!({"subject": subject, "session": id})),
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::CONFLICT, "session_not_passed"),
        "{v}"
    );

    // Perform it: first the neutral frame, then the rest.
    let frames = performance(&challenge);
    let (st, fb) = send(&s, &verify, &id, &frames_json(&frames[..1], 10_000)).await;
    assert_eq!(st, StatusCode::OK, "{fb}");
    assert_eq!(fb["state"], "in_progress");
    assert_eq!(fb["frames"][0]["face_found"], true);
    assert_eq!(fb["next_action"], json!(challenge[0]));
    let (st, fb) = send(&s, &verify, &id, &frames_json(&frames[1..], 10_150)).await;
    assert_eq!(st, StatusCode::OK, "{fb}");
    assert_eq!(fb["state"], "passed", "{fb}");
    assert_eq!(fb["frames_received"], frames.len());
    assert!(
        fb["frames"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["action_seen"] == json!(challenge[0]))
    );
    assert!(
        fb["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["passed"] == true)
    );

    let (st, g) = s
        .json(verify.get(s.url(&format!("/v1/liveness/sessions/{id}"))))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        (g["state"].clone(), g["live"].clone()),
        (json!("passed"), json!(true))
    );
    // Without admin too: a client that lost a frames answer learns whether its batch arrived.
    assert_eq!(g["frames_received"], frames.len(), "{g}");
    let coarse = g["confidence"].as_f64().unwrap();
    assert!(coarse >= 0.7);
    assert!(
        g.get("detail").is_none(),
        "no diagnostics without admin: {g}"
    );
    // Without admin the confidence is to one decimal (its exact value carries the passive
    // liveness median, an attack-tuning oracle); admin reads it exactly.
    assert!(
        ((coarse * 10.0).round() - coarse * 10.0).abs() < 1e-4,
        "a verify key read the exact confidence {coarse}"
    );
    let (st, exact) = s
        .json(s.client.get(s.url(&format!("/v1/liveness/sessions/{id}"))))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "another key's session: {exact}");

    // Bound to the subject: another enrolled subject with the same face (whom the probe would
    // match) is refused without consuming the session; then it verifies its own subject once.
    let other_subject = s.new_subject("Eileen's twin").await;
    let (st, v) = s
        .enrol_sample(&s.client, &other_subject, "astronaut.png")
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = s
        .json(
            verify
                .post(s.url("/v1/verify"))
                .json(&json!({"subject": other_subject, "session": id})),
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::CONFLICT, "session_subject_mismatch"),
        "{v}"
    );
    let (st, v) = s
        .json(
            verify
                .post(s.url("/v1/verify"))
                .json(&json!({"subject": subject, "session": id})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["decision"], "accept", "{v}");
    let (st, v) = s
        .json(
            verify
                .post(s.url("/v1/verify"))
                .json(&json!({"subject": subject, "session": id})),
        )
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::CONFLICT, "session_used"));

    // Frames after the end are not processed; the state is reported.
    let (st, fb) = send(&s, &verify, &id, &frames_json(&frames[..1], 99_000)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(fb["state"], "passed");
    assert_eq!(fb["frames"], json!([]));

    let metrics = s.metrics().await;
    assert!(
        metrics.contains("facekey_liveness_sessions_started_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("facekey_liveness_sessions_passed_total 1"));
    assert!(metrics.contains("facekey_liveness_sessions_faced_total 1"));

    // Beside an image: an admin session (admin answers show the scores), unbound; the image
    // of the same face is the probe and the challenge confidence the liveness feature.
    let (st, opened) = open(&s, &s.client, json!({})).await;
    assert_eq!(st, StatusCode::CREATED);
    let id2 = opened["id"].as_str().unwrap().to_owned();
    let (st, fb) = send(
        &s,
        &s.client,
        &id2,
        &frames_json(&performance(&challenge_of(&opened)), 20_000),
    )
    .await;
    assert_eq!(
        (st, fb["state"].clone()),
        (StatusCode::OK, json!("passed")),
        "{fb}"
    );
    let (_, g) = s
        .json(s.client.get(s.url(&format!("/v1/liveness/sessions/{id2}"))))
        .await;
    assert!(g["detail"]["usable_frames"].as_u64().unwrap() >= 5, "{g}");
    // Admin reads the exact confidence of a passed session: 0.7 + 0.3 × passive median.
    let passive = g["detail"]["passive_median"].as_f64().unwrap();
    let exact = g["confidence"].as_f64().unwrap();
    assert!((exact - (0.7 + 0.3 * passive)).abs() < 1e-4, "{g}");
    let b64 = base64::engine::general_purpose::STANDARD;
    let (st, v) = s
        .json(s.client.post(s.url("/v1/verify")).json(&json!({
            "subject": subject,
            "session": id2,
            "image": b64.encode(face("astronaut_640x480.jpg")),
            "include_layers": "true",
        })))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["probe_from_image"], true, "{v}");
    assert_eq!(v["liveness"]["state"], "live", "{v}");
    assert!(v["features"][1].as_f64().unwrap() >= 0.7, "{v}");
    assert_eq!(v["decision"], "accept", "{v}");
    // The forward pass, as a verification with an image gives it: its output is the probability.
    let z3 = v["layers"]["z3"].as_f64().unwrap_or(f64::NAN);
    let p = v["probability"].as_f64().unwrap();
    assert!((1.0 / (1.0 + (-z3).exp()) - p).abs() < 1e-6, "{v}");
    s.stop().await;
}

/// Verifies `subject` with `session` as `client`: the answer.
async fn verify_with(
    s: &Running,
    client: &reqwest::Client,
    subject: &str,
    session: &str,
) -> (StatusCode, Value) {
    s.json(
        client
            .post(s.url("/v1/verify"))
            .json(&json!({"subject": subject, "session": session})),
    )
    .await
}

/// A recording of a session a verification accepted, sent again into later sessions (their
/// challenges differ: the frames they share, the neutral one at least, are the replay), passes
/// each challenge but is refused for its subject by verify and identify alike: a reject with
/// `replayed_session`, the liveness a spoof, a spoof event. New recordings of the same face are
/// accepted, and an identification's accepted session is remembered as a verification's is.
#[tokio::test]
async fn a_replayed_recording_is_refused_in_later_sessions() {
    let s = Running::start(config()).await;
    let admin = &s.client;
    let subject = s.new_subject("Eileen Collins").await;
    let (st, v) = s.enrol_sample(admin, &subject, "astronaut.png").await;
    assert_eq!(st, StatusCode::CREATED, "{v}");

    let first = passed_recording(&s, admin, Some(&subject), 200).await;
    let (st, v) = verify_with(&s, admin, &subject, &first).await;
    assert_eq!(
        (st, &v["decision"]),
        (StatusCode::OK, &json!("accept")),
        "{v}"
    );
    assert_eq!(v["liveness"]["state"], "live", "{v}");

    // Sent again brightened by 6 grey levels: the replay record compares the frames' shapes.
    let again = passed_recording_brightened(&s, admin, None, 200, 6).await;
    let (st, v) = verify_with(&s, admin, &subject, &again).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["decision"], "reject", "{v}");
    assert!(
        v["reasons"]
            .as_array()
            .unwrap()
            .contains(&json!("replayed_session")),
        "{v}"
    );
    assert_eq!(
        (&v["liveness"]["state"], &v["liveness"]["reason"]),
        (&json!("spoof"), &json!("replayed_session")),
        "{v}"
    );
    assert_eq!(v["features"][1], 0.0, "the fusion's liveness feature: {v}");
    let metrics = s.metrics().await;
    assert_eq!(
        metric(&metrics, "facekey_liveness_sessions_replayed_total"),
        1.0
    );
    assert_eq!(metric(&metrics, "facekey_spoof_detected_total"), 1.0);
    // The replay is also a used session: it cannot be tried again.
    let (st, v) = verify_with(&s, admin, &subject, &again).await;
    assert_eq!((st, error_code(&v)), (StatusCode::CONFLICT, "session_used"));

    // Identify alike: nobody is named, not even a second subject enrolled with the same face,
    // whose own record holds nothing: the session is a replay whoever it would identify.
    let twin = s.new_subject("Eileen's twin").await;
    let (st, v) = s.enrol_sample(admin, &twin, "astronaut.png").await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let third = passed_recording(&s, admin, None, 200).await;
    let (st, v) = s
        .json(
            admin
                .post(s.url("/v1/identify"))
                .json(&json!({"session": third})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["decision"], &v["candidates"], &v["reasons"]),
        (
            &json!("reject"),
            &json!([]),
            &json!(["spoof", "replayed_session"])
        ),
        "{v}"
    );
    assert_eq!(v["liveness"]["reason"], "replayed_session", "{v}");
    let metrics = s.metrics().await;
    assert_eq!(
        metric(&metrics, "facekey_liveness_sessions_replayed_total"),
        2.0,
        "one event for the session, not one per candidate"
    );
    let (st, _) = s
        .json(admin.delete(s.url(&format!("/v1/subjects/{twin}"))))
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(metric(&metrics, "facekey_spoof_detected_total"), 2.0);

    // New recordings of the same face are no replay: verified, then identified; the
    // identification's session is remembered too.
    let fresh = passed_recording(&s, admin, None, 201).await;
    let (st, v) = verify_with(&s, admin, &subject, &fresh).await;
    assert_eq!(
        (st, &v["decision"]),
        (StatusCode::OK, &json!("accept")),
        "{v}"
    );
    let identified = passed_recording(&s, admin, None, 202).await;
    let (st, v) = s
        .json(
            admin
                .post(s.url("/v1/identify"))
                .json(&json!({"session": identified})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["candidates"][0]["subject"]["id"], json!(subject), "{v}");
    let replay = passed_recording(&s, admin, None, 202).await;
    let (st, v) = verify_with(&s, admin, &subject, &replay).await;
    assert_eq!(
        (st, &v["decision"]),
        (StatusCode::OK, &json!("reject")),
        "{v}"
    );
    assert_eq!(
        metric(
            &s.metrics().await,
            "facekey_liveness_sessions_replayed_total"
        ),
        3.0
    );

    // A verify key's answer (no scores) names the reasons too: the liveness a spoof, and the
    // replay. No `low_probability`: at liveness 0 with a close match and good quality the
    // reference fusion's probability still reaches the threshold. The strict default rejects
    // on the spoof; under `FACEKEY_DECISION_POLICY=fusion` the replay check's refusal does.
    let app = s.client_for("verify");
    let replay = passed_recording(&s, &app, None, 201).await;
    let (st, v) = verify_with(&s, &app, &subject, &replay).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["decision"], &v["reasons"]),
        (&json!("reject"), &json!(["spoof", "replayed_session"])),
        "{v}"
    );
    s.stop().await;
}

/// Two sessions of one never-verified recording, verified at the same moment: only one is
/// accepted, the other refused as the replay it is, with its spoof event, whether it found the
/// first in its check or (when both checks ran before either write) when its own accept was to
/// be remembered. The race is not forced here (nothing outside holds the memory record's lock;
/// `liveness_shared.rs` forces it with PostgreSQL's): rounds with fresh recordings.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_simultaneous_replays_of_one_recording_are_accepted_once() {
    let s = Running::start(config()).await;
    let admin = &s.client;
    let subject = s.new_subject("Eileen Collins").await;
    let (st, v) = s.enrol_sample(admin, &subject, "astronaut.png").await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    for (round, recording) in [210u8, 211, 212].into_iter().enumerate() {
        let one = passed_recording(&s, admin, None, recording).await;
        let other = passed_recording(&s, admin, None, recording).await;
        let ((st1, v1), (st2, v2)) = tokio::join!(
            verify_with(&s, admin, &subject, &one),
            verify_with(&s, admin, &subject, &other)
        );
        assert_eq!((st1, st2), (StatusCode::OK, StatusCode::OK), "{v1} {v2}");
        let mut decisions = [v1["decision"].clone(), v2["decision"].clone()];
        decisions.sort_by_key(ToString::to_string);
        assert_eq!(decisions, [json!("accept"), json!("reject")], "{v1} {v2}");
        let refused = if v1["decision"] == "reject" { &v1 } else { &v2 };
        assert_eq!(
            (&refused["liveness"]["reason"], &refused["features"][1]),
            (&json!("replayed_session"), &json!(0.0)),
            "{refused}"
        );
        assert!(
            refused["reasons"]
                .as_array()
                .unwrap()
                .contains(&json!("replayed_session")),
            "{refused}"
        );
        let metrics = s.metrics().await;
        let replays = (round + 1) as f64;
        assert_eq!(
            metric(&metrics, "facekey_liveness_sessions_replayed_total"),
            replays
        );
        assert_eq!(metric(&metrics, "facekey_spoof_detected_total"), replays);
    }
    s.stop().await;
}

/// The embedded mode's replay record outlives a restart on the same data directory
/// (`replay-record.jsonl`): a recording accepted before the restart is a replay after it, a new
/// one is accepted, and a deleted subject's record is gone after the next restart too.
#[tokio::test]
async fn a_recording_accepted_before_a_restart_is_a_replay_after_it() {
    let c = config();
    let s = Running::start(c.clone()).await;
    let admin = &s.client;
    let subject = s.new_subject("Eileen Collins").await;
    let (st, v) = s.enrol_sample(admin, &subject, "astronaut.png").await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let first = passed_recording(&s, admin, None, 240).await;
    let (st, v) = verify_with(&s, admin, &subject, &first).await;
    assert_eq!(
        (st, &v["decision"]),
        (StatusCode::OK, &json!("accept")),
        "{v}"
    );
    s.stop_keeping_data().await;

    let s = Running::start(c.clone()).await;
    let admin = &s.client;
    let again = passed_recording(&s, admin, None, 240).await;
    let (st, v) = verify_with(&s, admin, &subject, &again).await;
    assert_eq!(
        (st, &v["decision"], &v["liveness"]["reason"]),
        (StatusCode::OK, &json!("reject"), &json!("replayed_session")),
        "remembered across the restart: {v}"
    );
    let fresh = passed_recording(&s, admin, None, 241).await;
    let (st, v) = verify_with(&s, admin, &subject, &fresh).await;
    assert_eq!(
        (st, &v["decision"]),
        (StatusCode::OK, &json!("accept")),
        "{v}"
    );
    let (st, _) = s
        .json(admin.delete(s.url(&format!("/v1/subjects/{subject}"))))
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    s.stop_keeping_data().await;
    let journal = c.data_dir.join("replay-record.jsonl");
    let s = Running::start(c).await;
    let kept = std::fs::read_to_string(&journal).unwrap();
    assert!(
        !kept.contains(&subject),
        "the deleted subject's record is gone: {kept}"
    );
    s.stop().await;
}

/// An identification accepting two enrolments of one person remembers its session for both:
/// the recording sent again to verify either of them is a replay.
#[tokio::test]
async fn an_identification_remembers_its_session_for_every_subject_it_accepted() {
    let s = Running::start(config()).await;
    let admin = &s.client;
    let mut subjects = Vec::new();
    for name in ["Eileen Collins", "Eileen, enrolled again"] {
        let id = s.new_subject(name).await;
        let (st, v) = s.enrol_sample(admin, &id, "astronaut.png").await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        subjects.push(id);
    }
    let first = passed_recording(&s, admin, None, 230).await;
    let (st, v) = s
        .json(
            admin
                .post(s.url("/v1/identify"))
                .json(&json!({"session": first})),
        )
        .await;
    assert_eq!(
        (st, &v["decision"]),
        (StatusCode::OK, &json!("accept")),
        "{v}"
    );
    let mut named: Vec<&str> = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["subject"]["id"].as_str().unwrap())
        .collect();
    named.sort_unstable();
    let mut both: Vec<&str> = subjects.iter().map(String::as_str).collect();
    both.sort_unstable();
    assert_eq!(named, both, "{v}");
    for subject in &subjects {
        let again = passed_recording(&s, admin, None, 230).await;
        let (st, v) = verify_with(&s, admin, subject, &again).await;
        assert_eq!(
            (st, &v["decision"], &v["liveness"]["reason"]),
            (StatusCode::OK, &json!("reject"), &json!("replayed_session")),
            "{v}"
        );
    }
    s.stop().await;
}

/// Under `FACEKEY_DECISION_POLICY=fusion` the fused probability alone decides, and with the
/// reference weights (insecure: `--allow-insecure`) it still reaches the threshold at liveness 0
/// for this close, sharp face: there the replay check's own refusal is what rejects the replay.
/// With `FACEKEY_SESSION_REPLAY_WINDOW_SECS=0` nothing is remembered: the same recording
/// verifies again.
#[tokio::test]
async fn the_fusion_policy_refuses_replays_and_a_zero_window_turns_the_check_off() {
    for window in [86_400, 0] {
        let mut c = config();
        c.decision_policy = facekey_runtime::verifier::DecisionPolicy::Fusion;
        c.allow_insecure = true;
        c.session_replay_window_secs = window;
        let s = Running::start(c).await;
        let admin = &s.client;
        let subject = s.new_subject("Eileen Collins").await;
        let (st, v) = s.enrol_sample(admin, &subject, "astronaut.png").await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        let mut decisions = Vec::new();
        for _ in 0..2 {
            let id = passed_recording(&s, admin, None, 200).await;
            let (st, v) = verify_with(&s, admin, &subject, &id).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            decisions.push((v["decision"].clone(), v["reasons"].clone()));
        }
        let replays = metric(
            &s.metrics().await,
            "facekey_liveness_sessions_replayed_total",
        );
        assert_eq!(
            decisions[0],
            (json!("accept"), json!([])),
            "window {window}"
        );
        if window == 0 {
            assert_eq!(decisions[1], (json!("accept"), json!([])), "window 0");
            assert_eq!(replays, 0.0);
        } else {
            // No `low_probability`: the fusion alone would have accepted.
            assert_eq!(
                decisions[1],
                (json!("reject"), json!(["spoof", "replayed_session"])),
                "under the fusion policy"
            );
            assert_eq!(replays, 1.0);
        }
        s.stop().await;
    }
}

/// An action the drawn challenge leaves out, performed before the challenge is complete, fails
/// the session at once (`unrequested_action`), counted by reason and raised as a spoof event:
/// a recording of the person doing every action cannot pass whatever challenge is drawn.
#[tokio::test]
async fn an_action_the_challenge_leaves_out_fails_the_session() {
    let s = Running::start(config()).await;
    let verify = s.client_for("verify");
    // A challenge leaving out a turn (the synthetic action the models read most surely, and
    // never as another), redrawn until one does: the turn is performed before anything asked.
    let turns = [Action::TurnLeft, Action::TurnRight];
    let (id, challenge, left_out) = loop {
        let (st, opened) = open(&s, &verify, json!({})).await;
        assert_eq!(st, StatusCode::CREATED, "{opened}");
        let id = opened["id"].as_str().unwrap().to_owned();
        let challenge = challenge_of(&opened);
        if let Some(turn) = turns.into_iter().find(|t| !challenge.contains(t)) {
            break (id, challenge, turn);
        }
        close(&s, &verify, &id).await;
    };
    let (st, fb) = send(&s, &verify, &id, &frames_json(&performance(&[left_out]), 5)).await;
    assert_eq!(st, StatusCode::OK, "{fb}");
    assert_eq!(fb["state"], "failed", "{challenge:?}, {left_out}: {fb}");
    let g = failed_as_the_first_spoof(&s, &id, "unrequested_action").await;
    assert_eq!(g["reasons"], json!(["unrequested_action"]), "{g}");
    s.stop().await;
}

/// Session `id` reads failed, not live, for `reason`, the first failure counted for it and the
/// first spoof event (a failed challenge is one); returns the session as read.
async fn failed_as_the_first_spoof(s: &Running, id: &str, reason: &str) -> Value {
    let (_, g) = s
        .json(
            s.client_for("verify")
                .get(s.url(&format!("/v1/liveness/sessions/{id}"))),
        )
        .await;
    assert_eq!(g["live"], false);
    assert!(
        g["reasons"].as_array().unwrap().contains(&json!(reason)),
        "{g}"
    );
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(&format!(
            "facekey_liveness_sessions_failed_total{{reason=\"{reason}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("facekey_spoof_detected_total 1"),
        "a failed challenge is a spoof event"
    );
    g
}

#[tokio::test]
async fn static_photo_session_fails_and_alerts() {
    let s = Running::start(config()).await;
    let verify = s.client_for("verify");
    let (_, opened) = open(&s, &verify, json!({})).await;
    let id = opened["id"].as_str().unwrap().to_owned();
    let photo = astronaut();
    // The same photo three times: near-duplicate frames fail the session at once.
    let (st, fb) = send(
        &s,
        &verify,
        &id,
        &frames_json(&[photo.clone(), photo.clone(), photo], 5),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{fb}");
    assert_eq!(fb["state"], "failed", "{fb}");
    failed_as_the_first_spoof(&s, &id, "duplicate_frames").await;
    s.stop().await;
}

#[tokio::test]
async fn bounds_bad_frames_expiry_and_required_sessions() {
    let mut c = config();
    c.max_sessions_per_key = 2;
    c.session_ttl_secs = 10;
    c.session_max_frames = 10;
    c.require_session = facekey_runtime::config::Switch::On;
    // Encode every frame before the sessions open: debug-build JPEG encoding is slow and the
    // sessions live 10 s.
    let photo = astronaut();
    let b64 = base64::engine::general_purpose::STANDARD;
    let photo_jpeg = jpeg(&photo);
    let nine = json!({"frames": (0..9).map(|i| json!({"image": b64.encode(&photo_jpeg), "timestamp_ms": i})).collect::<Vec<_>>()});
    let shifted_jpeg = jpeg(&brighten(&warp(&photo, |_, _| (3.0, 0.0)), 9));
    let one = json!({"frames": [{"image": b64.encode(&photo_jpeg), "timestamp_ms": 5_000}]});
    let s = Running::start(c).await;
    let verify = s.client_for("verify");
    let (st, a) = open(&s, &verify, json!({})).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, abandoned) = open(&s, &verify, json!({})).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, v) = open(&s, &verify, json!({})).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_sessions")
    );
    // A face seen, then left to expire (below): abandoned, not a spoof event.
    let (st, fb) = send(&s, &verify, abandoned["id"].as_str().unwrap(), &one).await;
    assert_eq!(
        (st, fb["frames"][0]["face_found"].clone()),
        (StatusCode::OK, json!(true)),
        "{fb}"
    );
    // Another key still gets one.
    let (st, _) = open(&s, &s.client, json!({})).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, v) = open(&s, &verify, json!({"nope": 1})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    let id = a["id"].as_str().unwrap().to_owned();
    // Nine frames in one call; zero frames; not an image; not base64; decreasing timestamps.
    let (st, v) = send(&s, &verify, &id, &nine).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_many_frames")
    );
    let (st, _) = send(&s, &verify, &id, &json!({"frames": []})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let (st, v) = send(
        &s,
        &verify,
        &id,
        &json!({"frames": [{"image": b64.encode(b"not an image"), "timestamp_ms": 1}]}),
    )
    .await;
    assert_eq!(
        (st, error_code(&v)),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_image_format"
        )
    );
    let (st, _) = send(
        &s,
        &verify,
        &id,
        &json!({"frames": [{"image": "!!", "timestamp_ms": 1}]}),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let (st, _) = send(
        &s,
        &verify,
        &id,
        &json!({"frames": [{"image": "aGk=", "timestamp_ms": -1}]}),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    // A bad frame consumed nothing: the session still takes frames (multipart this time, the
    // two arrays one after the other as OpenAPI clients send them; parts pair by position).
    let form = Form::new()
        .text("timestamp_ms", "1000")
        .text("timestamp_ms", "900")
        .part(
            "frame",
            Part::bytes(photo_jpeg.clone())
                .mime_str("image/jpeg")
                .unwrap(),
        )
        .part(
            "frame",
            Part::bytes(shifted_jpeg).mime_str("image/jpeg").unwrap(),
        );
    let (st, fb) = s
        .json(
            verify
                .post(s.url(&format!("/v1/liveness/sessions/{id}/frames")))
                .multipart(form),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{fb}");
    assert_eq!(fb["frames_received"], 2);
    assert_eq!(fb["state"], "failed", "timestamps went backwards: {fb}");

    // Verify without a session is refused when sessions are required.
    let (st, v) = s
        .json(
            verify
                .post(s.url("/v1/verify"))
                .json(&json!({"subject": "x", "image": b64.encode(&photo_jpeg)})),
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "session_required")
    );

    // Expiry: 410 on frames and verify, `expired` on read; the key's places free up.
    tokio::time::sleep(std::time::Duration::from_millis(10_200)).await;
    let (_, b) = open(&s, &verify, json!({})).await;
    assert!(
        b["id"].is_string(),
        "expired sessions free their places: {b}"
    );
    let (st, g) = s
        .json(verify.get(s.url(&format!("/v1/liveness/sessions/{id}"))))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(g["state"], "expired", "{g}");
    let (st, v) = send(&s, &verify, &id, &one).await;
    assert_eq!((st, error_code(&v)), (StatusCode::GONE, "session_expired"));
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(
            "facekey_liveness_sessions_failed_total{reason=\"timestamps_not_increasing\"} 1"
        ),
        "{metrics}"
    );
    // Both untouched sessions expired; only the one that saw a face was abandoned.
    assert!(
        metrics.contains("facekey_liveness_sessions_failed_total{reason=\"expired\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("facekey_liveness_sessions_abandoned_total 1"),
        "{metrics}"
    );
    // The untouched one expired before any face: a challenge drawn and not performed.
    assert!(
        metrics.contains("facekey_liveness_sessions_unperformed_total 1"),
        "{metrics}"
    );
    // What abandoned sessions are judged against: the sessions that saw a face (the abandoned
    // one among them), not the untouched one that expired beside it.
    let faced = metric(&metrics, "facekey_liveness_sessions_faced_total");
    let started = metric(&metrics, "facekey_liveness_sessions_started_total");
    assert!(
        faced >= 2.0 && faced < started,
        "faced {faced} of {started} opened"
    );
    s.stop().await;
}

/// A frames call whose client goes away while its frames are analysed gives the session back:
/// the next call is served instead of being refused `session_busy` until the session expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frames_call_abandoned_mid_analysis_leaves_the_session_usable() {
    let mut c = config();
    c.session_ttl_secs = 120;
    let b64 = base64::engine::general_purpose::STANDARD;
    let photo = b64.encode(jpeg(&astronaut()));
    let eight = json!({"frames": (0..8).map(|i| json!({"image": photo, "timestamp_ms": i * 100})).collect::<Vec<_>>()});
    let one = json!({"frames": [{"image": photo, "timestamp_ms": 2_000}]});
    let s = Running::start(c).await;
    let verify = s.client_for("verify");
    let (st, v) = open(&s, &verify, json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let url = s.url(&format!("/v1/liveness/sessions/{id}/frames"));
    // Eight frames take the models far longer than 150 ms: the client gives up mid-analysis.
    let gave_up = verify
        .post(&url)
        .json(&eight)
        .timeout(Duration::from_millis(150))
        .send()
        .await;
    assert!(gave_up.is_err_and(|e| e.is_timeout()));
    // The server notices the closed connection and drops the call; the session is free again
    // (retried briefly: noticing is asynchronous; before, it stayed busy for its 120 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let v = loop {
        let (st, v) = send(&s, &verify, &id, &one).await;
        if st == StatusCode::CONFLICT && std::time::Instant::now() < deadline {
            assert_eq!(error_code(&v), "session_busy", "{v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(st, StatusCode::OK, "{v}");
        break v;
    };
    // Only the frame of the call that was answered counts.
    assert_eq!(v["frames_received"], 1, "{v}");
    s.stop().await;
}

/// A verification or identification with a passed session that admission control refuses (503
/// `overloaded`: the one inference place is busy) leaves the session unused: the retry is
/// served, rather than answered `session_used` after the person performed the challenge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_use_of_a_session_leaves_it_for_the_retry() {
    let mut c = config();
    c.max_inflight = 1;
    c.max_queue = Some(0);
    let b64 = base64::engine::general_purpose::STANDARD;
    let photo = b64.encode(jpeg(&astronaut()));
    let s = Running::start(c).await;
    let verify = s.client_for("verify");
    let subject = s.new_subject("Eileen").await;
    let (st, v) = s.enrol_sample(&s.client, &subject, "astronaut.png").await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let passed = |body: Value| {
        let (s, verify) = (&s, &verify);
        async move {
            let (st, o) = open(s, verify, body).await;
            assert_eq!(st, StatusCode::CREATED, "{o}");
            let id = o["id"].as_str().unwrap().to_owned();
            let frames = frames_json(&performance(&challenge_of(&o)), 5_000);
            let (st, fb) = send(s, verify, &id, &frames).await;
            assert_eq!((st, fb["state"].clone()), (StatusCode::OK, json!("passed")));
            id
        }
    };
    let bound = passed(json!({"subject": subject})).await;
    let unbound = passed(json!({})).await;
    let uses = [
        (
            "/v1/verify",
            json!({"subject": subject, "session": bound, "image": photo}),
        ),
        ("/v1/identify", json!({"session": unbound})),
    ];
    for (path, body) in &uses {
        // The admin key holds the one place with eight frames of a session of its own.
        let (st, o) = open(&s, &s.client, json!({})).await;
        assert_eq!(st, StatusCode::CREATED, "{o}");
        let eight = json!({"frames": (0..8).map(|i| json!({"image": photo, "timestamp_ms": 100 * i})).collect::<Vec<_>>()});
        let holder = s
            .client
            .post(s.url(&format!(
                "/v1/liveness/sessions/{}/frames",
                o["id"].as_str().unwrap()
            )))
            .json(&eight)
            .send();
        let holder = tokio::spawn(holder);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while metric(&s.metrics().await, "facekey_inferences_in_flight") < 1.0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the place was never taken"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (st, v) = s.json(verify.post(s.url(path)).json(body)).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            "{path}: {v}"
        );
        assert_eq!(holder.await.unwrap().unwrap().status(), StatusCode::OK);
        let (st, v) = s.json(verify.post(s.url(path)).json(body)).await;
        assert_eq!(st, StatusCode::OK, "{path}: {v}");
        assert_eq!(v["decision"], "accept", "{path}: {v}");
        // Used now, once.
        let (st, v) = s.json(verify.post(s.url(path)).json(body)).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::CONFLICT, "session_used"),
            "{path}: {v}"
        );
    }
    s.stop().await;
}

/// `DELETE /v1/liveness/sessions/{id}`: only the key that opened a session closes it; the
/// session is gone and its place free at once, and one closed after a face was seen counts as
/// abandoned (closing cannot hide a client probing the feedback), with an audit event.
#[tokio::test]
async fn a_client_closes_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.max_sessions_per_key = 1;
    c.audit_log = dir.path().join("audit.log").display().to_string();
    let b64 = base64::engine::general_purpose::STANDARD;
    let one = json!({"frames": [{"image": b64.encode(jpeg(&astronaut())), "timestamp_ms": 1_000}]});
    let s = Running::start(c).await;
    let verify = s.client_for("verify");
    let (st, o) = open(&s, &verify, json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{o}");
    let id = o["id"].as_str().unwrap().to_owned();
    let (st, fb) = send(&s, &verify, &id, &one).await;
    assert_eq!(
        (st, fb["frames"][0]["face_found"].clone()),
        (StatusCode::OK, json!(true))
    );
    let (st, v) = open(&s, &verify, json!({})).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_sessions")
    );
    let path = s.url(&format!("/v1/liveness/sessions/{id}"));
    let (st, v) = s.json(s.client.delete(&path)).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::NOT_FOUND, "session_not_found"),
        "{v}"
    );
    let r = verify.delete(&path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (st, v) = s.json(verify.get(&path)).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::NOT_FOUND, "session_not_found"),
        "{v}"
    );
    let (st, v) = s.json(verify.delete(&path)).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::NOT_FOUND, "session_not_found"),
        "{v}"
    );
    // Its place is free: the key's one session may open again.
    let (st, v) = open(&s, &verify, json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "facekey_liveness_sessions_closed_total"),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "facekey_liveness_sessions_unperformed_total"),
        0.0,
        "a face was seen: abandoned, not unperformed"
    );
    // Closed before any face: a challenge drawn and not performed (redrawing it so is what
    // FaceKeyLivenessChallengesRedrawn watches for).
    let unused = v["id"].as_str().unwrap().to_owned();
    close(&s, &verify, &unused).await;
    let (st, v) = open(&s, &verify, json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "facekey_liveness_sessions_unperformed_total"),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "facekey_liveness_sessions_closed_total"),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "facekey_liveness_sessions_abandoned_total"),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "facekey_liveness_sessions_faced_total"),
        1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "facekey_liveness_sessions_active"), 1.0, "{m}");
    s.stop().await;
    let trail = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    let closed: Vec<Value> = trail
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["action"] == "session.close" && e["status"] == 204)
        .collect();
    assert_eq!(closed.len(), 2, "{trail}");
    assert_eq!(
        (closed[0]["session"].as_str(), closed[0]["key_id"].as_str()),
        (Some(id.as_str()), Some("verify"))
    );
}

/// `POST /v1/liveness/sessions` refuses a body it cannot take with the API's JSON error, as
/// every route does: a chunked body over `FACEKEY_MAX_BODY_BYTES` is 413 `payload_too_large`,
/// a malformed chunked one 400 `unreadable_body` (axum's own refusals are plain text).
#[tokio::test]
async fn opening_refuses_unreadable_bodies_with_json_errors() {
    let s = Running::start(config()).await;
    // 9 MiB without a length (chunked), over the 8 MiB limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..9 * 16).map(|_| Ok(vec![b' '; 64 * 1024])).collect();
    let r = s
        .client
        .post(s.url("/v1/liveness/sessions"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        "{v}"
    );
    // A chunk size that is not hexadecimal.
    let key = s.keys["admin"].clone();
    let mut stream = s
        .open_request(
            "/v1/liveness/sessions",
            Some(&key),
            "application/json",
            "transfer-encoding: chunked\r\n",
            b"zz\r\n{}\r\n0\r\n\r\n",
        )
        .await;
    let mut answer = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer),
    )
    .await
    .expect("no answer")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {answer:?}"));
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(error_code(&v), "unreadable_body", "{v}");
    s.assert_scores(&s.client).await;
    s.stop().await;
}
