//! The audit trail of verifications against a real server: a refused verification's event names
//! the subject (and session) its body named, whatever refused it (unknown subject, no face
//! enrolled, no face in the image, locked, a session not passed), so the security team sees which
//! account a refused attempt aimed at; a verification with a liveness session records the
//! session's id beside the decision.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
#[path = "common/challenge_frames.rs"]
mod frames;

use common::{Running, audit_events, audited, error_code, face, send_json};
use facekey_runtime::audit::MAX_ID_CHARS;
use facekey_runtime::config::Config;
use frames::{frames_json, open_session, perform, performance};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

/// A grey PNG with no face in it.
fn blank_png() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(320, 240, image::Rgb([128, 128, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// `POST /v1/verify` with these text fields and image (none when `image` is `None`).
async fn verify(
    s: &Running,
    fields: &[(&str, &str)],
    image: Option<Vec<u8>>,
) -> (StatusCode, Value) {
    let mut form = Form::new();
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    if let Some(bytes) = image {
        form = form.part("image", Part::bytes(bytes).file_name("p.png"));
    }
    send_json(
        s.client_for("verify")
            .post(s.url("/v1/verify"))
            .multipart(form),
    )
    .await
}

#[tokio::test]
async fn refused_verifications_name_the_subject_and_session_they_aimed_at() {
    let mut config = Config::for_tests();
    config.lockout_attempts = 1;
    config.lockout_secs = 120;
    config.instance = Some("replica-a".into());
    let dir = audited(&mut config);
    let s = Running::start(config).await;
    let eileen = s.new_subject("Eileen Collins").await;
    assert_eq!(
        s.enrol_sample(&s.client, &eileen, "astronaut.png").await.0,
        StatusCode::CREATED
    );
    let other = s.new_subject("Other").await;
    assert_eq!(
        s.enrol_sample(&s.client, &other, "astronaut.png").await.0,
        StatusCode::CREATED
    );
    let faceless = s.new_subject("No face yet").await;
    let live = || Some(face("astronaut.png"));
    let long = "x".repeat(MAX_ID_CHARS + 50);

    let session = {
        let (status, v) = send_json(
            s.client_for("verify")
                .post(s.url("/v1/liveness/sessions"))
                .json(&json!({})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_owned()
    };
    let case = |subject: Option<&str>, session: Option<&str>, image, status, code| Case {
        subject: subject.map(str::to_owned),
        session: session.map(str::to_owned),
        image,
        status,
        code,
    };
    // Each verification, in order.
    let cases = [
        case(
            Some("no-such-subject"),
            None,
            live(),
            StatusCode::NOT_FOUND,
            "subject_not_found",
        ),
        case(
            Some(&faceless),
            None,
            live(),
            StatusCode::CONFLICT,
            "subject_has_no_faces",
        ),
        case(
            Some(&eileen),
            None,
            Some(blank_png()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_face",
        ),
        case(
            Some(&long),
            None,
            live(),
            StatusCode::NOT_FOUND,
            "subject_not_found",
        ),
        // A session that has not passed: refused, the subject and the session both named.
        case(
            Some(&other),
            Some(&session),
            None,
            StatusCode::CONFLICT,
            "session_not_passed",
        ),
        // One failure locks Eileen (answered); the next is refused as locked.
        case(
            Some(&eileen),
            None,
            Some(face("Tom_Hanks_54745.png")),
            StatusCode::OK,
            "<none>",
        ),
        case(
            Some(&eileen),
            None,
            live(),
            StatusCode::TOO_MANY_REQUESTS,
            "subject_locked",
        ),
        // No subject named: none recorded (nothing is made up).
        case(
            None,
            None,
            live(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
    ];
    for c in &cases {
        let mut fields = Vec::new();
        fields.extend(c.subject.as_deref().map(|v| ("subject", v)));
        fields.extend(c.session.as_deref().map(|v| ("session", v)));
        let (got, v) = verify(&s, &fields, c.image.clone()).await;
        assert_eq!((got, error_code(&v)), (c.status, c.code), "{fields:?}: {v}");
    }
    s.stop().await;

    let events = audit_events(&dir, "verify");
    assert_eq!(events.len(), cases.len(), "{events:?}");
    assert!(
        events.iter().all(|e| e["instance"] == "replica-a"),
        "every event names the replica that wrote it: {events:?}"
    );
    for (c, e) in cases.iter().zip(&events) {
        assert_eq!(e["status"], c.status.as_u16(), "{e}");
        match &c.subject {
            Some(subject) => {
                let recorded: String = subject.chars().take(MAX_ID_CHARS).collect();
                assert_eq!(e["subject"], recorded.as_str(), "{e}");
            }
            None => assert!(e.get("subject").is_none(), "{e}"),
        }
        match &c.session {
            Some(session) => assert_eq!(e["session"], session.as_str(), "{e}"),
            None => assert!(e.get("session").is_none(), "{e}"),
        }
        if c.status == StatusCode::OK {
            assert_eq!(e["decision"], "reject", "{e}");
            // The failure that locked the subject says so: the lock's cause, with its key.
            assert_eq!(e["locked"], json!([eileen]), "{e}");
            assert_eq!(e["key_id"], "verify", "{e}");
        } else {
            assert_eq!(e["error"], c.code, "{e}");
            assert!(e.get("decision").is_none(), "{e}");
            assert!(e.get("locked").is_none(), "{e}");
        }
    }
}

/// One verification of the refusals test: what its body names, and the answer expected.
struct Case {
    subject: Option<String>,
    session: Option<String>,
    image: Option<Vec<u8>>,
    status: StatusCode,
    code: &'static str,
}

#[tokio::test]
async fn a_verification_with_a_session_records_the_session() {
    let mut config = Config::for_tests();
    let dir = audited(&mut config);
    let s = Running::start(config).await;
    let eileen = s.new_subject("Eileen Collins").await;
    assert_eq!(
        s.enrol_sample(&s.client, &eileen, "astronaut.png").await.0,
        StatusCode::CREATED
    );
    let app = s.client_for("verify");
    let (id, challenge) = open_session(&s, &app, Some(&eileen)).await;
    perform(&s, &app, &id, &challenge).await;
    let (status, v) = send_json(
        app.post(s.url("/v1/verify"))
            .json(&json!({ "subject": eileen, "session": id })),
    )
    .await;
    assert_eq!(
        (status, &v["decision"]),
        (StatusCode::OK, &json!("accept")),
        "{v}"
    );
    // Used once: the second use is refused, and names the session too.
    let (status, v) = send_json(
        app.post(s.url("/v1/verify"))
            .json(&json!({ "subject": eileen, "session": id })),
    )
    .await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::CONFLICT, "session_used"),
        "{v}"
    );
    // Another session, unbound: read, fed one frame (still in progress: no event), then the
    // same frame again, which fails it (duplicate_frames).
    let (_, other) = send_json(app.post(s.url("/v1/liveness/sessions")).json(&json!({}))).await;
    let other = other["id"].as_str().unwrap().to_owned();
    let (status, _) = send_json(app.get(s.url(&format!("/v1/liveness/sessions/{other}")))).await;
    assert_eq!(status, StatusCode::OK);
    let first = performance(&challenge).remove(0);
    for t0 in [1_000, 2_000] {
        let (status, fb) = send_json(
            app.post(s.url(&format!("/v1/liveness/sessions/{other}/frames")))
                .json(&frames_json(std::slice::from_ref(&first), t0)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{fb}");
    }
    s.stop().await;

    // Sessions: opened (bound subject recorded), concluded (the verdict), read; the path's
    // `{id}` is the session, never a subject.
    let opens = audit_events(&dir, "session.open");
    assert_eq!(opens.len(), 2, "{opens:?}");
    assert_eq!(
        (&opens[0]["session"], &opens[0]["subject"]),
        (&json!(id), &json!(eileen))
    );
    assert_eq!(
        (&opens[1]["session"], &opens[1]["subject"]),
        (&json!(other), &Value::Null)
    );
    let concluded = audit_events(&dir, "session.frames");
    assert_eq!(
        concluded.len(),
        2,
        "one event per concluded session: {concluded:?}"
    );
    assert_eq!(
        (
            &concluded[0]["session"],
            &concluded[0]["subject"],
            &concluded[0]["decision"]
        ),
        (&json!(id), &json!(eileen), &json!("accept")),
        "{}",
        concluded[0]
    );
    assert_eq!(
        (&concluded[1]["session"], &concluded[1]["decision"]),
        (&json!(other), &json!("reject")),
        "{}",
        concluded[1]
    );
    assert!(
        concluded[1]["reasons"]
            .to_string()
            .contains("duplicate_frames"),
        "{}",
        concluded[1]
    );
    let reads = audit_events(&dir, "session.read");
    assert_eq!(
        (reads.len(), &reads[0]["session"], &reads[0]["subject"]),
        (1, &json!(other), &Value::Null)
    );

    let events = audit_events(&dir, "verify");
    assert_eq!(events.len(), 2, "{events:?}");
    let (used, refused) = (&events[0], &events[1]);
    assert_eq!(
        (&used["subject"], &used["session"], &used["decision"]),
        (&json!(eileen), &json!(id), &json!("accept")),
        "{used}"
    );
    assert_eq!(
        (&refused["subject"], &refused["session"], &refused["error"]),
        (&json!(eileen), &json!(id), &json!("session_used")),
        "{refused}"
    );
}

/// An enrolment whose client goes away before the answer is still in the trail: audited as 499
/// `client_gone` with the key and the subject (the face may be stored: store writes finish on
/// their own task), not silently missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_client_went_away_is_audited() {
    let mut config = Config::for_tests();
    let dir = audited(&mut config);
    let s = Running::start(config).await;
    let subject = s.new_subject("Gone").await;
    let form = Form::new().part(
        "image",
        Part::bytes(face("astronaut.png")).file_name("a.png"),
    );
    // The models take far longer than 50 ms: the client gives up while they run.
    let gave_up = s
        .client
        .post(s.url(&format!("/v1/subjects/{subject}/faces")))
        .multipart(form)
        .timeout(std::time::Duration::from_millis(50))
        .send()
        .await;
    assert!(gave_up.is_err_and(|e| e.is_timeout()));
    let gone = || {
        audit_events(&dir, "face.enrol")
            .into_iter()
            .find(|e| e["status"] == 499)
    };
    assert!(
        common::eventually(std::time::Duration::from_secs(10), || gone().is_some()).await,
        "no face.enrol event for the abandoned request: {:?}",
        audit_events(&dir, "face.enrol")
    );
    let event = gone().unwrap();
    assert_eq!(
        (
            event["key_id"].as_str(),
            event["subject"].as_str(),
            event["error"].as_str()
        ),
        (Some("admin"), Some(subject.as_str()), Some("client_gone")),
        "{event}"
    );
    s.stop().await;
}

/// Ids a request's path names are cut to `MAX_ID_CHARS` in its audit event, as ids from bodies
/// are: requests without a key (refused before any handler, each still audited) with a
/// 20 000-character subject, face or session id write lines of a few hundred bytes, not of
/// their URL's length; so does a keyed request for an unknown subject.
#[tokio::test]
async fn ids_from_the_path_are_bounded_in_the_audit_trail() {
    let mut config = Config::for_tests();
    let dir = audited(&mut config);
    let s = Running::start(config).await;
    let long = |c: &str| c.repeat(20_000);
    let anonymous = reqwest::Client::new();
    let paths = [
        (reqwest::Method::GET, format!("/v1/subjects/{}", long("s"))),
        (
            reqwest::Method::DELETE,
            format!("/v1/subjects/{}/faces/{}", long("s"), long("f")),
        ),
        (
            reqwest::Method::GET,
            format!("/v1/liveness/sessions/{}", long("l")),
        ),
    ];
    for (method, path) in &paths {
        let (status, v) = send_json(anonymous.request(method.clone(), s.url(path))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    }
    let (status, v) = send_json(
        s.client
            .delete(s.url(&format!("/v1/subjects/{}", long("k")))),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let bounded = |e: &Value, field: &str, c: &str| {
        assert_eq!(
            e[field].as_str(),
            Some(c.repeat(MAX_ID_CHARS).as_str()),
            "{field}"
        );
    };
    let denied = audit_events(&dir, "auth.denied");
    assert_eq!(denied.len(), 3, "{denied:?}");
    bounded(&denied[0], "subject", "s");
    bounded(&denied[1], "subject", "s");
    bounded(&denied[1], "face", "f");
    bounded(&denied[2], "session", "l");
    let deleted = audit_events(&dir, "subject.delete");
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    bounded(&deleted[0], "subject", "k");
    let trail = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    for line in trail.lines() {
        assert!(line.len() < 2_000, "an audit line of {} bytes", line.len());
    }
    s.stop().await;
}

/// HEAD runs the GET handler (the store read included), so it is audited as that read: a key
/// cannot probe which subjects exist without a trace.
#[tokio::test]
async fn a_head_request_is_audited_as_the_read_it_makes() {
    let mut config = Config::for_tests();
    let dir = audited(&mut config);
    let s = Running::start(config).await;
    let (status, v) = send_json(
        s.client
            .post(s.url("/v1/subjects"))
            .json(&serde_json::json!({"name": "Ada"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap();
    for path in [format!("/v1/subjects/{id}"), "/v1/subjects".to_owned()] {
        let r = s.client.head(s.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let reads = audit_events(&dir, "subject.read");
    assert_eq!(reads.len(), 2, "{reads:?}");
    assert_eq!(reads[0]["subject"], id, "{reads:?}");
    s.stop().await;
}

/// A client without a key cannot fill the audit trail: its refused requests past 20 a second
/// are counted (`facekey_auth_failures_total`), not audited one by one (each used to write one
/// audit event and one log line), and a later refusal of the client is audited again.
#[tokio::test]
async fn a_flood_of_refused_requests_is_counted_not_audited_one_by_one() {
    let mut config = Config::for_tests();
    let dir = audited(&mut config);
    let s = Running::start(config).await;
    let anonymous = reqwest::Client::new();
    let started = std::time::Instant::now();
    for _ in 0..100 {
        let r = anonymous.get(s.url("/v1/subjects")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let took = started.elapsed();
    let metrics = s.metrics().await;
    let counted: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("facekey_auth_failures_total{") && l.contains("missing_key"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, 100, "{metrics}");
    // A second later the client is audited again.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = anonymous.get(s.url("/v1/subjects")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    s.stop().await;
    let denied = audit_events(&dir, "auth.denied");
    // At most 20 per second the flood lasted, and the last one.
    let windows = took.as_secs() as usize + 1;
    assert!(
        denied.len() <= 20 * windows + 1 && denied.len() >= 21,
        "{} audited of 101 over {took:?}",
        denied.len()
    );
}
