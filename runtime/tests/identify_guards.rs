//! The guards identification and face enrolment share with verification, against a real server:
//! guesses against one subject are bounded whichever route they take. A rejected identification
//! that matched a subject counts as a failed attempt against it (with verify's own failures, one
//! ledger); a locked subject reads as no match in identify's candidates and reasons alike;
//! `FACEKEY_REQUIRE_SESSION=on` covers identify (without a session); and a face added to a
//! locked subject is refused, while a `face_mismatch` counts as a failed attempt. An admin key
//! lifts a lock (`DELETE /v1/subjects/{id}/lockout`, audited); nothing else does.
//!
//! The attacker's photo is `Tom_Hanks_54745.png`, which the liveness models score as a spoof
//! (about 0.08): enrolled with enrolment liveness off, every identification with it matches the
//! subject and is rejected as `spoof`, the case the lockout must count.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Running, audit_events, audited, error_code, face, send_json};
use facekey_runtime::config::{Config, Switch};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

/// One face the liveness models call a spoof.
const SPOOF: &str = "Tom_Hanks_54745.png";
/// One live face (Eileen Collins).
const LIVE: &str = "astronaut.png";

/// Three failures lock for two minutes; enrolment takes the spoof photo (liveness off there).
fn config() -> Config {
    let mut c = Config::for_tests();
    c.enrol_liveness = Switch::Off;
    c.lockout_attempts = 3;
    c.lockout_secs = 120;
    c
}

fn image_form(image: &str) -> Form {
    Form::new().part("image", Part::bytes(face(image)).file_name("p.png"))
}

/// `POST /v1/subjects/{id}/faces` with `image`: status, `Retry-After`, body.
async fn add_face(
    s: &Running,
    client: &reqwest::Client,
    id: &str,
    image: &str,
) -> (StatusCode, Option<String>, Value) {
    send_with_retry_after(
        client
            .post(s.url(&format!("/v1/subjects/{id}/faces")))
            .multipart(image_form(image)),
    )
    .await
}

/// Send `request`: its status, `Retry-After` and JSON body.
async fn send_with_retry_after(
    request: reqwest::RequestBuilder,
) -> (StatusCode, Option<String>, Value) {
    let r = request.send().await.unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (r.status(), retry, r.json().await.unwrap())
}

/// A subject named `name` with the face in `image`, added by the admin key.
async fn enrolled(s: &Running, name: &str, image: &str) -> String {
    let id = s.new_subject(name).await;
    let (status, _, v) = add_face(s, &s.client, &id, image).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    id
}

async fn identify(s: &Running, client: &reqwest::Client, image: &str) -> Value {
    let (status, v) = send_json(
        client
            .post(s.url("/v1/identify"))
            .multipart(image_form(image)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

/// `POST /v1/verify` of `id` with `image`: status, `Retry-After`, body.
async fn verify(
    s: &Running,
    client: &reqwest::Client,
    id: &str,
    image: &str,
) -> (StatusCode, Option<String>, Value) {
    send_with_retry_after(
        client
            .post(s.url("/v1/verify"))
            .multipart(image_form(image).text("subject", id.to_owned())),
    )
    .await
}

fn reasons(v: &Value) -> Vec<&str> {
    v["reasons"]
        .as_array()
        .unwrap_or_else(|| panic!("no reasons in {v}"))
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn identify_counts_against_the_subject_it_matched_and_a_locked_one_reads_as_no_match() {
    let mut c = config();
    let dir = audited(&mut c);
    let s = Running::start(c).await;
    let app = s.client_for("verify");
    let eileen = enrolled(&s, "Eileen Collins", LIVE).await;

    // The attacker's photo while it matches nobody: the answer a locked subject must give later.
    let nobody = identify(&s, &app, SPOOF).await;
    assert_eq!(
        (&nobody["decision"], &nobody["candidates"]),
        (&json!("reject"), &json!([]))
    );
    assert!(reasons(&nobody).contains(&"no_match"), "{nobody}");

    let tom = s.new_subject("Tom").await;
    let (status, _, v) = add_face(&s, &s.client, &tom, SPOOF).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    // Two identifications match Tom and are rejected as a spoof: each is a failed attempt.
    for i in 0..2 {
        let v = identify(&s, &app, SPOOF).await;
        assert_eq!(
            (&v["decision"], &v["candidates"]),
            (&json!("reject"), &json!([])),
            "identify {i}"
        );
        let r = reasons(&v);
        assert!(r.contains(&"spoof") && !r.contains(&"no_match"), "{v}");
    }
    // So the first verification of Tom is his third failure: it is answered, and locks him.
    let (status, _, v) = verify(&s, &app, &tom, SPOOF).await;
    assert_eq!((status, &v["decision"]), (StatusCode::OK, &json!("reject")));
    let (status, retry, v) = verify(&s, &app, &tom, SPOOF).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "subject_locked"),
        "identify's failures were not counted: {v}"
    );
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=120).contains(&retry), "{retry}");
    assert!(
        s.metrics()
            .await
            .contains("facekey_subject_lockouts_total 1")
    );

    // Locked: the photo that matches Tom now reads exactly as a face matching nobody, to a
    // verify key and to an admin key, candidates and reasons alike.
    for client in [&app, &s.client] {
        let v = identify(&s, client, SPOOF).await;
        assert_eq!(
            (&v["decision"], &v["candidates"], &v["reasons"]),
            (&json!("reject"), &json!([]), &nobody["reasons"]),
            "{v}"
        );
    }
    // Eileen was never matched, so nothing was counted against her.
    let (status, _, v) = verify(&s, &app, &eileen, LIVE).await;
    assert_eq!((status, &v["decision"]), (StatusCode::OK, &json!("accept")));
    s.stop().await;

    // The trail: the two matching identifications counted against Tom, the locked ones name
    // him as withheld and count nothing.
    let events = audit_events(&dir, "identify");
    assert_eq!(events.len(), 5, "{events:?}");
    assert!(events[0].get("failed_attempts").is_none(), "{}", events[0]);
    for e in &events[1..3] {
        assert_eq!(e["failed_attempts"], json!([tom]), "{e}");
    }
    for e in &events[3..] {
        assert_eq!(e["withheld_locked"], json!([tom]), "{e}");
        assert!(e.get("failed_attempts").is_none(), "{e}");
    }
}

/// A rejected identification counts one failure, against the closest subject it matched, not
/// against every look-alike: a face matching many subjects cannot lock them all at once.
#[tokio::test]
async fn a_rejected_identify_counts_against_the_closest_match_only() {
    let mut c = config();
    let dir = audited(&mut c);
    let s = Running::start(c).await;
    let app = s.client_for("verify");
    let mut subjects = Vec::new();
    for name in ["Tom", "Tom's twin", "Tom's double"] {
        let id = s.new_subject(name).await;
        let (status, _, v) = add_face(&s, &s.client, &id, SPOOF).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        subjects.push(id);
    }
    for _ in 0..2 {
        let v = identify(&s, &app, SPOOF).await;
        assert_eq!(v["decision"], "reject", "{v}");
    }
    s.stop().await;
    let events = audit_events(&dir, "identify");
    assert_eq!(events.len(), 2, "{events:?}");
    for e in &events {
        let failed = e["failed_attempts"].as_array().expect("failed_attempts");
        assert_eq!(failed.len(), 1, "counted against several subjects: {e}");
        assert!(
            subjects.contains(&failed[0].as_str().unwrap().to_owned()),
            "{e}"
        );
    }
}

#[tokio::test]
async fn a_locked_subjects_genuine_face_is_no_candidate_while_others_are_still_identified() {
    let s = Running::start(config()).await;
    let app = s.client_for("verify");
    let eileen = enrolled(&s, "Eileen Collins", LIVE).await;
    // A second subject enrolled with the same live face: both are accepted while unlocked.
    let twin = s.new_subject("Twin").await;
    let (status, _, v) = add_face(&s, &s.client, &twin, LIVE).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let v = identify(&s, &app, LIVE).await;
    let mut ids: Vec<&str> = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["subject"]["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut both = vec![eileen.as_str(), twin.as_str()];
    both.sort_unstable();
    assert_eq!(ids, both, "{v}");
    // Lock Eileen through verify failures.
    for _ in 0..3 {
        let (status, _, v) = verify(&s, &app, &eileen, SPOOF).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    // Her face now identifies the twin alone; the answer is the decision-only shape.
    let v = identify(&s, &app, LIVE).await;
    assert_eq!(v["decision"], "accept", "{v}");
    assert_eq!(
        v["candidates"],
        json!([{"subject": {"id": twin, "name": "Twin"}}]),
        "{v}"
    );
    assert_eq!(v["reasons"], json!([]));
    assert!(
        v.get("liveness").is_none(),
        "scores leaked to a verify key: {v}"
    );
    s.stop().await;
}

#[tokio::test]
async fn required_sessions_cover_identify() {
    let mut c = config();
    c.require_session = Switch::On;
    let s = Running::start(c).await;
    let app = s.client_for("verify");
    let eileen = enrolled(&s, "Eileen Collins", LIVE).await;
    // Verify with a still photo is refused...
    let (status, _, v) = verify(&s, &app, &eileen, LIVE).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "session_required"),
        "{v}"
    );
    // ... and so is identify without a session, with any key, and the answer says to send one.
    for client in [&app, &s.client] {
        let (status, v) = send_json(
            client
                .post(s.url("/v1/identify"))
                .multipart(image_form(LIVE)),
        )
        .await;
        assert_eq!(
            (status, error_code(&v)),
            (StatusCode::UNPROCESSABLE_ENTITY, "session_required"),
            "{v}"
        );
        assert!(v.get("candidates").is_none(), "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("/v1/liveness/sessions"), "{v}");
    }
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(face(LIVE))
    };
    // With a session, identify takes it as verify does: it must exist for this key (passed
    // sessions identifying: tests/identify_sessions.rs).
    let (status, v) = send_json(
        app.post(s.url("/v1/identify"))
            .json(&json!({"image": b64, "session": "00000000-0000-4000-8000-000000000000"})),
    )
    .await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::NOT_FOUND, "session_not_found"),
        "{v}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_locked_subject_takes_no_face_and_a_face_mismatch_is_a_failed_attempt() {
    let s = Running::start(config()).await;
    let enrol = s.client_for("enrol");
    let app = s.client_for("verify");
    let eileen = enrolled(&s, "Eileen Collins", LIVE).await;
    // Another person's face through an enrol key: refused, and counted, twice.
    for _ in 0..2 {
        let (status, _, v) = add_face(&s, &enrol, &eileen, SPOOF).await;
        assert_eq!(
            (status, error_code(&v)),
            (StatusCode::UNPROCESSABLE_ENTITY, "face_mismatch"),
            "{v}"
        );
    }
    // So one failed verification locks her (the third failure)...
    let (status, _, v) = verify(&s, &app, &eileen, SPOOF).await;
    assert_eq!((status, &v["decision"]), (StatusCode::OK, &json!("reject")));
    let (status, _, v) = verify(&s, &app, &eileen, LIVE).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "subject_locked"),
        "the mismatches were not counted: {v}"
    );
    // ... and while locked she takes no face, not even her own, whatever the key; a mismatch
    // is refused the same way (no match test for a locked subject).
    for (client, image) in [(&enrol, LIVE), (&enrol, SPOOF), (&s.client, LIVE)] {
        let (status, retry, v) = add_face(&s, client, &eileen, image).await;
        assert_eq!(
            (status, error_code(&v)),
            (StatusCode::TOO_MANY_REQUESTS, "subject_locked"),
            "{image}: {v}"
        );
        let retry: u64 = retry.expect("Retry-After").parse().unwrap();
        assert!((1..=120).contains(&retry), "{retry}");
    }
    let (status, v) = send_json(s.client.get(s.url(&format!("/v1/subjects/{eileen}")))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["faces"], 1, "a locked subject gained a face: {v}");
    s.stop().await;
}

/// Only an admin key lifts a lock, and it is audited; the subject verifies again at once. A
/// successful verification does not lift it by itself (its decision is not even revealed).
#[tokio::test]
async fn an_admin_lifts_a_lock_and_nothing_else_does() {
    let mut c = config();
    let dir = audited(&mut c);
    let s = Running::start(c).await;
    let app = s.client_for("verify");
    let eileen = enrolled(&s, "Eileen Collins", LIVE).await;
    for _ in 0..3 {
        let (status, _, v) = verify(&s, &app, &eileen, SPOOF).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    // Locked: her own live face is refused, and does not lift the lock.
    let (status, _, v) = verify(&s, &app, &eileen, LIVE).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "subject_locked")
    );

    let release = |client: &reqwest::Client, id: &str| {
        send_json(client.delete(s.url(&format!("/v1/subjects/{id}/lockout"))))
    };
    let (status, v) = release(&app, &eileen).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a verify key lifted a lock: {v}"
    );
    // Deleting another spelling of her id (an `enrol` key that did not create her, or even an
    // admin) finds no subject and lifts nothing: the store spells an id one way, the lockout
    // counts every spelling together.
    let enrol = s.client_for("enrol");
    for (client, spelling) in [
        (&enrol, eileen.to_uppercase()),
        (&enrol, eileen.replace('-', "")),
        (&s.client, format!("{{{eileen}}}")),
    ] {
        let (status, v) =
            send_json(client.delete(s.url(&format!("/v1/subjects/{spelling}")))).await;
        assert_eq!(
            (status, error_code(&v)),
            (StatusCode::NOT_FOUND, "subject_not_found"),
            "{spelling}"
        );
        let (status, _, v) = verify(&s, &app, &eileen, LIVE).await;
        assert_eq!(
            (status, error_code(&v)),
            (StatusCode::TOO_MANY_REQUESTS, "subject_locked"),
            "deleting {spelling} lifted the lock"
        );
    }
    let (status, v) = release(&s.client, "8f4e2d1c-0b9a-4c7d-8e6f-5a4b3c2d1e0f").await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::NOT_FOUND, "subject_not_found")
    );
    let (status, v) = release(&s.client, &eileen).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["subject"], &v["was_locked"]),
        (&json!(eileen), &json!(true)),
        "{v}"
    );
    let left = v["seconds_left"].as_u64().unwrap();
    assert!((1..=120).contains(&left), "{v}");

    let (status, _, v) = verify(&s, &app, &eileen, LIVE).await;
    assert_eq!(
        (status, &v["decision"]),
        (StatusCode::OK, &json!("accept")),
        "{v}"
    );
    // Nothing locked any more: the release says so.
    let (status, v) = release(&s.client, &eileen).await;
    assert_eq!(
        (status, &v["was_locked"], &v["seconds_left"]),
        (StatusCode::OK, &json!(false), &json!(null))
    );
    s.stop().await;

    let events = audit_events(&dir, "subject.unlock");
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e["subject"] == json!(eileen) || e["status"] == json!(404)),
        "{events:?}"
    );
    assert_eq!(events[1]["key_id"], json!("admin"), "{}", events[1]);
}
