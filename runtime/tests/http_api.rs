//! End-to-end tests of the HTTP API over real sockets: the score endpoint, health, metrics and
//! every kind of bad input, each followed by proof that the server still serves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Running;
use facekey_runtime::config::Config;
use facekey_runtime::server::Server;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Still serving: a valid score request answers 200.
async fn assert_alive(s: &Running) {
    let (status, v) = s.post_json("/v1/score", r#"{"features":[1,0.5,-1]}"#).await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!msg.is_empty(), "error without a message: {body}");
}

#[tokio::test]
async fn score_reproduces_the_worked_example_with_layers() {
    let s = Running::start(Config::for_tests()).await;
    let (status, v) = s
        .post_json(
            "/v1/score",
            r#"{"features":[1,0.5,-1],"include_layers":true}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let p = v["probability"].as_f64().unwrap();
    assert!((p - 0.768_524_783_5).abs() < 1e-9, "{v}");
    assert_eq!(v["decision"], "accept");
    assert_eq!(v["threshold"], 0.5);
    assert_eq!(v["weights"], "reference");
    let close = |key: &str, want: &[f64]| {
        let got: Vec<f64> = v["layers"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(got.len(), want.len(), "{key}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{key}: {got:?} vs {want:?}");
        }
    };
    close("z1", &[0.8, -1.2, 0.4, 2.0]);
    close("a1", &[0.8, 0.0, 0.4, 2.0]);
    close("z2", &[1.1, -0.3, 0.5]);
    close("a2", &[1.1, 0.0, 0.5]);
    assert!((v["layers"]["z3"].as_f64().unwrap() - 1.2).abs() < 1e-12);

    let (_, v) = s.post_json("/v1/score", r#"{"features":[1,0.5,-1]}"#).await;
    assert!(v.get("layers").is_none(), "layers only on request: {v}");
    s.stop().await;
}

#[tokio::test]
async fn threshold_is_configurable_and_decides() {
    let mut config = Config::for_tests();
    config.threshold = Some(0.8);
    let s = Running::start(config).await;
    let (_, v) = s.post_json("/v1/score", r#"{"features":[1,0.5,-1]}"#).await;
    assert_eq!(v["decision"], "reject", "{v}");
    assert_eq!(v["threshold"], 0.8);
    s.stop().await;
}

#[tokio::test]
async fn batch_scores_every_row_in_order() {
    let s = Running::start(Config::for_tests()).await;
    let rows = [[1.0, 0.5, -1.0], [0.0, 0.0, 0.0], [-2.0, -2.0, 3.0]];
    let body = json!({ "batch": rows }).to_string();
    let (status, v) = s.post_json("/v1/score", &body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for (row, r) in rows.iter().zip(results) {
        let single = json!({ "features": row }).to_string();
        let (_, one) = s.post_json("/v1/score", &single).await;
        assert_eq!(r["probability"], one["probability"], "row {row:?}");
        assert_eq!(r["decision"], one["decision"]);
    }
    let (_, v) = s
        .post_json(
            "/v1/score",
            &json!({"batch": rows, "include_layers": true}).to_string(),
        )
        .await;
    assert!(v["results"][2]["layers"]["z1"].is_array(), "{v}");
    s.stop().await;
}

#[tokio::test]
async fn bad_inputs_get_json_errors_and_the_server_keeps_serving() {
    let mut config = Config::for_tests();
    config.max_body_bytes = 1024;
    config.max_batch = 4;
    let s = Running::start(config).await;

    let cases: &[(&str, u16, &str)] = &[
        (r#"{"features":[1,2]}"#, 422, "invalid_features"),
        (r#"{"features":[1,2,3,4]}"#, 422, "invalid_features"),
        (r#"{"features":[]}"#, 422, "invalid_features"),
        (r#"{"features":[1e999,0,0]}"#, 422, "invalid_request"),
        (r#"{"features":[-1e400,0,0]}"#, 422, "invalid_request"),
        (r#"{"features":["NaN",0,0]}"#, 422, "invalid_request"),
        (r#"{"features":[NaN,0,0]}"#, 400, "invalid_json"),
        (r#"{"features":[Infinity,0,0]}"#, 400, "invalid_json"),
        (r#"{"features":[1e300,0,0]}"#, 422, "invalid_features"),
        (r#"{"features":null}"#, 422, "invalid_request"),
        (r#"{"features":"1,2,3"}"#, 422, "invalid_request"),
        (r#"{"feature":[1,2,3]}"#, 422, "invalid_request"),
        (r#"{}"#, 422, "invalid_request"),
        (r#"[1,0.5,-1]"#, 422, "invalid_request"),
        (
            r#"{"features":[1,0.5,-1],"batch":[[1,2,3]]}"#,
            422,
            "invalid_request",
        ),
        (r#"{"batch":[]}"#, 422, "invalid_request"),
        (r#"{"batch":[[1,2,3],[1,2]]}"#, 422, "invalid_features"),
        (
            r#"{"batch":[[0,0,0],[0,0,0],[0,0,0],[0,0,0],[0,0,0]]}"#,
            422,
            "invalid_request",
        ),
        (r#"{"features":[1,0.5,-1]"#, 400, "invalid_json"),
        ("not json at all", 400, "invalid_json"),
        ("", 400, "empty_body"),
    ];
    for (body, status, code) in cases {
        let (got, v) = s.post_json("/v1/score", body).await;
        assert_error(got, &v, *status, code);
        let msg = v["error"]["message"].as_str().unwrap();
        if *code == "invalid_features" {
            assert!(
                msg.contains("features") || msg.contains("batch"),
                "{body}: {msg}"
            );
        }
    }
    assert_alive(&s).await;

    // Wrong or missing content type.
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut req = s
            .client
            .post(s.url("/v1/score"))
            .body(r#"{"features":[1,0.5,-1]}"#);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert_error(status, &v, 415, "unsupported_media_type");
    }
    // A JSON media type with parameters is fine.
    let r = s
        .client
        .post(s.url("/v1/score"))
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"features":[1,0.5,-1]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Body over the limit, with and without a Content-Length.
    let big = format!(r#"{{"features":[1,0.5,-1],"pad":"{}"}}"#, "x".repeat(4096));
    let (got, v) = s.post_json("/v1/score", &big).await;
    assert_error(got, &v, 413, "payload_too_large");
    let chunks: Vec<Result<String, std::io::Error>> = (0..8).map(|_| Ok("x".repeat(512))).collect();
    let r = s
        .client
        .post(s.url("/v1/score"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_error(status, &v, 413, "payload_too_large");

    // Unknown route and wrong method.
    let r = s.client.get(s.url("/v1/nope")).send().await.unwrap();
    let status = r.status();
    assert_error(status, &r.json().await.unwrap(), 404, "not_found");
    let r = s.client.get(s.url("/v1/score")).send().await.unwrap();
    let status = r.status();
    assert_error(status, &r.json().await.unwrap(), 405, "method_not_allowed");
    let r = s.client.delete(s.url("/healthz")).send().await.unwrap();
    let status = r.status();
    assert_error(status, &r.json().await.unwrap(), 405, "method_not_allowed");

    assert_alive(&s).await;

    // Unknown paths are counted under one label, not one series per path.
    let text = s.metrics().await;
    assert!(
        text.contains(
            r#"facekey_http_requests_total{method="GET",route="unmatched",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(!text.contains("/v1/nope"));
    s.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let s = Running::start(Config::for_tests()).await;
    let (_, v) = s.json(s.client.get(s.url("/healthz"))).await;
    assert_eq!(v["status"], "ok");
    let r = s.client.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    assert_alive(&s).await;
    s.post_json("/v1/score", r#"{"features":[-5,-5,-5]}"#).await;
    s.post_json("/v1/score", r#"{"features":[1]}"#).await;

    let r = s.client.get(s.url("/metrics")).send().await.unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    for want in [
        r#"facekey_http_requests_total{method="POST",route="/v1/score",status="200"} 2"#,
        r#"facekey_http_requests_total{method="POST",route="/v1/score",status="422"} 1"#,
        r#"facekey_http_request_duration_seconds_count{route="/v1/score"} 3"#,
        r#"facekey_inference_duration_seconds_count{model="fusion"} 2"#,
        r#"facekey_decisions_total{outcome="accept"} 1"#,
        r#"facekey_decisions_total{outcome="reject"} 1"#,
        r#"facekey_model_info{kind="fusion",model="reference"} 1"#,
        "facekey_build_info{version=",
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
    s.stop().await;
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let s = Running::start(Config::for_tests()).await;
    let r = s.client.get(s.url("/healthz")).send().await.unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "uuid expected, got {id}");
    let r = s
        .client
        .get(s.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    // A client id that is too long or free text is replaced by a fresh one (it would travel into
    // logs, the audit trail and alert mails).
    for bad in [
        "x".repeat(129),
        "ignore this alert".to_owned(),
        "a/b".to_owned(),
    ] {
        let r = s
            .client
            .get(s.url("/healthz"))
            .header("x-request-id", bad.as_str())
            .send()
            .await
            .unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap();
        assert!(id != bad && id.len() == 36, "{bad:?} answered with {id}");
    }
    let longest = "A".repeat(128);
    let r = s
        .client
        .get(s.url("/healthz"))
        .header("x-request-id", longest.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], longest.as_str());
    s.stop().await;
}

#[tokio::test]
async fn missing_weights_file_fails_start_up_naming_the_file() {
    let mut config = Config::for_tests();
    config.weights =
        facekey_runtime::fusion::WeightsSource::File("/nonexistent/fusion.json".into());
    let server = Server::bind(config).await.unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        server.serve(std::future::pending()),
    )
    .await
    .expect("start-up failure must stop the server")
    .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/fusion.json"),
        "{err}"
    );
}

/// Behind a Service, endpoints go a few seconds after the pod is told to stop: with a shutdown
/// delay the server fails readiness at once but keeps serving new connections until the delay
/// is over, then refuses them and ends.
#[tokio::test]
async fn a_shutdown_delay_keeps_serving_while_readiness_fails() {
    let mut config = Config::for_tests();
    config.shutdown_delay_secs = 2;
    let s = Running::start(config).await;
    let key = s.keys["admin"].clone();
    let Running {
        addr,
        data_dir,
        mut stop,
        task,
        ..
    } = s;
    let score = move || {
        // A new connection each time, as a load balancer would open.
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
            .post(format!("http://{addr}/v1/score"))
            .bearer_auth(&key)
            .json(&serde_json::json!({"features": [1, 0.5, -1]}))
            .send()
    };
    let t0 = std::time::Instant::now();
    stop.take().unwrap().send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = score()
        .await
        .expect("a new connection is served during the delay");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!task.is_finished());
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("server did not stop after the delay")
        .unwrap()
        .unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(score().await.is_err(), "served after the delay");
    let _ = std::fs::remove_dir_all(data_dir);
}

#[tokio::test]
async fn in_flight_request_finishes_during_graceful_shutdown() {
    let s = Running::start(Config::for_tests()).await;
    let body = br#"{"features":[1,0.5,-1]}"#;
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /v1/score HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        s.keys["admin"],
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..5]).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Ask the server to stop while the request is half sent.
    let Running {
        addr,
        data_dir,
        client,
        mut stop,
        task,
        ..
    } = s;
    stop.take().unwrap().send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !task.is_finished(),
        "server exited with a request in flight"
    );
    // New connections are refused or not served once draining.
    let ready = client.get(format!("http://{addr}/readyz")).send().await;
    if let Ok(r) = ready {
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    stream.write_all(&body[5..]).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .expect("response never came")
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"probability\""), "{text}");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("server did not stop after the request finished")
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(data_dir);
}

#[tokio::test]
async fn subjects_are_created_listed_fetched_and_deleted() {
    let s = Running::start(Config::for_tests()).await;
    let r = s
        .client
        .post(s.url("/v1/subjects"))
        .json(&json!({"name": "  Eileen Collins "}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/v1/subjects/{id}"));
    assert_eq!(created["name"], "Eileen Collins");
    assert_eq!(created["faces"], 0);
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));

    let (_, other) = s.post_json("/v1/subjects", r#"{"name":"Other"}"#).await;
    let (_, list) = s.json(s.client.get(s.url("/v1/subjects"))).await;
    let ids: Vec<&str> = list["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&id.as_str()) && ids.contains(&other["id"].as_str().unwrap()));

    let (_, got) = s.json(s.client.get(s.url(&location))).await;
    assert_eq!(got["name"], "Eileen Collins");
    assert_eq!(got["templates"], json!([]));

    let r = s.client.delete(s.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let r = s
            .client
            .request(method, s.url(&location))
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert_error(status, &r.json().await.unwrap(), 404, "subject_not_found");
    }

    for (body, status, code) in [
        (r#"{"name":""}"#, 422, "invalid_request"),
        (r#"{"name":"   "}"#, 422, "invalid_request"),
        (r#"{"name":5}"#, 422, "invalid_request"),
        (r#"{}"#, 422, "invalid_request"),
        (r#"{"name":"a","role":"admin"}"#, 422, "invalid_request"),
        ("{", 400, "invalid_json"),
    ] {
        let (got, v) = s.post_json("/v1/subjects", body).await;
        assert_error(got, &v, status, code);
    }
    let long = json!({ "name": "x".repeat(129) }).to_string();
    let (got, v) = s.post_json("/v1/subjects", &long).await;
    assert_error(got, &v, 422, "invalid_request");
    s.stop().await;
}

#[tokio::test]
async fn openapi_document_describes_the_served_routes() {
    let s = Running::start(Config::for_tests()).await;
    let (_, doc) = s.json(s.client.get(s.url("/openapi.json"))).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/v1/score", "post"),
        ("/v1/subjects", "post"),
        ("/v1/subjects", "get"),
        ("/v1/subjects/{id}", "get"),
        ("/v1/subjects/{id}", "delete"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(
            op.is_object(),
            "{method} {path} missing from the OpenAPI document"
        );
        // Every documented operation is really routed: it must not answer 404/405.
        let concrete = path.replace("{id}", "00000000-0000-0000-0000-000000000000");
        let r = s
            .client
            .request(method.to_uppercase().parse().unwrap(), s.url(&concrete))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(
            status != 405 && (status != 404 || body["error"]["code"] == "subject_not_found"),
            "{method} {path}: {status} {body}"
        );
    }
    let schemas = &doc["components"]["schemas"];
    for name in [
        "ScoreRequest",
        "ScoreResponse",
        "Layers",
        "Subject",
        "ErrorBody",
        "Decision",
    ] {
        assert!(schemas[name].is_object(), "schema {name} missing");
    }
    assert_eq!(
        doc["components"]["schemas"]["Decision"]["enum"],
        json!(["accept", "reject"])
    );
    s.stop().await;
}

#[tokio::test]
async fn the_ui_can_be_turned_off() {
    let mut config = Config::for_tests();
    config.ui_enabled = false;
    let s = Running::start(config).await;
    let r = s.client.get(s.url("/")).send().await.unwrap();
    let status = r.status();
    assert_error(status, &r.json().await.unwrap(), 404, "not_found");
    assert_alive(&s).await;
    s.stop().await;
}

#[tokio::test]
async fn root_serves_an_html_page_with_security_headers() {
    let s = Running::start(Config::for_tests()).await;
    let r = s.client.get(s.url("/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    assert!(
        r.headers()["permissions-policy"]
            .to_str()
            .unwrap()
            .contains("camera=(self)")
    );
    let html = r.text().await.unwrap();
    // API answers (here a subject list with names and enrollers, and an error) are never cached
    // nor sniffed.
    for path in ["/v1/subjects", "/v1/no-such-route"] {
        let r = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.headers()["cache-control"], "no-store", "{path}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{path}");
    }
    assert!(html.contains("FaceKey"), "{html}");
    let text = s.metrics().await;
    assert!(
        text.contains(r#"facekey_http_requests_total{method="GET",route="ui",status="200"} 1"#),
        "{text}"
    );
    // Path traversal never escapes the bundle.
    let r = s.client.get(s.url("/../Cargo.toml")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = s
        .client
        .get(s.url("/assets/..%2F..%2FCargo.toml"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    s.stop().await;
}
