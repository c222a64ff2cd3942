//! Identification (`POST /v1/identify`) with a passed challenge-liveness session, against a real
//! server with the real models: the session's best frame (or the same face's image beside it) is
//! the probe and the challenge its liveness; a session serves one face decision, identify or
//! verify; refusals are verify's (not passed, another key's, expired, used), and a session bound
//! to a subject only verifies it; `FACEKEY_REQUIRE_SESSION=on` identifies with a session alone;
//! the lockout still withholds a locked subject; the audit trail names the session.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
#[path = "common/challenge_frames.rs"]
mod frames;

use std::time::Duration;

use common::{Running, audit_events, audited, error_code, face, send_json};
use facekey_runtime::config::{Config, Switch};
use frames::{frames_json, open_session, passed_session};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

/// The enrolled face; the session frames are synthesised from it.
const LIVE: &str = "astronaut.png";
/// Another person's face (a photo the liveness models call a spoof).
const OTHER: &str = "Tom_Hanks_54745.png";

fn config() -> Config {
    let mut c = Config::for_tests();
    c.max_sessions_per_key = 50;
    c
}

/// A subject with the live face enrolled: its id.
async fn enrolled(s: &Running) -> String {
    let id = s.new_subject("Eileen Collins").await;
    let (status, v) = s.enrol_sample(&s.client, &id, LIVE).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    id
}

async fn identify(s: &Running, client: &reqwest::Client, body: Value) -> (StatusCode, Value) {
    send_json(client.post(s.url("/v1/identify")).json(&body)).await
}

async fn verify(s: &Running, client: &reqwest::Client, body: Value) -> (StatusCode, Value) {
    send_json(client.post(s.url("/v1/verify")).json(&body)).await
}

#[tokio::test]
async fn a_passed_session_identifies_once_and_the_trail_names_it() {
    let mut c = config();
    let dir = audited(&mut c);
    let s = Running::start(c).await;
    let app = s.client_for("verify");
    let eileen = enrolled(&s).await;

    // An admin's session alone: the full answer, the probe the session's best frame.
    let a = passed_session(&s, &s.client, None).await;
    let (status, v) = identify(&s, &s.client, json!({ "session": a })).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["decision"], "accept", "{v}");
    assert_eq!(v["candidates"][0]["subject"]["id"], json!(eileen), "{v}");
    assert_eq!(v["session"], json!(a), "{v}");
    assert_eq!(v["probe_from_image"], false, "{v}");
    assert_eq!(v["liveness"]["state"], "live", "{v}");
    assert!(v["liveness"]["score"].as_f64().unwrap() >= 0.7, "{v}");
    assert!(
        v["challenge"].as_array().is_some_and(|c| c.len() >= 2),
        "{v}"
    );
    assert!(v["templates_searched"].as_u64().unwrap() >= 1, "{v}");
    assert!(v.get("face").is_none(), "no image analysed: {v}");
    // Used: a second identification and a verification are refused alike.
    let (status, v) = identify(&s, &s.client, json!({ "session": a })).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::CONFLICT, "session_used"),
        "{v}"
    );
    let (status, v) = verify(&s, &s.client, json!({ "subject": eileen, "session": a })).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::CONFLICT, "session_used"),
        "{v}"
    );

    // Used by a verification first: identify refuses it the same way.
    let b = passed_session(&s, &app, None).await;
    let (status, v) = verify(&s, &app, json!({ "subject": eileen, "session": b })).await;
    assert_eq!(
        (status, &v["decision"]),
        (StatusCode::OK, &json!("accept")),
        "{v}"
    );
    let (status, v) = identify(&s, &app, json!({ "session": b })).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::CONFLICT, "session_used"),
        "{v}"
    );

    // Multipart, the same face's image beside the session, a `verify` key: decision only.
    let c = passed_session(&s, &app, None).await;
    let form = Form::new()
        .text("session", c.clone())
        .text("limit", "3")
        .part(
            "image",
            Part::bytes(face("astronaut_640x480.jpg")).file_name("p.jpg"),
        );
    let (status, v) = send_json(app.post(s.url("/v1/identify")).multipart(form)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        v["candidates"],
        json!([{"subject": {"id": eileen, "name": "Eileen Collins"}}]),
        "{v}"
    );
    assert_eq!(
        (&v["decision"], &v["reasons"]),
        (&json!("accept"), &json!([]))
    );
    assert!(
        v.get("liveness").is_none() && v.get("session").is_none(),
        "{v}"
    );

    // Another face beside the session: refused, and the session is spent all the same (it is
    // consumed before the image is analysed, as in verify).
    let d = passed_session(&s, &s.client, None).await;
    let form = Form::new()
        .text("session", d.clone())
        .part("image", Part::bytes(face(OTHER)).file_name("p.png"));
    let (status, v) = send_json(s.client.post(s.url("/v1/identify")).multipart(form)).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "session_face_mismatch"),
        "{v}"
    );
    let (status, v) = identify(&s, &s.client, json!({ "session": d })).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::CONFLICT, "session_used"),
        "{v}"
    );
    s.stop().await;

    // The trail: each identification names its session, accepted or refused.
    let events = audit_events(&dir, "identify");
    let seen: Vec<(&Value, &Value, &Value, &Value)> = events
        .iter()
        .map(|e| (&e["session"], &e["status"], &e["decision"], &e["error"]))
        .collect();
    assert_eq!(
        seen,
        vec![
            (&json!(a), &json!(200), &json!("accept"), &Value::Null),
            (&json!(a), &json!(409), &Value::Null, &json!("session_used")),
            (&json!(b), &json!(409), &Value::Null, &json!("session_used")),
            (&json!(c), &json!(200), &json!("accept"), &Value::Null),
            (
                &json!(d),
                &json!(422),
                &Value::Null,
                &json!("session_face_mismatch")
            ),
            (&json!(d), &json!(409), &Value::Null, &json!("session_used")),
        ],
        "{events:?}"
    );
    assert_eq!(events[0]["candidates"], json!([eileen]), "{}", events[0]);
    assert_eq!(events[3]["candidates"], json!([eileen]), "{}", events[3]);
    assert!(
        events.iter().all(|e| e.get("subject").is_none()),
        "{events:?}"
    );
    let verifies = audit_events(&dir, "verify");
    assert_eq!(
        (&verifies[0]["session"], &verifies[0]["error"]),
        (&json!(a), &json!("session_used")),
        "{verifies:?}"
    );
    assert_eq!(
        (&verifies[1]["session"], &verifies[1]["decision"]),
        (&json!(b), &json!("accept")),
        "{verifies:?}"
    );
}

/// Identify with `session`, then verify `subject` with it, both with `client`: they must be
/// refused with the same status and code, which are returned.
async fn refused_alike(
    s: &Running,
    client: &reqwest::Client,
    subject: &str,
    session: String,
) -> (StatusCode, String) {
    let (status, i) = identify(s, client, json!({ "session": session })).await;
    let (vstatus, v) = verify(s, client, json!({ "subject": subject, "session": session })).await;
    assert_eq!(
        (status, error_code(&i)),
        (vstatus, error_code(&v)),
        "identify {i} / verify {v}"
    );
    assert!(!status.is_success(), "{i}");
    (status, error_code(&i).to_owned())
}

#[tokio::test]
async fn sessions_identify_cannot_take_are_refused_as_verify_refuses_them() {
    let s = Running::start(config()).await;
    let app = s.client_for("verify");
    let eileen = enrolled(&s).await;
    let both = |session: String| refused_alike(&s, &app, &eileen, session);
    // Not performed yet.
    let (fresh, _) = open_session(&s, &app, None).await;
    assert_eq!(
        both(fresh).await,
        (StatusCode::CONFLICT, "session_not_passed".to_owned())
    );
    // Failed: the same still photo three times (duplicate frames).
    let (failed, _) = open_session(&s, &app, None).await;
    let photo = frames::astronaut();
    let (status, fb) = send_json(
        app.post(s.url(&format!("/v1/liveness/sessions/{failed}/frames")))
            .json(&frames_json(&[photo.clone(), photo.clone(), photo], 1_000)),
    )
    .await;
    assert_eq!((status, &fb["state"]), (StatusCode::OK, &json!("failed")));
    assert_eq!(
        both(failed).await,
        (StatusCode::CONFLICT, "session_not_passed".to_owned())
    );
    // Another key's passed session, and an id that names none: never revealed.
    let admins = passed_session(&s, &s.client, None).await;
    assert_eq!(
        both(admins.clone()).await,
        (StatusCode::NOT_FOUND, "session_not_found".to_owned())
    );
    assert_eq!(
        both("0123456789abcdef0123456789abcdef".to_owned()).await,
        (StatusCode::NOT_FOUND, "session_not_found".to_owned())
    );
    // ... and the refusals spent nothing: its own key identifies with it.
    let (status, v) = identify(&s, &s.client, json!({ "session": admins })).await;
    assert_eq!(
        (status, &v["decision"]),
        (StatusCode::OK, &json!("accept")),
        "{v}"
    );
    // A blank session names none: 422 as a missing field.
    let (status, v) = identify(&s, &app, json!({ "session": " " })).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        "{v}"
    );

    // Bound to Eileen: it verifies her alone. Identify refuses it without using it up.
    let bound = passed_session(&s, &app, Some(&eileen)).await;
    let (status, v) = identify(&s, &app, json!({ "session": bound })).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "session_bound_to_subject"),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("without a subject"),
        "{v}"
    );
    let (status, v) = verify(&s, &app, json!({ "subject": eileen, "session": bound })).await;
    assert_eq!(
        (status, &v["decision"]),
        (StatusCode::OK, &json!("accept")),
        "{v}"
    );
    s.stop().await;
}

#[tokio::test]
async fn an_expired_session_is_refused_as_verify_refuses_it() {
    let mut c = config();
    c.session_ttl_secs = 1;
    let s = Running::start(c).await;
    let app = s.client_for("verify");
    let eileen = enrolled(&s).await;
    let (id, _) = open_session(&s, &app, None).await;
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let (status, v) = identify(&s, &app, json!({ "session": id })).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::GONE, "session_expired"),
        "{v}"
    );
    let (status, v) = verify(&s, &app, json!({ "subject": eileen, "session": id })).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::GONE, "session_expired"),
        "{v}"
    );
    s.stop().await;
}

#[tokio::test]
async fn required_sessions_identify_with_a_session_and_locked_subjects_stay_withheld() {
    let mut c = config();
    c.require_session = Switch::On;
    c.lockout_attempts = 1;
    c.lockout_secs = 120;
    c.enrol_liveness = Switch::Off;
    let dir = audited(&mut c);
    let s = Running::start(c).await;
    let app = s.client_for("verify");
    let eileen = enrolled(&s).await;
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(face(LIVE))
    };
    // A still image alone is refused, and the answer says a session would do.
    let (status, v) = identify(&s, &app, json!({ "image": b64 })).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "session_required"),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/liveness/sessions"),
        "{v}"
    );
    // A passed session identifies.
    let first = passed_session(&s, &app, None).await;
    let (status, v) = identify(&s, &app, json!({ "session": first })).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        v["candidates"],
        json!([{"subject": {"id": eileen, "name": "Eileen Collins"}}]),
        "{v}"
    );

    // Another person's face refused for Eileen is a failed attempt: with one allowed, she locks.
    let (status, v) = s.enrol_sample(&s.client_for("enrol"), &eileen, OTHER).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "face_mismatch"),
        "{v}"
    );
    // Locked, she is withheld from a session's identification as from an image's: the answer
    // of a face matching nobody.
    let last = passed_session(&s, &app, None).await;
    let (status, v) = identify(&s, &app, json!({ "session": last })).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["decision"], &v["candidates"], &v["reasons"]),
        (&json!("reject"), &json!([]), &json!(["no_match"])),
        "{v}"
    );
    s.stop().await;

    let events = audit_events(&dir, "identify");
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events[0].get("session").is_none(), "{}", events[0]);
    assert_eq!(events[0]["error"], "session_required", "{}", events[0]);
    assert_eq!(
        (&events[1]["session"], &events[1]["decision"]),
        (&json!(first), &json!("accept")),
        "{}",
        events[1]
    );
    assert_eq!(
        (
            &events[2]["session"],
            &events[2]["decision"],
            &events[2]["withheld_locked"]
        ),
        (&json!(last), &json!("reject"), &json!([eileen])),
        "{}",
        events[2]
    );
    assert!(events[2].get("failed_attempts").is_none(), "{}", events[2]);
}

/// Another face sent beside a session that passed for a subject is a failed attempt against
/// that subject (here the one attempt allowed): the subject locks, as a verification with that
/// face would have locked it.
#[tokio::test]
async fn a_face_swapped_in_beside_a_session_counts_against_the_subject() {
    let mut c = config();
    c.lockout_attempts = 1;
    c.lockout_secs = 120;
    let s = Running::start(c).await;
    let app = s.client_for("verify");
    let eileen = enrolled(&s).await;
    let session = passed_session(&s, &app, Some(&eileen)).await;
    let form = Form::new()
        .text("subject", eileen.clone())
        .text("session", session)
        .part("image", Part::bytes(face(OTHER)).file_name("p.png"));
    let (status, v) = send_json(app.post(s.url("/v1/verify")).multipart(form)).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "session_face_mismatch"),
        "{v}"
    );
    // Locked: not even a new session opens for her.
    let (status, v) = send_json(
        app.post(s.url("/v1/liveness/sessions"))
            .json(&json!({ "subject": eileen })),
    )
    .await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "subject_locked"),
        "{v}"
    );
    s.stop().await;
}
