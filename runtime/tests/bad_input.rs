//! The bad-input matrix: every endpoint that takes an image or JSON, fed truncated, corrupt,
//! random and decompression-bomb images, wrong content types, invalid base64, deep and huge
//! JSON, out-of-range numbers, unicode, path-like and oversized ids, oversized multipart parts
//! and a slow client. Every answer must be a 4xx JSON error with a code, and the server must
//! keep serving throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{Running, error_code, face, metric, png_header_only, send_json};
use facekey_runtime::config::Config;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// A deterministic pseudo-random byte string (xorshift), so failures reproduce.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// The bad images, each with the status its answer must have.
fn bad_images() -> Vec<(&'static str, Vec<u8>, StatusCode)> {
    let jpeg = face("astronaut_640x480.jpg");
    let png = face("astronaut.png");
    let mut corrupt = jpeg.clone();
    for b in corrupt.iter_mut().skip(600).step_by(7) {
        *b = !*b;
    }
    let mut random_jpeg = b"\xff\xd8\xff\xe0".to_vec();
    random_jpeg.extend(noise(4096, 7));
    vec![
        ("empty", Vec::new(), StatusCode::UNPROCESSABLE_ENTITY),
        (
            "JPEG cut at half",
            jpeg[..jpeg.len() / 2].to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "JPEG without its last bytes",
            jpeg[..jpeg.len() - 2].to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "PNG cut at 90 %",
            png[..png.len() * 9 / 10].to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        ("JPEG with flipped bytes", corrupt, StatusCode::BAD_REQUEST),
        (
            "JPEG magic then noise",
            random_jpeg,
            StatusCode::BAD_REQUEST,
        ),
        (
            "random bytes",
            noise(10_000, 3),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "text",
            b"<html>not an image</html>".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "PNG bomb header 100k x 100k",
            png_header_only(100_000, 100_000),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "PNG bomb header 1 x 4 billion",
            png_header_only(1, u32::MAX / 2),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "PNG header of 0 x 0",
            png_header_only(0, 0),
            StatusCode::BAD_REQUEST,
        ),
    ]
}

/// Assert an error answer: the expected 4xx status and a JSON body with a code and a message.
fn assert_error(what: &str, status: StatusCode, v: &Value, want: StatusCode) {
    assert_eq!(status, want, "{what}: {v}");
    assert!(status.is_client_error(), "{what}: {status}");
    assert_ne!(error_code(v), "<none>", "{what}: not a JSON error: {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {v}"
    );
}

#[tokio::test]
async fn bad_images_on_every_image_endpoint_get_4xx_json() {
    let mut config = Config::for_tests();
    config.max_image_bytes = 1024 * 1024;
    let s = Running::start(config).await;
    let (_, subject) = send_json(
        s.client
            .post(s.url("/v1/subjects"))
            .json(&json!({ "name": "Matrix" })),
    )
    .await;
    let id = subject["id"].as_str().unwrap().to_owned();
    let (status, v) = send_json(
        s.client
            .post(s.url(&format!("/v1/subjects/{id}/faces")))
            .multipart(Form::new().part(
                "image",
                Part::bytes(face("astronaut.png")).file_name("a.png"),
            )),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");

    let endpoints = [
        "/v1/verify".to_owned(),
        "/v1/identify".to_owned(),
        "/v1/liveness".to_owned(),
        format!("/v1/subjects/{id}/faces"),
    ];
    let mut cases = bad_images();
    cases.push((
        "over FACEKEY_MAX_IMAGE_BYTES",
        noise(1024 * 1024 + 1, 5),
        StatusCode::PAYLOAD_TOO_LARGE,
    ));
    for path in &endpoints {
        for (what, bytes, want) in &cases {
            // As a multipart part.
            let mut form = Form::new().part("image", Part::bytes(bytes.clone()).file_name("x"));
            if path == "/v1/verify" {
                form = form.text("subject", id.clone());
            }
            let (status, v) = send_json(s.client.post(s.url(path)).multipart(form)).await;
            assert_error(&format!("{path} multipart {what}"), status, &v, *want);
            // As base64 JSON (the empty image is a missing field there: also 422).
            let mut body = json!({
                "image": base64::engine::general_purpose::STANDARD.encode(bytes)
            });
            if path == "/v1/verify" {
                body["subject"] = json!(id);
            }
            let (status, v) = send_json(s.client.post(s.url(path)).json(&body)).await;
            assert_error(&format!("{path} JSON {what}"), status, &v, *want);
        }
        // Wrong shapes of the request itself.
        let bad_requests: Vec<(&str, reqwest::RequestBuilder, StatusCode)> = vec![
            (
                "text/plain body",
                s.client
                    .post(s.url(path))
                    .header("content-type", "text/plain")
                    .body("hello"),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                "no content type",
                s.client.post(s.url(path)).body(face("astronaut.png")),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                "invalid base64",
                s.client
                    .post(s.url(path))
                    .json(&json!({ "image": "***not base64***", "subject": id })),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "image as a number",
                s.client
                    .post(s.url(path))
                    .json(&json!({ "image": 12, "subject": id })),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "broken JSON",
                s.client
                    .post(s.url(path))
                    .header("content-type", "application/json")
                    .body("{\"image\": \"abc"),
                StatusCode::BAD_REQUEST,
            ),
            (
                "multipart without the image part",
                s.client
                    .post(s.url(path))
                    .multipart(Form::new().text("subject", id.clone())),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "multipart declared, body not multipart",
                s.client
                    .post(s.url(path))
                    .header("content-type", "multipart/form-data; boundary=xyz")
                    .body("garbage without boundaries"),
                StatusCode::BAD_REQUEST,
            ),
        ];
        for (what, request, want) in bad_requests {
            let (status, v) = send_json(request).await;
            assert!(
                status.is_client_error() && error_code(&v) != "<none>",
                "{path} {what}: {status} {v}"
            );
            assert_eq!(status, want, "{path} {what}: {v}");
        }
    }
    s.assert_scores(&s.client).await;
    s.stop().await;
}

/// A liveness session's frames (issue 13's `/frames` route) get the same matrix: every bad
/// image as a JSON base64 frame and as a multipart frame, and the wrong shapes of a frames
/// request. Each is a 4xx JSON error that consumes nothing: the session then takes a good frame
/// as its first.
#[tokio::test]
async fn bad_frames_get_4xx_json_and_consume_nothing() {
    let mut config = Config::for_tests();
    config.max_image_bytes = 1024 * 1024;
    let s = Running::start(config).await;
    let (status, opened) = send_json(
        s.client
            .post(s.url("/v1/liveness/sessions"))
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    let frames = s.url(&format!(
        "/v1/liveness/sessions/{}/frames",
        opened["id"].as_str().unwrap()
    ));
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut cases = bad_images();
    cases.push((
        "over FACEKEY_MAX_IMAGE_BYTES",
        noise(1024 * 1024 + 1, 5),
        StatusCode::PAYLOAD_TOO_LARGE,
    ));
    for (what, bytes, want) in &cases {
        let form = Form::new()
            .text("timestamp_ms", "1")
            .part("frame", Part::bytes(bytes.clone()).file_name("f"));
        let (status, v) = send_json(s.client.post(&frames).multipart(form)).await;
        assert_error(&format!("frames multipart {what}"), status, &v, *want);
        let body = json!({"frames": [{"image": b64(bytes), "timestamp_ms": 1}]});
        let (status, v) = send_json(s.client.post(&frames).json(&body)).await;
        assert_error(&format!("frames JSON {what}"), status, &v, *want);
    }
    // A good frame behind a bad one: the whole call is refused.
    let good = face("astronaut_640x480.jpg");
    let body = json!({"frames": [
        {"image": b64(&good), "timestamp_ms": 1},
        {"image": b64(&good[..good.len() / 2]), "timestamp_ms": 2},
    ]});
    let (status, v) = send_json(s.client.post(&frames).json(&body)).await;
    assert_error(
        "a good frame then a cut one",
        status,
        &v,
        StatusCode::BAD_REQUEST,
    );
    let part = || Part::bytes(good.clone()).file_name("f.jpg");
    let shapes: Vec<(&str, reqwest::RequestBuilder, StatusCode)> = vec![
        (
            "text/plain body",
            s.client
                .post(&frames)
                .header("content-type", "text/plain")
                .body("hello"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "broken JSON",
            s.client
                .post(&frames)
                .header("content-type", "application/json")
                .body("{\"frames\": [{\"image\": \"abc"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "frames not a list",
            s.client
                .post(&frames)
                .json(&json!({"frames": {"image": "aGk="}})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "no timestamp",
            s.client
                .post(&frames)
                .json(&json!({"frames": [{"image": b64(&good)}]})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "timestamp beyond what a JSON reader holds exactly (2^53)",
            s.client.post(&frames).json(&json!({"frames": [
                {"image": b64(&good), "timestamp_ms": 1_u64 << 53}
            ]})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "multipart timestamp beyond 2^53 - 1",
            s.client.post(&frames).multipart(
                Form::new()
                    .text("timestamp_ms", "9223372036854775808")
                    .part("frame", part()),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "timestamp beyond u64",
            s.client.post(&frames).json(&json!({"frames": [
                {"image": b64(&good), "timestamp_ms": 1e30}
            ]})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "an unknown field",
            s.client.post(&frames).json(&json!({"frames": [
                {"image": b64(&good), "timestamp_ms": 1, "live": true}
            ]})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "multipart frame without its timestamp",
            s.client.post(&frames).multipart(
                Form::new()
                    .part("frame", part())
                    .text("timestamp_ms", "1")
                    .part("frame", part()),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "multipart timestamp without its frame",
            s.client.post(&frames).multipart(
                Form::new()
                    .text("timestamp_ms", "1")
                    .text("timestamp_ms", "2")
                    .part("frame", part()),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "multipart timestamp not a number",
            s.client.post(&frames).multipart(
                Form::new()
                    .text("timestamp_ms", "soon")
                    .part("frame", part()),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "multipart unknown part",
            s.client.post(&frames).multipart(
                Form::new()
                    .text("timestamp_ms", "1")
                    .part("frame", part())
                    .text("live", "true"),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "multipart without a frame",
            s.client
                .post(&frames)
                .multipart(Form::new().text("timestamp_ms", "1")),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "multipart declared, body not multipart",
            s.client
                .post(&frames)
                .header("content-type", "multipart/form-data; boundary=xyz")
                .body("garbage without boundaries"),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (what, request, want) in shapes {
        let (status, v) = send_json(request).await;
        assert_error(&format!("frames {what}"), status, &v, want);
    }
    let body = json!({"frames": [{"image": b64(&good), "timestamp_ms": 1}]});
    let (status, v) = send_json(s.client.post(&frames).json(&body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        v["frames_received"], 1,
        "a refused call consumed frames: {v}"
    );
    assert_eq!(v["state"], "in_progress", "{v}");
    s.assert_scores(&s.client).await;
    s.stop().await;
}

#[tokio::test]
async fn bad_json_numbers_and_ids_get_4xx_json() {
    let mut config = Config::for_tests();
    config.max_body_bytes = 256 * 1024;
    let s = Running::start(config).await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let huge = format!("{{\"features\":[{}]}}", vec!["0.5"; 100_000].join(","));
    let json_cases: Vec<(&str, &str, String, StatusCode)> = vec![
        (
            "score: deep nesting",
            "/v1/score",
            format!("{{\"features\":{deep}}}"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "score: body over the limit",
            "/v1/score",
            huge,
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "score: 1e999",
            "/v1/score",
            "{\"features\":[1e999,0,0]}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "score: string feature",
            "/v1/score",
            "{\"features\":[\"1\",0,0]}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "score: two features",
            "/v1/score",
            "{\"features\":[1,0]}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "score: unknown field",
            "/v1/score",
            "{\"features\":[1,0,0],\"x\":1}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "score: not an object",
            "/v1/score",
            "[1,2,3]".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "score: empty body",
            "/v1/score",
            String::new(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "subject: empty name",
            "/v1/subjects",
            "{\"name\":\"\"}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "subject: 100 kB name",
            "/v1/subjects",
            format!("{{\"name\":\"{}\"}}", "n".repeat(100_000)),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "subject: control characters",
            "/v1/subjects",
            "{\"name\":\"a\\u0000b\"}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "subject: name is null",
            "/v1/subjects",
            "{\"name\":null}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "subject: deep nesting",
            "/v1/subjects",
            format!("{{\"name\":{deep}}}"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        // A repeated key is refused, not resolved to its last value (a gateway reading the
        // first `subject` would otherwise disagree with the server).
        (
            "verify: subject twice",
            "/v1/verify",
            "{\"subject\":\"a\",\"subject\":\"b\",\"image\":\"aGk=\"}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "identify: image twice",
            "/v1/identify",
            "{\"image\":\"aGk=\",\"image\":\"aGk=\"}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "subject: name twice",
            "/v1/subjects",
            "{\"name\":\"a\",\"name\":\"b\"}".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (what, path, body, want) in json_cases {
        let (status, v) = send_json(
            s.client
                .post(s.url(path))
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
        assert_error(what, status, &v, want);
    }
    for (what, form) in [
        (
            "verify: subject part twice",
            Form::new().text("subject", "a").text("subject", "b").part(
                "image",
                Part::bytes(face("astronaut_640x480.jpg")).file_name("a"),
            ),
        ),
        (
            "verify: image part twice",
            Form::new()
                .text("subject", "a")
                .part(
                    "image",
                    Part::bytes(face("astronaut_640x480.jpg")).file_name("a"),
                )
                .part(
                    "image",
                    Part::bytes(face("astronaut_640x480.jpg")).file_name("b"),
                ),
        ),
    ] {
        let (status, v) = send_json(s.client.post(s.url("/v1/verify")).multipart(form)).await;
        assert_error(what, status, &v, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(v.to_string().contains("duplicate part"), "{what}: {v}");
    }

    // Ids: unicode, path-like, encoded, over-long: 404 (or 422) JSON, never a 5xx or a path.
    let long = "x".repeat(5000);
    let ids = [
        "%F0%9F%92%A5",
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e",
        "a%00b",
        "null",
        long.as_str(),
        "%20",
        // Not UTF-8 once decoded.
        "%ff",
        "%C3%28",
    ];
    for id in ids {
        for (method, path) in [
            (reqwest::Method::GET, format!("/v1/subjects/{id}")),
            (reqwest::Method::DELETE, format!("/v1/subjects/{id}")),
            (
                reqwest::Method::DELETE,
                format!("/v1/subjects/{id}/faces/{id}"),
            ),
        ] {
            let (status, v) = send_json(s.client.request(method.clone(), s.url(&path))).await;
            assert!(
                matches!(
                    status,
                    StatusCode::NOT_FOUND | StatusCode::UNPROCESSABLE_ENTITY
                ),
                "{method} {path}: {status} {v}"
            );
            assert_ne!(error_code(&v), "<none>", "{method} {path}: {v}");
        }
        let (status, v) = send_json(
            s.client
                .patch(s.url(&format!("/v1/subjects/{id}")))
                .json(&json!({ "name": "x" })),
        )
        .await;
        assert!(status.is_client_error(), "PATCH {id}: {status} {v}");
        let (status, v) = send_json(s.client.post(s.url("/v1/verify")).multipart(
            Form::new().text("subject", id.to_owned()).part(
                "image",
                Part::bytes(face("astronaut_640x480.jpg")).file_name("a"),
            ),
        ))
        .await;
        assert!(status.is_client_error(), "verify {id}: {status} {v}");
        // The same ids as liveness sessions: looked up, fed, verified with, or bound to.
        let frame = json!({"frames": [{"image": "aGk=", "timestamp_ms": 1}]});
        for (what, request) in [
            (
                "session",
                s.client.get(s.url(&format!("/v1/liveness/sessions/{id}"))),
            ),
            (
                "frames",
                s.client
                    .post(s.url(&format!("/v1/liveness/sessions/{id}/frames")))
                    .json(&frame),
            ),
            (
                "verify with session",
                s.client
                    .post(s.url("/v1/verify"))
                    .json(&json!({"session": id})),
            ),
            (
                "session bound to subject",
                s.client
                    .post(s.url("/v1/liveness/sessions"))
                    .json(&json!({"subject": id})),
            ),
        ] {
            let (status, v) = send_json(request).await;
            assert!(
                status.is_client_error() && error_code(&v) != "<none>",
                "{what} {id}: {status} {v}"
            );
        }
    }
    // Query parameters out of range.
    for q in [
        "limit=0",
        "limit=-1",
        "limit=1e9",
        "limit=abc",
        "after=%00",
        "limit=1001",
    ] {
        let (status, v) = send_json(s.client.get(s.url(&format!("/v1/subjects?{q}")))).await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::OK,
            "list ?{q}: {status} {v}"
        );
        if status != StatusCode::OK {
            assert_ne!(error_code(&v), "<none>", "?{q}: {v}");
        }
    }
    for limit in ["0", "101", "-3", "x"] {
        let form = Form::new().text("limit", limit).part(
            "image",
            Part::bytes(face("astronaut_640x480.jpg")).file_name("a"),
        );
        let (status, v) = send_json(s.client.post(s.url("/v1/identify")).multipart(form)).await;
        assert_error(
            &format!("identify limit={limit}"),
            status,
            &v,
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    s.assert_scores(&s.client).await;
    s.stop().await;
}

/// A JSON image body's fields other than `image` are strings, numbers or booleans: an array or
/// object is refused (422 `invalid_request` naming the field) at its first `[` or `{`, without
/// parsing the rest of the body, on every route that takes an image. A body whose nested array
/// runs on for megabytes and is then cut off shows it: read to its end it would be 400
/// `invalid_json`. More than 16 fields besides the image are refused too.
#[tokio::test]
async fn json_image_bodies_refuse_nested_fields_at_their_first_bracket() {
    let s = Running::start(Config::for_tests()).await;
    let id = s.new_subject("Nested").await;
    let endpoints = [
        "/v1/verify".to_owned(),
        "/v1/identify".to_owned(),
        "/v1/liveness".to_owned(),
        format!("/v1/subjects/{id}/faces"),
    ];
    // 4 MB of array after `"x":[`, and no end.
    let cut_off = |head: &str| format!("{head}{}", "0,".repeat(2_000_000));
    let many: String = (0..17).map(|i| format!(",\"f{i}\":{i}")).collect();
    for path in &endpoints {
        let head = format!(r#"{{"subject":"{id}","image":"aGk=","x":"#);
        let cases = [
            ("array field", format!("{head}[1]}}"), "field `x` must be"),
            ("object field", format!("{head}{{}}}}"), "field `x` must be"),
            (
                "cut-off 4 MB array",
                cut_off(&format!("{head}[")),
                "field `x` must be",
            ),
            (
                "cut-off 4 MB object",
                cut_off(&format!("{head}{{")),
                "field `x` must be",
            ),
            (
                "cut-off 4 MB image array",
                cut_off(r#"{"image":["#),
                "field `image` must be",
            ),
            (
                "17 fields",
                format!(r#"{{"image":"aGk="{many}}}"#),
                "too many fields",
            ),
        ];
        for (what, body, message) in cases {
            let (status, v) = send_json(
                s.client
                    .post(s.url(path))
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await;
            assert_eq!(
                (status, error_code(&v)),
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
                "{path} {what}: {v}"
            );
            assert!(
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(message)),
                "{path} {what}: {v}"
            );
        }
    }
    s.assert_scores(&s.client).await;
    s.stop().await;
}

/// `/v1/score` refuses a batch longer than `FACEKEY_MAX_BATCH` (422 `invalid_request` naming
/// the setting) as the first row too many starts: a well-formed 2-million-row body, and one
/// cut off after its 2 millionth row, which read to its end would be 400 `invalid_json`. A
/// batch of exactly the limit is scored.
#[tokio::test]
async fn score_batches_are_refused_at_their_first_row_past_the_limit() {
    let mut config = Config::for_tests();
    config.max_batch = 64;
    config.max_body_bytes = 24 * 1024 * 1024;
    config.max_body_memory_bytes = 32 * 1024 * 1024;
    let s = Running::start(config).await;
    // 8 bytes a row: 2 million rows are 16 MB, within the 24 MiB body limit.
    let rows = |n: usize| vec!["[0,0,0]"; n].join(",");
    let (status, v) = s
        .post_json("/v1/score", &format!(r#"{{"batch":[{}]}}"#, rows(64)))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["results"].as_array().unwrap().len(), 64, "{v}");
    let big = rows(2_000_000);
    for (what, body) in [
        ("65 rows", format!(r#"{{"batch":[{}]}}"#, rows(65))),
        ("2M rows", format!(r#"{{"batch":[{big}]}}"#)),
        ("2M rows cut off", format!(r#"{{"batch":[{big},[0.5"#)),
    ] {
        let started = std::time::Instant::now();
        let (status, v) = s.post_json("/v1/score", &body).await;
        assert_eq!(
            (status, error_code(&v)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            "{what}: {v}"
        );
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("the limit is 64 (FACEKEY_MAX_BATCH)"),
            "{what}: {message}"
        );
        eprintln!("{what}: answered in {:?}", started.elapsed());
    }
    s.assert_scores(&s.client).await;
    s.stop().await;
}

/// Start a request to `/v1/score` declaring `declared` (a length, or chunked when `None`) and
/// send only a little of its body, so its handler holds its reservation while it waits.
async fn held_upload(
    s: &Running,
    key: Option<&str>,
    declared: Option<usize>,
) -> tokio::net::TcpStream {
    match declared {
        Some(n) => {
            let framing = format!("content-length: {n}\r\n");
            s.open_request("/v1/score", key, "application/json", &framing, b"{\"fea")
                .await
        }
        None => {
            let framing = "transfer-encoding: chunked\r\n";
            s.open_request(
                "/v1/score",
                key,
                "application/json",
                framing,
                b"5\r\n{\"fea\r\n",
            )
            .await
        }
    }
}

/// Request bodies held at once are bounded (`FACEKEY_MAX_BODY_MEMORY_BYTES`): a request whose
/// declared body does not fit beside the ones being received is answered 503 `overloaded` at
/// once, a chunked one reserves the whole body limit, requests without a body are served, the
/// room comes back when a request ends, and a caller without a key reserves nothing.
#[tokio::test]
async fn request_bodies_held_at_once_are_bounded() {
    let mut config = Config::for_tests();
    config.max_body_bytes = 256 * 1024;
    config.max_body_memory_bytes = 256 * 1024;
    let s = Running::start(config).await;
    let key = s.keys["admin"].clone();
    // 100 kB: a valid request padded with whitespace.
    let small = || {
        s.client
            .post(s.url("/v1/score"))
            .header("content-type", "application/json")
            .body(format!(
                "{{\"features\": [1, 0.5, -1]}}{}",
                " ".repeat(100_000)
            ))
    };
    // Callers without a key are refused before their body is reserved or read.
    let mut anonymous = held_upload(&s, None, Some(250_000)).await;
    let mut answer = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut anonymous, &mut answer)
        .await
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 401");
    assert_eq!(metric(&s.metrics().await, "facekey_body_memory_bytes"), 0.0);
    let (status, v) = send_json(small()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    drop(anonymous);

    let held = held_upload(&s, Some(&key), Some(200_000)).await;
    let mut refused = None;
    for _ in 0..750 {
        let text = s.metrics().await;
        if metric(&text, "facekey_body_memory_bytes") > 0.0 {
            assert_eq!(
                metric(&text, "facekey_body_memory_bytes"),
                196.0 * 1024.0,
                "200000 bytes in whole KiB"
            );
            let r = small().send().await.unwrap();
            refused = Some((
                r.status(),
                r.headers().get("retry-after").cloned(),
                r.json::<Value>().await.unwrap(),
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, retry, v) = refused.expect("the held upload never reserved its body");
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        "{v}"
    );
    assert_eq!(retry.unwrap(), "1");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("FACEKEY_MAX_BODY_MEMORY_BYTES"),
        "{v}"
    );
    // Requests without a body are served meanwhile.
    let (status, v) = send_json(s.client.get(s.url("/v1/subjects"))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let text = s.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"facekey_admission_rejected_total{reason="body_memory"}"#
        ),
        1.0
    );
    // The client going away gives the room back.
    drop(held);
    let mut served = false;
    for _ in 0..750 {
        let (status, _) = send_json(small()).await;
        if status == StatusCode::OK {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "the room never came back");
    // A chunked body declares no length: it reserves the whole body limit.
    let chunked = held_upload(&s, Some(&key), None).await;
    let mut seen = false;
    for _ in 0..750 {
        if metric(&s.metrics().await, "facekey_body_memory_bytes") == 256.0 * 1024.0 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "the chunked upload did not reserve the body limit");
    let (status, v) = send_json(
        s.client
            .post(s.url("/v1/score"))
            .json(&json!({ "features": [1, 0.5, -1] })),
    )
    .await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        "{v}"
    );
    drop(chunked);
    for _ in 0..750 {
        if metric(&s.metrics().await, "facekey_body_memory_bytes") == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.assert_scores(&s.client).await;
    s.stop().await;
}

#[tokio::test]
async fn a_body_budget_below_the_body_limit_refuses_to_start() {
    let mut config = Config::for_tests();
    config.max_body_bytes = 1024 * 1024;
    config.max_body_memory_bytes = 512 * 1024;
    let err = match facekey_runtime::server::Server::bind(config).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started with a body budget below the body limit"),
    };
    assert!(
        err.contains("FACEKEY_MAX_BODY_MEMORY_BYTES") && err.contains("FACEKEY_MAX_BODY_BYTES"),
        "{err}"
    );
}

#[tokio::test]
async fn oversized_bodies_and_slow_clients_do_not_stop_the_server() {
    let mut config = Config::for_tests();
    config.max_body_bytes = 512 * 1024;
    config.request_timeout_secs = 2;
    config.header_read_timeout_secs = 1;
    let s = Running::start(config).await;
    // A multipart part larger than the whole body limit.
    let form = Form::new().part("image", Part::bytes(noise(600 * 1024, 9)).file_name("big"));
    let (status, v) = send_json(s.client.post(s.url("/v1/liveness")).multipart(form)).await;
    assert_error("oversized part", status, &v, StatusCode::PAYLOAD_TOO_LARGE);
    // A body larger than its declared length is cut at the declared length; a declared length
    // over the limit is refused before it is read.
    let (status, v) = send_json(
        s.client
            .post(s.url("/v1/score"))
            .header("content-type", "application/json")
            .body(vec![b' '; 600 * 1024]),
    )
    .await;
    assert_error(
        "body over the limit",
        status,
        &v,
        StatusCode::PAYLOAD_TOO_LARGE,
    );

    // Slow clients: one sends half its headers and stalls, one sends its body a byte at a time.
    let key = s.keys["admin"].clone();
    let mut stalled = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    stalled
        .write_all(b"POST /v1/score HTTP/1.1\r\nhost: x\r\ncontent-ty")
        .await
        .unwrap();
    let mut trickle = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let body = br#"{"features":[1,0.5,-1]}"#;
    trickle
        .write_all(
            format!(
                "POST /v1/score HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        for b in body {
            if trickle.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        trickle
    });
    // Meanwhile everyone else is served.
    for _ in 0..5 {
        s.assert_scores(&s.client).await;
    }
    // The trickling request runs into the request timeout: a 503 JSON answer, not a hang.
    let mut trickle = writer.await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut trickle, &mut answer),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("\"timeout\""),
        "{answer}"
    );
    // The client that never finished its headers was cut off by the header-read timeout.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut stalled, &mut rest),
    )
    .await;
    assert!(
        closed.is_ok(),
        "a stalled client still holds its connection"
    );
    s.assert_scores(&s.client).await;
    s.stop().await;
}

#[tokio::test]
async fn idle_connections_beyond_the_limit_wait_and_are_cut_off() {
    let mut config = Config::for_tests();
    config.max_connections = 2;
    config.header_read_timeout_secs = 1;
    // Idle keep-alive connections (the harness client's pooled one) close after 2 s.
    config.request_timeout_secs = 1;
    let s = Running::start(config).await;
    // Two connections that send nothing take every place ...
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(tokio::net::TcpStream::connect(s.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ... so a new connection (not the harness client's pooled one) waits in the backlog until
    // the header-read timeout frees a place, and is then served.
    let fresh = common::keyed_client(&s.keys["admin"]);
    let started = std::time::Instant::now();
    let (status, v) = send_json(
        fresh
            .post(s.url("/v1/score"))
            .json(&json!({ "features": [1, 0.5, -1] })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "served at once with every place taken ({waited:?})"
    );
    assert!(
        s.metrics().await.contains("facekey_http_connections "),
        "connection gauge missing"
    );
    drop(idle);
    s.stop().await;
}

/// An HTTP/2 connection open at `addr`: its request sender, and its task (it answers the
/// server's keep-alive PINGs, as any HTTP/2 client does, and ends when the connection closes).
async fn h2c(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    (send, tokio::spawn(conn))
}

/// `GET /readyz` over an HTTP/2 connection: its status.
async fn h2_ready(
    send: &mut hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    addr: std::net::SocketAddr,
) -> u16 {
    let request = http::Request::get(format!("http://{addr}/readyz"))
        .body(http_body_util::Empty::new())
        .unwrap();
    send.send_request(request).await.unwrap().status().as_u16()
}

/// HTTP/2 connections that send no request are closed after the idle timeout although they
/// are never silent (the server PINGs them every header-read timeout and the client answers),
/// so idle HTTP/2 clients without a key cannot hold every connection place; a connection that
/// keeps sending requests stays open, and once the idle one is gone a new client is served.
#[tokio::test]
async fn idle_http2_connections_that_answer_pings_are_closed() {
    let mut config = Config::for_tests();
    config.max_connections = 2;
    // PINGs every second; idle after 2 s (twice the request timeout).
    config.header_read_timeout_secs = 1;
    config.request_timeout_secs = 1;
    let s = Running::start(config).await;
    // Both places: one connection kept busy, one idle after its first request.
    let (mut busy, busy_task) = h2c(s.addr).await;
    let (mut idle, idle_task) = h2c(s.addr).await;
    assert_eq!(h2_ready(&mut busy, s.addr).await, 200);
    assert_eq!(h2_ready(&mut idle, s.addr).await, 200);
    let started = std::time::Instant::now();
    while !idle_task.is_finished() && started.elapsed() < Duration::from_secs(10) {
        assert_eq!(h2_ready(&mut busy, s.addr).await, 200);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        idle_task.is_finished(),
        "an HTTP/2 connection without requests is still open after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed before the idle timeout ({:?})",
        started.elapsed()
    );
    assert!(!busy_task.is_finished(), "the busy connection was closed");
    // The idle connection's place serves a new client at once.
    let fresh = common::keyed_client(&s.keys["admin"]);
    let (status, v) = tokio::time::timeout(
        Duration::from_secs(2),
        send_json(
            fresh
                .post(s.url("/v1/score"))
                .json(&json!({ "features": [1, 0.5, -1] })),
        ),
    )
    .await
    .expect("no place for a new client");
    assert_eq!(status, StatusCode::OK, "{v}");
    drop((busy, idle));
    s.stop().await;
}

/// Write `bytes` one at a time to `stream`, each followed by `pause` looking for the server
/// closing it: how long after the start it was closed, `None` if it never was.
async fn trickle_until_cut(
    stream: &mut tokio::net::TcpStream,
    bytes: impl Iterator<Item = u8>,
    pause: Duration,
) -> Option<Duration> {
    let started = std::time::Instant::now();
    for b in bytes {
        if stream.write_all(&[b]).await.is_err() {
            return Some(started.elapsed());
        }
        let mut probe = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(pause, tokio::io::AsyncReadExt::read(stream, &mut probe)).await
        {
            return Some(started.elapsed());
        }
    }
    None
}

/// A runtime with one connection place, closing idle connections after 2 s (twice the request
/// timeout), its start-up client's connection gone: the place is free for the test's client.
async fn one_place() -> Running {
    let mut config = Config::for_tests();
    config.max_connections = 1;
    config.header_read_timeout_secs = 1;
    config.request_timeout_secs = 1;
    let s = Running::start(config).await;
    // The harness's pooled keep-alive connection idles out within 2 to 4 s.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    s
}

/// Whether a new client gets an answer within `within`: the one place has been freed.
async fn a_new_client_is_served(s: &Running, within: Duration) -> bool {
    let fresh = common::keyed_client(&s.keys["admin"]);
    tokio::time::timeout(within, fresh.get(s.url("/healthz")).send())
        .await
        .is_ok_and(|r| r.is_ok_and(|r| r.status() == StatusCode::OK))
}

/// An HTTP/2 client that opens no flow-control window (SETTINGS_INITIAL_WINDOW_SIZE 0) gets
/// its answer's headers but never its body, while it acknowledges the server's PINGs: the answer
/// that cannot go out does not keep the connection, which is closed after the idle timeout and
/// frees its place. Before, it held the place for good (1024 such clients, without a key, every
/// place).
#[tokio::test]
async fn an_http2_answer_the_client_never_takes_does_not_hold_a_place() {
    let s = one_place().await;
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(0)
            .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let request = http::Request::get(format!("http://{}/healthz", s.addr))
        .body(http_body_util::Empty::new())
        .unwrap();
    // The headers arrive; the body, never read, cannot.
    let response = send.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        a_new_client_is_served(&s, Duration::from_secs(10)).await,
        "the stalled HTTP/2 answer still holds the only place"
    );
    assert!(conn.is_finished(), "the stalled connection is still open");
    drop(response);
    s.stop().await;
}

/// An HTTP/1.1 client that pipelines requests and never reads the answers stops the server's
/// writes (and with them its reads): the connection is closed after the idle timeout, not kept.
#[tokio::test]
async fn an_http1_client_that_never_reads_does_not_hold_a_place() {
    let s = one_place().await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(s.addr).await.unwrap();
    let pipelined = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n".repeat(20_000);
    let writer = tokio::spawn(async move {
        let _ = stream.write_all(&pipelined).await;
        // Never read; keep the socket open.
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(stream);
    });
    assert!(
        a_new_client_is_served(&s, Duration::from_secs(10)).await,
        "the client that never reads still holds the only place"
    );
    writer.abort();
    s.stop().await;
}

/// The HTTP/2 preface trickled a byte at a time, each within the idle timeout, is cut off: a
/// protocol still not told apart after the header-read timeout closes the connection.
#[tokio::test]
async fn a_trickled_http2_preface_is_cut_off() {
    let mut config = Config::for_tests();
    config.header_read_timeout_secs = 1;
    config.request_timeout_secs = 2;
    let s = Running::start(config).await;
    let mut trickle = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let cut_after = trickle_until_cut(
        &mut trickle,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".iter().copied(),
        Duration::from_millis(800),
    )
    .await
    .expect("a trickled preface kept its connection");
    assert!(
        cut_after < Duration::from_secs(7),
        "cut off only after {cut_after:?}"
    );
    s.stop().await;
}

/// A client that keeps sending header bytes, slowly enough never to finish them, is cut off by
/// the header-read timeout although its connection is never silent (the idle timeout alone
/// would keep it), within two header-read timeouts; a keep-alive connection that waits
/// between requests is closed the same way, after its answered request.
#[tokio::test]
async fn headers_trickled_past_the_header_read_timeout_are_cut_off() {
    let mut config = Config::for_tests();
    config.header_read_timeout_secs = 1;
    config.request_timeout_secs = 30;
    let s = Running::start(config).await;
    let mut trickle = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let cut_after = trickle_until_cut(
        &mut trickle,
        b"POST /v1/score HTTP/1.1\r\nhost: x\r\nx-padding: "
            .iter()
            .copied()
            .cycle()
            .take(60),
        Duration::from_millis(250),
    )
    .await
    .expect("a client trickling its headers for 15 s is still connected");
    assert!(
        cut_after >= Duration::from_millis(900) && cut_after < Duration::from_millis(3500),
        "cut off after {cut_after:?} (header-read timeout 1 s)"
    );
    s.assert_scores(&s.client).await;
    s.stop().await;
}

/// A busy connection is closed gracefully once it reaches `FACEKEY_MAX_CONNECTION_AGE_SECS`
/// (90 to 110 % of it), so a client reconnects and a Service spreads it over the replicas there
/// are now: over HTTP/2 every request sent before the server's GOAWAY is answered, then the
/// connection ends; over HTTP/1.1 the last response says `connection: close` and the server
/// closes after it. Neither closes before its age, busy as both are.
#[tokio::test]
async fn busy_connections_are_closed_gracefully_at_their_age() {
    let mut config = Config::for_tests();
    config.max_connection_age_secs = 2;
    let s = Running::start(config).await;
    let (mut h2, h2_task) = h2c(s.addr).await;
    let mut h1 = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let started = std::time::Instant::now();
    let (mut h2_answered, mut h1_closed_at) = (0, None);
    while started.elapsed() < Duration::from_secs(6)
        && (h1_closed_at.is_none() || !h2_task.is_finished())
    {
        if !h2_task.is_finished() {
            let request = http::Request::get(format!("http://{}/readyz", s.addr))
                .body(http_body_util::Empty::new())
                .unwrap();
            // Refused by the client once the GOAWAY arrived; never failed once sent.
            if let Ok(response) = h2.send_request(request).await {
                assert_eq!(response.status(), 200);
                h2_answered += 1;
            }
        }
        if h1_closed_at.is_none() {
            // Closed while idle between requests: at once, before any answer (as an idle
            // keep-alive connection may be closed at any time).
            let sent = h1
                .write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n")
                .await;
            let Some(head) = read_response_head(&mut h1).await.filter(|_| sent.is_ok()) else {
                h1_closed_at = Some(started.elapsed());
                continue;
            };
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            if head.to_ascii_lowercase().contains("connection: close") {
                let mut rest = Vec::new();
                let eof = tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::io::AsyncReadExt::read_to_end(&mut h1, &mut rest),
                )
                .await;
                assert!(
                    matches!(eof, Ok(Ok(_))),
                    "not closed after `connection: close`"
                );
                h1_closed_at = Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let h1_closed_at = h1_closed_at.expect("the HTTP/1.1 connection was never closed");
    assert!(
        h2_task.is_finished(),
        "the HTTP/2 connection was never closed"
    );
    assert!(h2_answered >= 10, "{h2_answered} HTTP/2 requests answered");
    assert!(
        (Duration::from_millis(1700)..Duration::from_secs(4)).contains(&h1_closed_at),
        "HTTP/1.1 closed after {h1_closed_at:?}"
    );
    s.stop().await;
}

/// The status line and headers of the next response on `conn` (its body, by
/// `content-length`, read and dropped); `None` when the connection ends before it starts.
async fn read_response_head(conn: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte).await {
            Ok(0) | Err(_) if buf.is_empty() => return None,
            Ok(1) => buf.push(byte[0]),
            other => panic!("a response cut short: {other:?} after {buf:?}"),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).await.unwrap();
    Some(head)
}

/// A `session` field stands in for the image only where a session is taken (verify,
/// identify): elsewhere a body with no image is 422 `invalid_request` "missing image" before any
/// work, JSON and multipart alike. Multipart bodies hold at most 16 fields besides the image,
/// as JSON bodies do.
#[tokio::test]
async fn only_verify_and_identify_take_a_session_for_the_image_and_multipart_fields_are_bounded() {
    let s = Running::start(Config::for_tests()).await;
    let id = s.new_subject("Stray").await;
    let refused = |status: StatusCode, v: &Value, what: &str, message: &str| {
        assert_eq!(
            (status, error_code(v)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            "{what}: {v}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(message)),
            "{what}: {v}"
        );
    };
    for path in [
        "/v1/liveness".to_owned(),
        format!("/v1/subjects/{id}/faces"),
    ] {
        let (status, v) = send_json(
            s.client
                .post(s.url(&path))
                .json(&serde_json::json!({"session": "x"})),
        )
        .await;
        refused(status, &v, &format!("{path} JSON"), "missing image");
        let form = reqwest::multipart::Form::new().text("session", "x");
        let (status, v) = send_json(s.client.post(s.url(&path)).multipart(form)).await;
        refused(status, &v, &format!("{path} multipart"), "missing image");
    }
    // On verify the session is looked up instead: an unknown one is not a missing image.
    let (status, v) = send_json(
        s.client
            .post(s.url("/v1/verify"))
            .json(&serde_json::json!({"subject": id, "session": "x"})),
    )
    .await;
    assert_ne!(error_code(&v), "invalid_request", "{status} {v}");

    let mut form = reqwest::multipart::Form::new()
        .part("image", reqwest::multipart::Part::bytes(b"hi".to_vec()));
    for i in 0..17 {
        form = form.text(format!("f{i}"), i.to_string());
    }
    let (status, v) = send_json(s.client.post(s.url("/v1/liveness")).multipart(form)).await;
    refused(status, &v, "17 multipart fields", "too many fields");
    s.assert_scores(&s.client).await;
    s.stop().await;
}
