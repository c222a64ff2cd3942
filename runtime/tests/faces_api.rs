//! End-to-end tests of enrolment, verification and liveness over HTTP with the real models and
//! the sample images in runtime/testdata/faces (see its PROVENANCE.md). Needs the ONNX Runtime
//! library (scripts/setup-onnxruntime.sh, run by tests/setup.sh).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use common::{Running, error_code, face, png_header_only};
use facekey_runtime::config::{Config, MultiFace};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

/// Face-test helpers on top of the shared harness.
trait FaceCalls {
    async fn create_subject(&self, name: &str) -> String;
    async fn enrol(&self, id: &str, image: &str) -> (StatusCode, Value);
    async fn verify_multipart(&self, id: &str, bytes: Vec<u8>) -> (StatusCode, Value);
}

impl FaceCalls for Running {
    async fn create_subject(&self, name: &str) -> String {
        let (s, v) = self
            .json(
                self.client
                    .post(self.url("/v1/subjects"))
                    .json(&json!({ "name": name })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    async fn enrol(&self, id: &str, image: &str) -> (StatusCode, Value) {
        let form = Form::new().part(
            "image",
            Part::bytes(face(image)).file_name(image.to_string()),
        );
        self.json(
            self.client
                .post(self.url(&format!("/v1/subjects/{id}/faces")))
                .multipart(form),
        )
        .await
    }

    async fn verify_multipart(&self, id: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
        let form = Form::new()
            .text("subject", id.to_string())
            .part("image", Part::bytes(bytes).file_name("probe"));
        self.json(self.client.post(self.url("/v1/verify")).multipart(form))
            .await
    }
}

fn blank_png() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(320, 240, image::Rgb([128, 128, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[tokio::test]
async fn enrol_then_verify_genuine_and_impostor() {
    let s = Running::start(Config::for_tests()).await;
    let eileen = s.create_subject("Eileen Collins").await;

    let (status, v) = s.enrol(&eileen, "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["subject_id"], eileen.as_str());
    assert_eq!(v["faces"], 1);
    let bx = &v["face"]["box"];
    // The reference detector puts this face at [182, 64, 83, 107].
    assert!((bx["x"].as_f64().unwrap() - 182.0).abs() < 4.0, "{v}");
    assert!((bx["width"].as_f64().unwrap() - 83.0).abs() < 4.0, "{v}");
    assert!(v["quality"]["score"].as_f64().unwrap() > 0.0);

    // The subject lists its face but never the embedding.
    let (_, detail) = s
        .json(s.client.get(s.url(&format!("/v1/subjects/{eileen}"))))
        .await;
    assert_eq!(detail["faces"], 1);
    assert_eq!(detail["templates"][0]["id"], v["face_id"]);
    assert!(!detail.to_string().contains("embedding"), "{detail}");

    // Genuine probe: the same person from a resized JPEG copy, sent as base64 JSON.
    let probe = base64::engine::general_purpose::STANDARD.encode(face("astronaut_640x480.jpg"));
    let (status, v) = s
        .json(s.client.post(s.url("/v1/verify")).json(&json!({
            "subject": eileen,
            "image": probe,
            "include_layers": true,
        })))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["subject"], eileen.as_str());
    assert_eq!(v["faces_detected"], 1);
    assert_eq!(v["match"]["decision"], "accept", "{v}");
    assert!(v["match"]["distance"].as_f64().unwrap() < 0.6, "{v}");
    assert!(v["match"]["similarity"].as_f64().unwrap() > 0.5);
    assert_eq!(v["match"]["templates"], 1);
    let features: Vec<f64> = v["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(features[0], v["match"]["similarity"].as_f64().unwrap());
    assert_eq!(features[1], v["liveness"]["score"].as_f64().unwrap());
    assert!((features[2] - v["quality"]["score"].as_f64().unwrap()).abs() < 1e-6);
    assert!(v["layers"]["z1"].is_array());
    for stage in [
        "decode", "detect", "align", "embed", "liveness", "quality", "fusion", "total",
    ] {
        assert!(
            v["timings_ms"][stage].as_f64().unwrap() >= 0.0,
            "{stage}: {v}"
        );
    }
    assert!(v["inference_ms"]["pnet"].as_f64().unwrap() > 0.0);
    for decision in [
        &v["decision"],
        &v["liveness"]["decision"],
        &v["match"]["decision"],
    ] {
        assert!(decision == "accept" || decision == "reject", "{v}");
    }
    // The fused probability is exactly what /v1/score gives for the same features.
    let (_, scored) = s
        .json(
            s.client
                .post(s.url("/v1/score"))
                .json(&json!({ "features": features })),
        )
        .await;
    assert_eq!(scored["probability"], v["probability"]);
    // Strict policy: accepted only when every check accepts; reasons say which failed.
    let reasons: Vec<&str> = v["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(v["decision"] == "accept", reasons.is_empty(), "{v}");
    assert_eq!(
        reasons.contains(&"spoof"),
        v["liveness"]["decision"] == "reject"
    );
    // Liveness ran (MiniFAS by default), so its state is live or spoof, never unknown/off.
    let state = v["liveness"]["state"].as_str().unwrap();
    assert!(state == "live" || state == "spoof", "{v}");
    assert_eq!(
        state == "live",
        v["liveness"]["decision"] == "accept",
        "{v}"
    );
    assert_eq!(v["liveness"]["checked"], true);

    // Impostor probe: a different person.
    let (status, v) = s
        .verify_multipart(&eileen, face("Tom_Hanks_54745.png"))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["match"]["decision"], "reject", "{v}");
    assert!(v["match"]["distance"].as_f64().unwrap() > 0.6, "{v}");
    assert_eq!(v["decision"], "reject");
    assert!(
        v["reasons"]
            .as_array()
            .unwrap()
            .contains(&json!("no_match"))
    );

    let metrics = s.metrics().await;
    for want in [
        r#"facekey_stage_duration_seconds_count{stage="detect"} 3"#,
        r#"facekey_stage_duration_seconds_count{stage="fusion"} 2"#,
        r#"facekey_inference_duration_seconds_count{model="dlib_resnet"} 3"#,
        r#"facekey_model_info{kind="embedding",model="dlib_resnet"} 1"#,
        r#"facekey_http_requests_total{method="POST",route="/v1/verify",status="200"} 2"#,
        r#"facekey_liveness_checks_total{state="unknown"} 0"#,
        r#"facekey_liveness_checks_total{state="off"} 0"#,
    ] {
        assert!(metrics.contains(want), "missing {want}");
    }

    // Deleting the subject deletes its templates: verification now finds no subject.
    let r = s
        .client
        .delete(s.url(&format!("/v1/subjects/{eileen}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (status, v) = s.verify_multipart(&eileen, face("astronaut.png")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&v), "subject_not_found");
    s.stop().await;
}

#[tokio::test]
async fn image_and_request_errors_are_clear_4xx() {
    let mut config = Config::for_tests();
    config.multi_face = MultiFace::Reject;
    config.max_image_pixels = 4_000_000;
    let s = Running::start(config).await;
    let id = s.create_subject("someone").await;

    // A subject without faces cannot be verified.
    let (status, v) = s.verify_multipart(&id, face("astronaut.png")).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::CONFLICT, "subject_has_no_faces")
    );
    let (status, v) = s.enrol(&id, "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED, "{v}");

    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "no face",
            blank_png(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_face",
        ),
        (
            "group photo, policy reject",
            face("t1.jpg"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "multiple_faces",
        ),
        (
            "corrupt JPEG",
            b"\xff\xd8\xff\xe0garbage".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_image",
        ),
        (
            "GIF",
            b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_image_format",
        ),
        (
            "bomb header",
            png_header_only(100_000, 100_000),
            StatusCode::PAYLOAD_TOO_LARGE,
            "image_too_large",
        ),
        (
            "empty image",
            Vec::new(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
    ];
    for (what, bytes, want_status, want_code) in cases {
        let (status, v) = s.verify_multipart(&id, bytes).await;
        assert_eq!(
            (status, error_code(&v)),
            (want_status, want_code),
            "{what}: {v}"
        );
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }

    // Missing fields, unknown subject, wrong content type, bad base64.
    let (status, v) = s
        .json(
            s.client
                .post(s.url("/v1/verify"))
                .json(&json!({ "image": "aGVsbG8=" })),
        )
        .await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
    );
    assert!(v["error"]["message"].as_str().unwrap().contains("subject"));
    let (status, v) = s
        .json(
            s.client
                .post(s.url("/v1/verify"))
                .json(&json!({ "subject": id })),
        )
        .await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
    );
    assert!(v["error"]["message"].as_str().unwrap().contains("image"));
    let (status, v) = s
        .json(
            s.client
                .post(s.url("/v1/verify"))
                .json(&json!({ "subject": id, "image": "%%%" })),
        )
        .await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_base64")
    );
    let (status, v) = s
        .verify_multipart("no-such-subject", face("astronaut.png"))
        .await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::NOT_FOUND, "subject_not_found")
    );
    let (status, v) = s
        .json(
            s.client
                .post(s.url("/v1/verify"))
                .header("content-type", "image/jpeg")
                .body(face("astronaut_640x480.jpg")),
        )
        .await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    let (status, v) = s.enrol("no-such-subject", "astronaut.png").await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::NOT_FOUND, "subject_not_found")
    );

    // After all that, the service still verifies.
    let (status, v) = s.verify_multipart(&id, face("astronaut_640x480.jpg")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    s.stop().await;
}

#[tokio::test]
async fn liveness_reports_every_face_and_counts_spoofs() {
    let mut config = Config::for_tests();
    config.liveness = facekey_runtime::config::LivenessModel::Both;
    let s = Running::start(config).await;
    let form = Form::new().part("image", Part::bytes(face("t1.jpg")).file_name("t1.jpg"));
    let (status, v) = s
        .json(s.client.post(s.url("/v1/liveness")).multipart(form))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let faces = v["faces"].as_array().unwrap();
    assert!(faces.len() >= 5, "group photo: {} faces", faces.len());
    let mut rejected = 0;
    for f in faces {
        assert!(f["box"]["width"].as_f64().unwrap() > 0.0);
        assert!(f["landmarks"]["nose"]["x"].is_number());
        let score = f["liveness"]["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score));
        let decision = f["liveness"]["decision"].as_str().unwrap();
        assert_eq!(decision == "accept", score >= 0.5, "{f}");
        assert!(f["liveness"]["models"]["dtn"]["spoof_score"].is_number());
        assert!(f["liveness"]["models"]["minifas"]["live_score"].is_number());
        rejected += usize::from(decision == "reject");
    }
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(&format!("facekey_spoof_detected_total {rejected}")),
        "spoof counter must equal the rejected faces ({rejected})"
    );

    // An image without faces is an empty list, not an error.
    let form = Form::new().part("image", Part::bytes(blank_png()).file_name("blank.png"));
    let (status, v) = s
        .json(s.client.post(s.url("/v1/liveness")).multipart(form))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["faces"], json!([]));
    s.stop().await;
}

/// `--liveness off` is the explicit insecure mode: no liveness model runs, the verdict says
/// `off` (not `live`), the fusion input x2 is 1, and the metric counts it.
#[tokio::test]
async fn liveness_off_is_reported_as_off_not_live() {
    let mut config = Config::for_tests();
    config.liveness = facekey_runtime::config::LivenessModel::Off;
    config.allow_insecure = true;
    let s = Running::start(config).await;
    let id = s.create_subject("Eileen Collins").await;
    let (status, v) = s.enrol(&id, "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, v) = s.verify_multipart(&id, face("astronaut_640x480.jpg")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["liveness"]["state"], "off", "{v}");
    assert_eq!(v["liveness"]["checked"], false);
    assert!(v["liveness"]["score"].is_null());
    assert_eq!(v["features"][1], 1.0);
    assert!(v["inference_ms"]["minifas"].is_null(), "{v}");
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"facekey_liveness_checks_total{state="off"} 1"#),
        "{metrics}"
    );
    s.stop().await;
}

/// `POST /v1/identify` (1:N): the enrolled person is found among several subjects with the same
/// checks as verify; a stranger finds nobody; an empty index answers 200 with no candidates;
/// bad limits are 422.
#[tokio::test]
async fn identify_finds_the_enrolled_person_and_nobody_else() {
    // The bundled liveness model calls Tom_Hanks_54745.png an attack; enrol it as an ID photo.
    let mut config = Config::for_tests();
    config.enrol_liveness = facekey_runtime::config::Switch::Off;
    let s = Running::start(config).await;
    let identify = |image: &'static str, limit: Option<&'static str>| {
        let mut form = Form::new().part("image", Part::bytes(face(image)).file_name("p.jpg"));
        if let Some(l) = limit {
            form = form.text("limit", l);
        }
        s.json(s.client.post(s.url("/v1/identify")).multipart(form))
    };
    // Nobody enrolled yet: an answer, not an error.
    let (status, v) = identify("astronaut_640x480.jpg", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["candidates"], json!([]));
    assert_eq!(v["templates_searched"], 0);
    assert_eq!(v["decision"], "reject");
    assert_eq!(v["reasons"], json!(["no_match"]));

    let eileen = s.create_subject("Eileen Collins").await;
    let (status, _) = s.enrol(&eileen, "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED);
    let other = s.create_subject("Tom Hanks").await;
    let (status, _) = s.enrol(&other, "Tom_Hanks_54745.png").await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, v) = identify("astronaut_640x480.jpg", Some("3")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["templates_searched"], 2);
    let candidates = v["candidates"].as_array().unwrap();
    // Liveness may call this reproduction of a photo a spoof (MiniFAS is strict on it); then the
    // strict policy accepts nobody and says why, as verify does.
    if v["liveness"]["state"] == "live" {
        assert_eq!(v["decision"], "accept", "{v}");
        assert_eq!(candidates.len(), 1, "only Eileen matches: {v}");
        assert_eq!(candidates[0]["subject"]["id"], eileen.as_str());
        assert_eq!(candidates[0]["subject"]["name"], "Eileen Collins");
        assert!(candidates[0]["similarity"].as_f64().unwrap() > 0.5);
        assert!(candidates[0]["distance"].as_f64().unwrap() < 0.6);
    } else {
        assert_eq!(v["decision"], "reject", "{v}");
        assert!(candidates.is_empty(), "{v}");
        assert!(
            v["reasons"].as_array().unwrap().contains(&json!("spoof")),
            "{v}"
        );
    }
    assert!(v["timings_ms"]["matching"].as_f64().unwrap() >= 0.0);

    // A person nobody enrolled: no candidate.
    let (status, v) = identify("t1.jpg", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["candidates"], json!([]), "{v}");
    assert_eq!(v["decision"], "reject");

    for bad in ["0", "101", "many"] {
        let (status, v) = identify("astronaut.png", Some(bad)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
    }
    s.stop().await;
}

/// Overload is shed, not queued: with one inference place and no queue, concurrent verifies
/// beyond it are answered at once with 503 `overloaded` and `Retry-After`, the others normally,
/// and the refusals are counted.
#[tokio::test]
async fn overload_is_refused_at_once_with_retry_after() {
    let mut config = Config::for_tests();
    config.max_inflight = 1;
    config.max_queue = Some(0);
    let s = Running::start(config).await;
    let id = s.create_subject("Eileen Collins").await;
    let (status, _) = s.enrol(&id, "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED);
    let requests = (0..6).map(|_| {
        let form = Form::new().text("subject", id.clone()).part(
            "image",
            Part::bytes(face("astronaut_640x480.jpg")).file_name("p.jpg"),
        );
        let req = s.client.post(s.url("/v1/verify")).multipart(form);
        async move {
            let started = std::time::Instant::now();
            let r = req.send().await.unwrap();
            let retry = r.headers().get("retry-after").cloned();
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            (status, retry, body, started.elapsed())
        }
    });
    let answers = futures::future::join_all(requests).await;
    let refused: Vec<_> = answers
        .iter()
        .filter(|a| a.0 == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    let served = answers.iter().filter(|a| a.0 == StatusCode::OK).count();
    assert!(served >= 1, "{answers:?}");
    assert!(
        !refused.is_empty(),
        "six at once with one place: {answers:?}"
    );
    for (_, retry, body, took) in &refused {
        assert_eq!(body["error"]["code"], "overloaded", "{body}");
        assert_eq!(retry.as_ref().map(|v| v.to_str().unwrap()), Some("1"));
        assert!(
            *took < std::time::Duration::from_secs(1),
            "refused slowly: {took:?}"
        );
    }
    let metrics = s.metrics().await;
    let rejected: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("facekey_admission_rejected_total{reason="))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(rejected, refused.len() as u64, "{metrics}");
    assert!(
        metrics.contains("facekey_admission_rejected_total{reason=\"queue_full\"}"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("facekey_inference_service_seconds ") && !l.ends_with(" 0")),
        "a finished inference sets the service time: {metrics}"
    );
    assert!(
        metrics.contains("facekey_admission_rejected_total{reason=\"over_capacity\"}"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("facekey_admission_offered_load ") && !l.ends_with(" 0")),
        "arrivals with a known service time give an offered load: {metrics}"
    );
    assert!(metrics.contains("facekey_inferences_in_flight 0"));
    s.stop().await;
}

/// The lockout ledger is read within an admitted place, never before it: with PostgreSQL that
/// read takes one of the ledger's few connections, and requests that fail cheaply right after
/// it (a junk image for a real subject) could otherwise exhaust them, and real attempts' failures
/// would be counted in one replica's memory instead of the shared ledger. With the only place
/// held, a verification of a locked subject is refused as overloaded (it used to read the ledger
/// first and answer `subject_locked`); once the place is free, the lock answers.
#[tokio::test]
async fn the_lockout_ledger_is_read_only_within_an_admitted_place() {
    let mut config = Config::for_tests();
    config.max_inflight = 1;
    config.max_queue = Some(0);
    config.lockout_attempts = 1;
    let s = Running::start(config).await;
    let locked = s.create_subject("Locked").await;
    let other = s.create_subject("Other").await;
    for id in [&locked, &other] {
        let (status, _) = s.enrol(id, "astronaut.png").await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let verify = |subject: &str, image: &str| {
        let form = Form::new()
            .text("subject", subject.to_owned())
            .part("image", Part::bytes(face(image)).file_name("p.jpg"));
        let req = s.client.post(s.url("/v1/verify")).multipart(form);
        async move {
            let r = req.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, v) = verify(&locked, "Tom_Hanks_54745.png").await;
    assert_eq!(
        (status, &v["decision"]),
        (StatusCode::OK, &json!("reject")),
        "{v}"
    );
    let (status, v) = verify(&locked, "astronaut.png").await;
    assert_eq!(error_code(&v), "subject_locked", "{status} {v}");

    // Hold the only place with another subject's verification, seen running in the metrics.
    let holding = tokio::spawn(verify(&other, "astronaut_640x480.jpg"));
    let mut running = false;
    for _ in 0..500 {
        if s.metrics().await.contains("facekey_inferences_in_flight 1") {
            running = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert!(running, "the holding verification never ran");
    let (status, v) = verify(&locked, "astronaut.png").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(error_code(&v), "overloaded", "{v}");
    let (status, _) = holding.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let (status, v) = verify(&locked, "astronaut.png").await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "subject_locked"),
        "{v}"
    );
    s.stop().await;
}

/// One key flooding the inference places does not shut out another key: the other key, within
/// its share, waits for the next place while the flood's excess is refused at once (429
/// `too_many_inferences`, `Retry-After`), so the other key's verifications keep being served.
#[tokio::test]
async fn a_flooding_key_leaves_places_to_another_key() {
    use facekey_runtime::auth::Scope;
    let dir = tempfile::tempdir().unwrap();
    let (keys_file, keys) = common::keys_file(
        dir.path(),
        "fair-api-keys",
        &[
            ("flood", Scope::Verify),
            ("small", Scope::Verify),
            ("admin", Scope::Admin),
        ],
    );
    let mut config = Config::for_tests();
    config.max_inflight = 2;
    config.max_queue = Some(8);
    config.api_keys_file = Some(keys_file);
    let s = Running::start(config).await;
    let admin = common::keyed_client(&keys["admin"]);
    let (status, v) = s
        .json(
            admin
                .post(s.url("/v1/subjects"))
                .json(&json!({ "name": "Eileen Collins" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let form = Form::new().part(
        "image",
        Part::bytes(face("astronaut.png")).file_name("astronaut.png"),
    );
    let (status, v) = s
        .json(
            admin
                .post(s.url(&format!("/v1/subjects/{id}/faces")))
                .multipart(form),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let verify = |client: reqwest::Client| {
        let form = Form::new().text("subject", id.clone()).part(
            "image",
            Part::bytes(face("astronaut_640x480.jpg")).file_name("p.jpg"),
        );
        let request = client.post(s.url("/v1/verify")).multipart(form);
        async move {
            let r = request.send().await.unwrap();
            let retry = r.headers().get("retry-after").cloned();
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            (status, retry, body)
        }
    };
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = common::keyed_client(&keys["flood"]);
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (done, flood) = (done.clone(), flood.clone());
            async move {
                let mut answers = Vec::new();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let answer = verify(flood.clone()).await;
                    if answer.0 != StatusCode::OK {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    answers.push(answer);
                }
                answers
            }
        })
        .collect();
    let small = common::keyed_client(&keys["small"]);
    let paced = async {
        // Let the flood hold every place first, and the start of this file's other tests
        // (loading and first running their models beside this one on two cores) pass: verifies
        // slowed by it wait past the queue-wait bound.
        tokio::time::sleep(std::time::Duration::from_millis(2_000)).await;
        let mut answers = Vec::new();
        for _ in 0..10 {
            answers.push(verify(small.clone()).await);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        answers
    };
    let (flooded, paced) = tokio::join!(futures::future::join_all(workers), paced);
    let flooded: Vec<_> = flooded.into_iter().flatten().collect();
    // Asking for little, the small key waits for the next place the flood gives back (a verify
    // may still run past the queue-wait bound on a slow machine: two of ten may fail).
    let served = paced.iter().filter(|a| a.0 == StatusCode::OK).count();
    assert!(
        served >= 8,
        "the small key was served {served} of 10 times: {:?}",
        paced
            .iter()
            .map(|a| (a.0, a.2["error"]["message"].clone()))
            .collect::<Vec<_>>()
    );
    assert!(
        paced
            .iter()
            .all(|a| a.2["error"]["code"] != "too_many_inferences"),
        "the small key never asked for more than its share"
    );
    let held_back: Vec<_> = flooded
        .iter()
        .filter(|a| a.0 == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(
        !held_back.is_empty(),
        "the flood was never held to its share"
    );
    for (_, retry, body) in &held_back {
        assert_eq!(body["error"]["code"], "too_many_inferences", "{body}");
        assert_eq!(retry.as_ref().map(|v| v.to_str().unwrap()), Some("1"));
    }
    assert!(
        flooded.iter().any(|a| a.0 == StatusCode::OK),
        "the flood keeps its share"
    );
    let metrics = s.metrics_as(&admin).await;
    assert!(
        common::metric(
            &metrics,
            "facekey_admission_rejected_total{reason=\"inference_share\"}"
        ) >= held_back.len() as f64,
        "{metrics}"
    );
    s.stop().await;
}

/// A crowd photo cannot multiply one request's model work: `/v1/liveness` analyses at most
/// `FACEKEY_MAX_FACES_PER_IMAGE` faces (the most confident) and counts the rest.
#[tokio::test]
async fn liveness_analyses_at_most_the_configured_number_of_faces() {
    let mut config = Config::for_tests();
    config.max_faces_per_image = 2;
    let s = Running::start(config).await;
    let form = Form::new().part("image", Part::bytes(face("t1.jpg")).file_name("t1.jpg"));
    let (status, v) = s
        .json(s.client.post(s.url("/v1/liveness")).multipart(form))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["faces_detected"], 6, "{v}");
    let faces = v["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 2);
    let c0 = faces[0]["confidence"].as_f64().unwrap();
    assert!(c0 >= faces[1]["confidence"].as_f64().unwrap());
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"facekey_liveness_checks_total{state="live"} "#),
        "{metrics}"
    );
    let checks: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("facekey_liveness_checks_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(checks, 2, "two faces judged, not six");
    s.stop().await;
}
