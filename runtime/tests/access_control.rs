//! Access control against a real server: every route × {no key, wrong key, each scope}, the
//! unauthenticated account takeover, answers shaped by scope, per-key rate limits, key rotation
//! without restart, the audit trail, keyed metrics, the health-and-metrics listener and CORS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Running, error_code, face, keyed_client, send_json, test_keys};
use facekey_runtime::auth::policy::{Access, ROUTES};
use facekey_runtime::auth::{Scope, keys};
use facekey_runtime::config::{Config, MetricsAuth, Switch};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn image_form(subject: Option<&str>) -> Form {
    let form = Form::new().part(
        "image",
        Part::bytes(face("astronaut_640x480.jpg")).file_name("p.jpg"),
    );
    match subject {
        Some(s) => form.text("subject", s.to_owned()),
        None => form,
    }
}

/// A request for `route` with a body its handler accepts far enough to get past access control.
fn request(
    client: &reqwest::Client,
    s: &Running,
    method: &Method,
    route: &str,
    subject: &str,
) -> reqwest::RequestBuilder {
    let path = route
        .replace("{id}", subject)
        .replace("{face_id}", "no-such-face");
    let r = client.request(method.clone(), s.url(&path));
    match route {
        "/v1/score" => r.json(&json!({ "features": [1, 0.5, -1] })),
        "/v1/subjects" if method == Method::POST => r.json(&json!({ "name": "Matrix" })),
        "/v1/subjects/{id}" if method == Method::PATCH => r.json(&json!({ "name": "Renamed" })),
        "/v1/verify" => r.multipart(image_form(Some(subject))),
        "/v1/identify" | "/v1/liveness" | "/v1/subjects/{id}/faces" => {
            r.multipart(image_form(None))
        }
        _ => r,
    }
}

#[tokio::test]
async fn every_route_answers_each_key_as_its_scope_says() {
    let s = Running::start(Config::for_tests()).await;
    let subject = s.new_subject("Matrix subject").await;
    let wrong = keyed_client(&keys::new_key().unwrap());
    let anonymous = reqwest::Client::new();
    // The scope sets of the test keys.
    let scoped = [
        ("verify", Scope::Verify),
        ("enrol", Scope::Enrol),
        ("metrics", Scope::Metrics),
        ("admin", Scope::Admin),
    ];
    let mut checked = 0;
    for (method, route, access) in ROUTES {
        // Deleting the subject would change later rows; it is last in the table's order anyway,
        // but use a throwaway subject for it.
        let target = if *method == Method::DELETE && *route == "/v1/subjects/{id}" {
            s.new_subject("Throwaway").await
        } else {
            subject.clone()
        };
        for (who, client) in [("no key", &anonymous), ("wrong key", &wrong)] {
            let r = request(client, &s, method, route, &target)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let www = r.headers().get("www-authenticate").cloned();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            match access {
                Access::Open | Access::Metrics => assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{method} {route} {who}: {status} {v}"
                ),
                Access::AnyKey | Access::Scope(_) => {
                    assert_eq!(
                        status,
                        StatusCode::UNAUTHORIZED,
                        "{method} {route} {who}: {v}"
                    );
                    assert_eq!(v["error"]["code"], "unauthorized", "{v}");
                    assert!(www.is_some(), "401 without WWW-Authenticate");
                }
            }
            checked += 1;
        }
        for (id, scope) in scoped {
            let client = s.client_for(id);
            let target = if *method == Method::DELETE && *route == "/v1/subjects/{id}" {
                s.new_subject("Throwaway").await
            } else {
                target.clone()
            };
            let (status, v) = send_json(request(&client, &s, method, route, &target)).await;
            let allowed = match access {
                Access::Open | Access::Metrics | Access::AnyKey => true,
                Access::Scope(needed) => scope == *needed || scope == Scope::Admin,
            };
            if allowed {
                // Two 403s are not about scope: the subject (created by the admin key, without a
                // face) takes its first face, and is deleted, only by its creator's key.
                let ownership = (*route == "/v1/subjects/{id}/faces"
                    || (*method == Method::DELETE && *route == "/v1/subjects/{id}"))
                    && id == "enrol"
                    && v["error"]["code"] == "not_subject_creator";
                assert!(
                    status != StatusCode::UNAUTHORIZED
                        && (status != StatusCode::FORBIDDEN || ownership),
                    "{method} {route} with {id}: {status} {v}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {route} with {id}: {v}"
                );
                assert_eq!(v["error"]["code"], "forbidden");
                let Access::Scope(needed) = access else {
                    unreachable!()
                };
                assert!(
                    v["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains(needed.as_str()),
                    "{v}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ROUTES.len() * 6);
    // A method a route does not have is 405 for every valid key (not "needs admin" for the
    // others), and still 401 without one.
    for (method, path) in [
        (Method::GET, "/v1/verify".to_owned()),
        (Method::PUT, format!("/v1/subjects/{subject}")),
        (Method::DELETE, "/v1/liveness/sessions".to_owned()),
    ] {
        for id in ["verify", "enrol", "metrics", "admin"] {
            let (status, v) =
                send_json(s.client_for(id).request(method.clone(), s.url(&path))).await;
            assert_eq!(
                (status, v["error"]["code"].as_str()),
                (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")),
                "{method} {path} with {id}: {v}"
            );
        }
        let (status, _) = send_json(anonymous.request(method.clone(), s.url(&path))).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a key"
        );
    }
    // The OpenAPI document declares the scheme, and each keyed route its scope.
    let (_, doc) = send_json(reqwest::Client::new().get(s.url("/openapi.json"))).await;
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    for (method, route, access) in ROUTES {
        let op = &doc["paths"][route][method.as_str().to_ascii_lowercase()];
        if op.is_null() {
            continue;
        }
        match access {
            Access::Scope(scope) => assert_eq!(
                op["security"][0]["api_key"][0],
                scope.as_str(),
                "{method} {route}: {op}"
            ),
            Access::AnyKey => assert!(op["security"][0]["api_key"].is_array(), "{route}"),
            Access::Open | Access::Metrics => {}
        }
    }
    // Refusals are counted by route and reason.
    let metrics = s.metrics().await;
    for needle in [
        r#"facekey_auth_failures_total{reason="missing_key",route="/v1/verify"}"#,
        r#"facekey_auth_failures_total{reason="invalid_key",route="/v1/subjects"}"#,
        r#"facekey_auth_failures_total{reason="forbidden",route="/v1/subjects/{id}"}"#,
    ] {
        let counted = metrics
            .lines()
            .find_map(|l| l.strip_prefix(needle))
            .and_then(|v| v.trim().parse::<f64>().ok());
        assert!(counted.is_some_and(|n| n >= 1.0), "{needle}: {counted:?}");
    }
    s.stop().await;
}

#[tokio::test]
async fn the_unauthenticated_takeover_fails_at_the_first_call() {
    let s = Running::start(Config::for_tests()).await;
    let victim = s.new_subject("Victim").await;
    let (status, v) = s.enrol_sample(&s.client, &victim, "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let attacker = reqwest::Client::new();
    // 1. List subjects to find a victim.
    let (status, _) = send_json(attacker.get(s.url("/v1/subjects"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // 2. Enrol the attacker's face for the victim.
    let (status, _) = s.enrol_sample(&attacker, &victim, "astronaut.png").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // 3. Verify as the victim.
    let (status, _) = send_json(
        attacker
            .post(s.url("/v1/verify"))
            .multipart(image_form(Some(&victim))),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // An application's verify key cannot enrol or list either.
    let app = s.client_for("verify");
    assert_eq!(
        s.enrol_sample(&app, &victim, "astronaut.png").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send_json(app.get(s.url("/v1/subjects"))).await.0,
        StatusCode::FORBIDDEN
    );
    let (_, detail) = send_json(s.client.get(s.url(&format!("/v1/subjects/{victim}")))).await;
    assert_eq!(detail["faces"], 1, "nothing was added: {detail}");
    s.stop().await;
}

#[tokio::test]
async fn answers_without_admin_carry_the_decision_only() {
    let s = Running::start(Config::for_tests()).await;
    let id = s.new_subject("Eileen Collins").await;
    let (status, v) = s.enrol_sample(&s.client, &id, "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED, "{v}");

    let verify = |client: reqwest::Client| {
        let url = s.url("/v1/verify");
        let form = image_form(Some(&id)).text("include_layers", "true");
        async move { send_json(client.post(url).multipart(form)).await }
    };
    let (status, v) = verify(s.client_for("verify")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let fields: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        ["decision", "reasons", "request_id", "subject"],
        "{v}"
    );
    assert!(v["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    let (status, full) = verify(s.client.clone()).await;
    assert_eq!(status, StatusCode::OK, "{full}");
    for key in [
        "match",
        "liveness",
        "probability",
        "features",
        "layers",
        "timings_ms",
    ] {
        assert!(!full[key].is_null(), "admin answer lacks {key}: {full}");
    }
    assert_eq!(full["decision"], v["decision"]);

    let identify = |client: reqwest::Client| {
        let url = s.url("/v1/identify");
        async move { send_json(client.post(url).multipart(image_form(None))).await }
    };
    let (status, v) = identify(s.client_for("verify")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let candidate = &v["candidates"][0];
    assert_eq!(candidate["subject"]["id"], id.as_str(), "{v}");
    assert_eq!(candidate.as_object().unwrap().len(), 1, "no scores: {v}");
    assert!(v.get("liveness").is_none() && v.get("templates_searched").is_none());
    let (_, full) = identify(s.client.clone()).await;
    assert!(full["candidates"][0]["similarity"].is_number(), "{full}");

    let (status, v) = send_json(
        s.client_for("verify")
            .post(s.url("/v1/liveness"))
            .multipart(image_form(None)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let liveness = &v["faces"][0]["liveness"];
    assert!(liveness["state"].is_string() && liveness["decision"].is_string());
    assert!(
        liveness.get("score").is_none() && liveness.get("models").is_none(),
        "{v}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let s = Running::start(Config::for_tests()).await;
    let slow = s.client_for("slow");
    let score = || {
        slow.post(s.url("/v1/score"))
            .json(&json!({ "features": [1, 0.5, -1] }))
            .send()
    };
    assert_eq!(score().await.unwrap().status(), StatusCode::OK);
    let limited = score().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let v: Value = limited.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limited");
    // Other keys are not slowed by it.
    for _ in 0..5 {
        let (status, _) = send_json(
            s.client_for("verify")
                .post(s.url("/v1/score"))
                .json(&json!({ "features": [1, 0.5, -1] })),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(score().await.unwrap().status(), StatusCode::OK);
    assert!(
        s.metrics()
            .await
            .contains(r#"facekey_auth_failures_total{reason="rate_limited",route="/v1/score"} 1"#)
    );
    s.stop().await;
}

#[tokio::test]
async fn a_rotated_keys_file_applies_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    let (old_text, old) = test_keys();
    std::fs::write(&file, &old_text).unwrap();
    let mut config = Config::for_tests();
    config.api_keys_file = Some(file.clone());
    let s = Running::start(config).await;
    let whoami = |key: String| {
        let url = s.url("/v1/auth/whoami");
        async move { send_json(keyed_client(&key).get(url)).await }
    };
    let (status, v) = whoami(old["verify"].clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&v["key_id"], &v["scopes"], &v["rps"]),
        (&json!("verify"), &json!(["verify"]), &json!(null)),
        "{v}"
    );
    assert_eq!(v["quotas"]["templates"]["held"], 0, "{v}");
    assert_eq!(
        v["quotas"]["templates"]["limit"],
        json!(null),
        "a verify key writes nothing"
    );

    // An edit that breaks the file: its valid lines' keys stay in force, nothing new is
    // granted, and the key whose line was removed is revoked at once (one typo cannot hold a
    // revocation back).
    let (new_text, new) = test_keys();
    let new_admin_line = new_text.lines().find(|l| l.starts_with("admin:")).unwrap();
    let broken: String = old_text
        .lines()
        .filter(|l| !l.starts_with("verify:"))
        .chain([
            "broken line",
            &new_admin_line.replacen("admin:", "newcomer:", 1),
        ])
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&file, broken).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s
        .metrics()
        .await
        .contains(r#"facekey_api_key_reloads_total{result="rejected"} 1"#)
    {
        assert!(Instant::now() < deadline, "invalid file not noticed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        whoami(old["verify"].clone()).await.0,
        StatusCode::UNAUTHORIZED,
        "a key removed in a broken edit stayed in force"
    );
    assert_eq!(whoami(old["admin"].clone()).await.0, StatusCode::OK);
    assert_eq!(
        whoami(new["admin"].clone()).await.0,
        StatusCode::UNAUTHORIZED,
        "a broken file granted a new key"
    );
    assert!(s.metrics().await.contains("facekey_api_keys 4"));

    // Rotation: new keys work, the old ones stop, with no restart.
    std::fs::write(&file, &new_text).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while whoami(new["verify"].clone()).await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "new keys never applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        whoami(old["verify"].clone()).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert!(s.metrics().await.contains("facekey_api_keys 5"));

    // Emptied (comments only): refused as a keys file, and every key is revoked.
    std::fs::write(&file, "# every key revoked\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while whoami(new["admin"].clone()).await.0 != StatusCode::UNAUTHORIZED {
        assert!(Instant::now() < deadline, "an emptied file revoked nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(s.metrics().await.contains("facekey_api_keys 0"));
    s.stop().await;
}

#[tokio::test]
async fn audit_trail_records_each_action_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let mut config = Config::for_tests();
    config.audit_log = log.display().to_string();
    let s = Running::start(config).await;
    let id = s.new_subject("Audited").await;
    let (status, enrolled) = s.enrol_sample(&s.client, &id, "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED, "{enrolled}");
    let (status, _) = send_json(
        s.client_for("verify")
            .post(s.url("/v1/verify"))
            .multipart(image_form(Some(&id))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    send_json(
        s.client_for("verify")
            .post(s.url("/v1/identify"))
            .multipart(image_form(None)),
    )
    .await;
    let (status, _) = send_json(reqwest::Client::new().get(s.url("/v1/subjects"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    send_json(
        s.client_for("verify")
            .post(s.url("/v1/liveness"))
            .multipart(image_form(None)),
    )
    .await;
    let (status, _) = send_json(
        s.client
            .patch(s.url(&format!("/v1/subjects/{id}")))
            .json(&json!({ "name": "Renamed" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let face_id = enrolled["face_id"].as_str().unwrap().to_owned();
    let (status, _) = send_json(
        s.client
            .delete(s.url(&format!("/v1/subjects/{id}/faces/{face_id}"))),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = send_json(s.client.delete(s.url(&format!("/v1/subjects/{id}")))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let text = std::fs::read_to_string(&log).unwrap();
    for key in s.keys.values() {
        assert!(!text.contains(key.as_str()), "a key in the audit log");
    }
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |action: &str| {
        events
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} event in {events:?}"))
    };
    let created = find("subject.create");
    assert_eq!(
        (
            created["key_id"].as_str(),
            created["status"].as_u64(),
            created["subject"].as_str()
        ),
        (Some("admin"), Some(201), Some(id.as_str()))
    );
    let enrol_event = find("face.enrol");
    assert_eq!(enrol_event["subject"], id.as_str());
    assert_eq!(enrol_event["face"], enrolled["face_id"]);
    assert_eq!(find("subject.rename")["subject"], id.as_str());
    let face_deleted = find("face.delete");
    assert_eq!(
        (
            face_deleted["subject"].as_str(),
            face_deleted["face"].as_str()
        ),
        (Some(id.as_str()), enrolled["face_id"].as_str())
    );
    assert_eq!(find("liveness")["key_id"], "verify");
    let verify = find("verify");
    assert_eq!(verify["key_id"], "verify");
    assert_eq!(verify["subject"], id.as_str());
    assert!(verify["decision"].is_string());
    assert!(verify["request_id"].is_string());
    assert!(verify["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(find("identify")["decision"].is_string());
    let denied = find("auth.denied");
    assert_eq!(
        (
            denied["route"].as_str(),
            denied["status"].as_u64(),
            denied["error"].as_str()
        ),
        (Some("/v1/subjects"), Some(401), Some("unauthorized"))
    );
    assert!(denied.get("key_id").is_none());
    assert_eq!(find("subject.delete")["subject"], id.as_str());
    for e in &events {
        for field in ["image", "embedding", "template"] {
            assert!(e.get(field).is_none(), "{e}");
        }
    }
    s.stop().await;
}

/// Open `/metrics` on the API port leaves out each attempt's scores (a histogram's `_sum` read
/// around one's own verification gives its exact score, which answers withhold from keys
/// without admin) and the per-key series; a `metrics` or `admin` key gets every family.
#[tokio::test]
async fn open_metrics_withhold_per_attempt_scores_and_key_ids() {
    let s = Running::start(Config::for_tests()).await;
    let scrape = |client: reqwest::Client| {
        let url = s.url("/metrics");
        async move {
            let r = client.get(url).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.text().await.unwrap()
        }
    };
    let private = facekey_runtime::metrics::PRIVATE_FAMILIES;
    for client in [reqwest::Client::new(), s.client_for("verify")] {
        let text = scrape(client).await;
        assert!(text.contains("facekey_decisions_total"), "{text}");
        for family in private {
            assert!(!text.contains(family), "{family} open to anyone");
        }
    }
    for id in ["metrics", "admin"] {
        let text = scrape(s.client_for(id)).await;
        for family in private {
            assert!(text.contains(family), "{family} missing for the {id} key");
        }
    }
    s.stop().await;
}

/// A runtime with the operations listener on loopback, the test keys and `config`'s other
/// settings, ready: its API and operations addresses, the keys, and how to stop it.
struct WithOps {
    addr: std::net::SocketAddr,
    ops: std::net::SocketAddr,
    keys: std::collections::BTreeMap<String, String>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), facekey_runtime::server::ServerError>>,
    data_dir: std::path::PathBuf,
}

impl WithOps {
    async fn start(mut config: Config) -> Self {
        config.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let data_dir = config.data_dir.clone();
        let (text, keys) = test_keys();
        std::fs::create_dir_all(&data_dir).unwrap();
        std::fs::write(data_dir.join("k"), text).unwrap();
        config.api_keys_file = Some(data_dir.join("k"));
        let server = facekey_runtime::server::Server::bind(config).await.unwrap();
        let addr = server.local_addr().unwrap();
        let ops = server.metrics_addr().unwrap();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        let deadline = Instant::now() + Duration::from_secs(120);
        while reqwest::get(format!("http://{ops}/readyz"))
            .await
            .map(|r| r.status() != StatusCode::OK)
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "not ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            addr,
            ops,
            keys,
            stop,
            task,
            data_dir,
        }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
        let _ = std::fs::remove_dir_all(self.data_dir);
    }
}

/// The body of `GET url` by `client`.
async fn body(client: &reqwest::Client, url: String) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn keyed_metrics_and_the_operations_listener() {
    let mut config = Config::for_tests();
    config.metrics_auth = MetricsAuth::Key;
    config.cors_origins = vec!["https://app.example".into()];
    let s = WithOps::start(config).await;
    let (addr, ops, keys) = (s.addr, s.ops, &s.keys);
    let anonymous = reqwest::Client::new();
    let get = |client: &reqwest::Client, url: String| {
        let r = client.get(url).send();
        async move { r.await.unwrap().status() }
    };
    assert_eq!(
        get(&anonymous, format!("http://{addr}/metrics")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(
            &keyed_client(&keys["verify"]),
            format!("http://{addr}/metrics")
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(
            &keyed_client(&keys["metrics"]),
            format!("http://{addr}/metrics")
        )
        .await,
        StatusCode::OK
    );
    // The operations listener: probes and metrics without keys (every family, for Prometheus
    // in the monitoring namespace), no API.
    let ops_text = body(&anonymous, format!("http://{ops}/metrics")).await;
    for family in facekey_runtime::metrics::PRIVATE_FAMILIES {
        assert!(ops_text.contains(family), "{family} missing");
    }
    assert_eq!(
        get(&anonymous, format!("http://{ops}/healthz")).await,
        StatusCode::OK
    );
    assert_eq!(
        get(&anonymous, format!("http://{ops}/v1/subjects")).await,
        StatusCode::NOT_FOUND
    );
    // CORS: the configured origin may call, others get no CORS grant.
    let preflight = |origin: &'static str| {
        anonymous
            .request(Method::OPTIONS, format!("http://{addr}/v1/verify"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let ok = preflight("https://app.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // A page on the allowed origin may read the server's clock (a session's time left).
    let simple = anonymous
        .get(format!("http://{addr}/healthz"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    let exposed = simple.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.split(',').any(|h| h.trim() == "date"), "{exposed}");
    // Made-up methods do not create metric series.
    let odd = Method::from_bytes(b"BREW").unwrap();
    anonymous
        .request(odd, format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    let text = body(
        &keyed_client(&keys["metrics"]),
        format!("http://{addr}/metrics"),
    )
    .await;
    assert!(!text.contains("BREW"));
    assert!(text.contains(r#"method="other""#));
    s.stop().await;
}

/// With `FACEKEY_METRICS_LISTEN_PRIVATE=off` (the operator's sidecars, whose port any pod may
/// reach), the operations listener withholds what the open API route withholds.
#[tokio::test]
async fn an_operations_listener_without_the_private_families() {
    let mut config = Config::for_tests();
    config.metrics_listen_private = Switch::Off;
    let s = WithOps::start(config).await;
    let text = body(&reqwest::Client::new(), format!("http://{}/metrics", s.ops)).await;
    assert!(text.contains("facekey_decisions_total"), "{text}");
    for family in facekey_runtime::metrics::PRIVATE_FAMILIES {
        assert!(!text.contains(family), "{family} served");
    }
    s.stop().await;
}

/// `[::]`, which the operator renders so that pods of IPv6-only clusters are reachable, serves
/// IPv4 clients too (and IPv6 ones where the host has IPv6).
#[tokio::test]
async fn a_dual_stack_listener_serves_both_families() {
    let mut config = Config::for_tests();
    config.listen = "[::]:0".parse().unwrap();
    let s = WithOps::start(config).await;
    let port = s.addr.port();
    let mut hosts = vec!["127.0.0.1"];
    if s.addr.is_ipv6() {
        hosts.push("[::1]");
    }
    for host in hosts {
        let r = reqwest::get(format!("http://{host}:{port}/healthz"))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{host}");
    }
    s.stop().await;
}

#[tokio::test]
async fn unsafe_settings_refuse_to_start_unless_allowed() {
    let mut config = Config::for_tests();
    config.match_threshold = 0.3;
    let err = match facekey_runtime::server::Server::bind(config.clone()).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started with an unsafe match threshold"),
    };
    assert!(
        err.contains("FACEKEY_MATCH_THRESHOLD") && err.contains("--allow-insecure"),
        "{err}"
    );
    config.allow_insecure = true;
    assert!(facekey_runtime::server::Server::bind(config).await.is_ok());
}

/// Verifications sent at once all pass the lock check before the first is decided; the lockout
/// still reveals no more decisions than its threshold: the rest are answered 429 after the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_sent_at_once_reveal_no_more_decisions_than_the_lockout_allows() {
    let mut config = Config::for_tests();
    config.lockout_attempts = 3;
    config.lockout_secs = 60;
    // Queue the whole burst (this test is about the lockout, not shedding).
    common::queue_whole_bursts(&mut config);
    let s = Running::start(config).await;
    let id = s.new_subject("Eileen Collins").await;
    let (status, v) = s.enrol_sample(&s.client, &id, "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let app = s.client_for("verify");
    let attempts = (0..10).map(|_| {
        let form = Form::new().text("subject", id.clone()).part(
            "image",
            Part::bytes(face("Tom_Hanks_54745.png")).file_name("p.png"),
        );
        let request = app.post(s.url("/v1/verify")).multipart(form);
        async move {
            let r = request.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    });
    let answers = futures::future::join_all(attempts).await;
    let decided: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .collect();
    let locked = answers
        .iter()
        .filter(|(status, v)| {
            *status == StatusCode::TOO_MANY_REQUESTS && v["error"]["code"] == "subject_locked"
        })
        .count();
    assert_eq!((decided.len(), locked), (3, 7), "{answers:?}");
    assert!(decided.iter().all(|(_, v)| v["decision"] == "reject"));
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("facekey_subject_lockouts_total 1"),
        "locked once"
    );
    // Only the decisions delivered are counted as decisions.
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("facekey_decisions_total{outcome=\"reject\"} 3")),
        "{metrics}"
    );
    // The genuine face is refused too until the lock ends (no decision revealed).
    let form = Form::new().text("subject", id.clone()).part(
        "image",
        Part::bytes(face("astronaut.png")).file_name("p.png"),
    );
    let r = app
        .post(s.url("/v1/verify"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    s.stop().await;
}

/// A lock outlives a restart on the same data directory (`lockouts.json`); an administrator's
/// release outlives the next one; failures below the threshold are not kept.
#[tokio::test]
async fn a_subject_lock_survives_a_restart_and_so_does_its_release() {
    let mut config = Config::for_tests();
    config.lockout_attempts = 2;
    config.lockout_secs = 600;
    let s = Running::start(config.clone()).await;
    let id = s.new_subject("Eileen Collins").await;
    let other = s.new_subject("Eileen again").await;
    let (status, v) = s.enrol_sample(&s.client, &id, "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, v) = s.enrol_sample(&s.client, &other, "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    async fn verify(s: &Running, subject: &str, image: &str) -> (StatusCode, Value) {
        let form = Form::new()
            .text("subject", subject.to_owned())
            .part("image", Part::bytes(face(image)).file_name("p.png"));
        send_json(
            s.client_for("verify")
                .post(s.url("/v1/verify"))
                .multipart(form),
        )
        .await
    }
    for _ in 0..2 {
        let (status, v) = verify(&s, &id, "Tom_Hanks_54745.png").await;
        assert_eq!(
            (status, &v["decision"]),
            (StatusCode::OK, &json!("reject")),
            "{v}"
        );
    }
    // One failure of the other subject: below the threshold, not kept.
    let (status, v) = verify(&s, &other, "Tom_Hanks_54745.png").await;
    assert_eq!(
        (status, &v["decision"]),
        (StatusCode::OK, &json!("reject")),
        "{v}"
    );
    let (status, v) = verify(&s, &id, "astronaut.png").await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "subject_locked"),
        "{v}"
    );
    s.stop_keeping_data().await;

    let s = Running::start(config.clone()).await;
    let (status, v) = verify(&s, &id, "astronaut.png").await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "subject_locked"),
        "locked after the restart: {v}"
    );
    assert!(v["error"]["message"].as_str().is_some(), "{v}");
    // The other subject's one failure was forgotten: two more are needed to lock it.
    let (status, v) = verify(&s, &other, "Tom_Hanks_54745.png").await;
    assert_eq!(
        (status, &v["decision"]),
        (StatusCode::OK, &json!("reject")),
        "{v}"
    );
    let (status, v) = verify(&s, &other, "astronaut.png").await;
    assert_eq!(
        (status, &v["decision"]),
        (StatusCode::OK, &json!("accept")),
        "{v}"
    );
    let (status, v) = send_json(
        s.client
            .delete(s.url(&format!("/v1/subjects/{id}/lockout"))),
    )
    .await;
    assert_eq!(
        (status, &v["was_locked"]),
        (StatusCode::OK, &json!(true)),
        "{v}"
    );
    s.stop_keeping_data().await;

    let s = Running::start(config).await;
    let (status, v) = verify(&s, &id, "astronaut.png").await;
    assert_eq!(
        (status, &v["decision"]),
        (StatusCode::OK, &json!("accept")),
        "released: {v}"
    );
    s.stop().await;
}

#[tokio::test]
async fn repeated_failures_lock_the_subject_until_the_lock_expires() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let mut config = Config::for_tests();
    config.lockout_attempts = 3;
    config.lockout_secs = 2;
    config.audit_log = log.display().to_string();
    let s = Running::start(config).await;
    let id = s.new_subject("Eileen Collins").await;
    let (status, v) = s.enrol_sample(&s.client, &id, "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let app = s.client_for("verify");
    let verify = |image: &'static str| {
        let form = Form::new()
            .text("subject", id.clone())
            .part("image", Part::bytes(face(image)).file_name("p.png"));
        let request = app.post(s.url("/v1/verify")).multipart(form);
        async move {
            let r = request.send().await.unwrap();
            let retry = r.headers().get("retry-after").cloned();
            (r.status(), retry, r.json::<Value>().await.unwrap())
        }
    };
    // An impostor fails three times; the third locks the subject.
    for i in 0..3 {
        let (status, _, v) = verify("Tom_Hanks_54745.png").await;
        assert_eq!(status, StatusCode::OK, "attempt {i}: {v}");
        assert_eq!(v["decision"], "reject", "{v}");
    }
    // Locked: even the genuine face is refused, without model work, with Retry-After.
    let (status, retry, v) = verify("astronaut.png").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["error"]["code"], "subject_locked");
    let retry: u64 = retry.unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // Nor can a liveness session be opened for it meanwhile (it could not verify).
    let r = app
        .post(s.url("/v1/liveness/sessions"))
        .json(&json!({"subject": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "subject_locked", "{v}");
    // Nor is it identified: the genuine face reads as no match (saying "locked" would tell the
    // caller the face matches a locked account); the audit trail names the withheld subject.
    let identify = || async {
        send_json(app.post(s.url("/v1/identify")).multipart(Form::new().part(
            "image",
            Part::bytes(face("astronaut.png")).file_name("p.png"),
        )))
        .await
    };
    let (status, v) = identify().await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["decision"], &v["candidates"], &v["reasons"]),
        (&json!("reject"), &json!([]), &json!(["no_match"])),
        "{v}"
    );
    assert!(
        s.metrics()
            .await
            .contains("facekey_subject_lockouts_total 1")
    );
    // After the lock period the genuine face verifies and is identified again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, _, v) = verify("astronaut.png").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["decision"], "accept", "{v}");
    let (status, v) = identify().await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["candidates"][0]["subject"]["id"], id.as_str(), "{v}");
    s.stop().await;
    let identified: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["action"] == "identify")
        .collect();
    assert_eq!(identified.len(), 2, "{identified:?}");
    assert_eq!(identified[0]["withheld_locked"], json!([id]));
    assert!(identified[1].get("withheld_locked").is_none());
}
