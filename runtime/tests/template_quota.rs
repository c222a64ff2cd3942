//! The per-key template quota (`FACEKEY_MAX_TEMPLATES_PER_KEY`): one `enrol` key cannot fill the
//! store's templates for every other key by enrolling faces into subjects of its own. Over HTTP
//! on the embedded store: a key at its quota gets 507 `key_template_quota` naming the limit and
//! the setting, before any model runs, while another key still enrols; admin keys are held to
//! the store's bound only; each face names the key that enrolled it and the subject list finds
//! them; deleting a face frees a place; the enrollers survive a restart. On a real PostgreSQL:
//! the enroller column is migrated onto an old database (old faces count against no key), and
//! one key's enrolments racing through two replicas are held to its quota exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::postgres::{PgServer, Replicas};
use common::{Running, error_code, keyed_client, metric, send_json, two_apps_and_admin_keys};
use facekey_runtime::config::Config;
use facekey_runtime::enrolments::{Creator, Enrolments};
use facekey_runtime::store::{NewTemplate, QuotaOf, StoreError};
use reqwest::StatusCode;
use serde_json::Value;

/// The quota the HTTP test runs with.
const QUOTA: usize = 2;

/// Create a subject with `client`: its id.
async fn subject(s: &Running, client: &reqwest::Client, name: &str) -> String {
    let (status, v) = send_json(
        client
            .post(s.url("/v1/subjects"))
            .json(&serde_json::json!({ "name": name })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

/// Enrol the astronaut into `id`, which must succeed: the face's id.
async fn enrolled(s: &Running, client: &reqwest::Client, id: &str) -> String {
    let (status, v) = s.enrol_sample(client, id, "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v["face_id"].as_str().unwrap().to_owned()
}

/// Inferences the server has run so far (every model together).
async fn inferences(s: &Running) -> f64 {
    s.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("facekey_inference_duration_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The enrolment must be refused as over `key_id`'s quota, naming the key, the limit and its
/// setting, before any model ran.
async fn refused(s: &Running, client: &reqwest::Client, id: &str, key_id: &str) {
    let before = inferences(s).await;
    let (status, v) = s.enrol_sample(client, id, "astronaut.png").await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::INSUFFICIENT_STORAGE, "key_template_quota"),
        "{v}"
    );
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{key_id:?}"))
            && message.contains(&format!("FACEKEY_MAX_TEMPLATES_PER_KEY = {QUOTA}")),
        "{message}"
    );
    assert_eq!(
        inferences(s).await,
        before,
        "a refused enrolment ran a model"
    );
}

/// The ids of the subjects `GET /v1/subjects?{query}` lists.
async fn listed(s: &Running, admin: &reqwest::Client, query: &str) -> Vec<String> {
    let (status, v) = send_json(admin.get(s.url(&format!("/v1/subjects?{query}")))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let mut ids: Vec<String> = v["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// The faces of subject `id` as `(face id, enrolled_by)`.
async fn faces(s: &Running, admin: &reqwest::Client, id: &str) -> Vec<(String, Value)> {
    let (status, v) = send_json(admin.get(s.url(&format!("/v1/subjects/{id}")))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_owned(),
                t["enrolled_by"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_key_at_its_template_quota_is_refused_while_others_enrol_and_it_survives_a_restart() {
    let mut config = Config::for_tests();
    config.max_templates_per_key = QUOTA;
    let (file, keys) = two_apps_and_admin_keys(&config.data_dir);
    config.api_keys_file = Some(file);
    let (a, b, admin) = (
        keyed_client(&keys["app-a"]),
        keyed_client(&keys["app-b"]),
        keyed_client(&keys["admin"]),
    );
    let s = Running::start(config.clone()).await;

    // Key A fills its quota with one face in each of two subjects of its own.
    let a1 = subject(&s, &a, "a1").await;
    let a2 = subject(&s, &a, "a2").await;
    let a3 = subject(&s, &a, "a3").await;
    let first = enrolled(&s, &a, &a1).await;
    enrolled(&s, &a, &a2).await;
    refused(&s, &a, &a3, "app-a").await;
    assert_eq!(faces(&s, &admin, &a1).await[0].1, "app-a");

    // Key A at its quota takes nothing from key B, nor from the admin key.
    let b1 = subject(&s, &b, "b1").await;
    enrolled(&s, &b, &b1).await;
    for _ in 0..QUOTA {
        enrolled(&s, &admin, &a3).await;
    }
    let metrics = s.metrics_as(&admin).await;
    assert_eq!(
        metric(
            &metrics,
            "facekey_templates_refused_total{reason=\"key_quota\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "facekey_templates_refused_total{reason=\"store_full\"}"
        ),
        0.0
    );

    // Each key sees its own use of its quotas; admin keys have none.
    let (status, me) = send_json(a.get(s.url("/v1/auth/whoami"))).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(
        me["quotas"],
        serde_json::json!({
            "subjects": {"held": 3, "limit": config.max_subjects_per_key},
            "templates": {"held": QUOTA, "limit": QUOTA},
        })
    );
    let (_, me) = send_json(admin.get(s.url("/v1/auth/whoami"))).await;
    assert_eq!(
        me["quotas"]["templates"],
        serde_json::json!({"held": QUOTA, "limit": null})
    );
    // The metrics give each key held to a quota its use and the limits, for the operator's
    // FaceKeyKeyQuotaNearlyFull; admin keys have no series.
    let held = |key: &str, quota: &str| {
        metric(
            &metrics,
            &format!("facekey_key_quota_held{{key_id=\"{key}\",quota=\"{quota}\"}}"),
        )
    };
    assert_eq!(held("app-a", "templates"), QUOTA as f64);
    assert_eq!(held("app-a", "subjects"), 3.0);
    assert_eq!(held("app-b", "templates"), 1.0);
    assert!(!metrics.contains("key_id=\"admin\""), "{metrics}");
    assert_eq!(
        metric(&metrics, "facekey_key_quota_limit{quota=\"templates\"}"),
        QUOTA as f64
    );

    // An admin finds what a key filled its quota with: the subjects holding its faces.
    let mut expected = vec![a1.clone(), a2.clone()];
    expected.sort();
    assert_eq!(listed(&s, &admin, "enrolled_by=app-a").await, expected);
    assert_eq!(
        listed(&s, &admin, "enrolled_by=admin").await,
        vec![a3.clone()]
    );
    assert_eq!(
        listed(&s, &admin, "created_by=app-a&enrolled_by=app-b").await,
        Vec::<String>::new()
    );
    let (status, v) = send_json(admin.get(s.url("/v1/subjects?enrolled_by="))).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
    );

    // Deleting one of A's faces (an admin can) frees exactly one place.
    let (status, _) =
        send_json(admin.delete(s.url(&format!("/v1/subjects/{a1}/faces/{first}")))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    enrolled(&s, &a, &a1).await;
    refused(&s, &a, &a1, "app-a").await;

    // Restart on the same data directory: the enrollers were stored with the faces.
    s.stop_keeping_data().await;
    let s = Running::start(config).await;
    refused(&s, &a, &a3, "app-a").await;
    assert_eq!(faces(&s, &admin, &a2).await[0].1, "app-a");
    let (status, v) = s.enrol_sample(&b, &b1, "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    refused(&s, &b, &b1, "app-b").await;

    // The API description lists the refusal.
    let (_, doc) = send_json(s.client.get(s.url("/openapi.json"))).await;
    let full = doc["paths"]["/v1/subjects/{id}/faces"]["post"]["responses"]["507"]["description"]
        .as_str()
        .unwrap();
    assert!(
        full.contains("key_template_quota") && full.contains("FACEKEY_MAX_TEMPLATES_PER_KEY"),
        "{full}"
    );
    s.stop().await;
}

fn face(v: f32) -> NewTemplate {
    NewTemplate {
        model: "m".into(),
        embedding: vec![v, 1.0],
        quality: None,
        enrolled_by: None,
    }
}

/// PostgreSQL: migrating an old database adds the enroller column (old faces: NULL, counted
/// against no key); one key's enrolments racing through two replicas, before either has heard
/// of the other's, are held to the quota exactly, as the store counts the key's templates
/// inside each enrolment; another key racing beside it is neither held up nor counted; a
/// replica started afresh counts the enrollers from the database.
#[tokio::test]
async fn racing_enrolments_through_two_replicas_stay_within_the_template_quota() {
    let pg = PgServer::start();
    let replicas = Replicas::new(&pg);

    // A database as the previous release left it, with a subject holding a face.
    let old = {
        let store = replicas.connect().await;
        let e = Arc::new(Enrolments::open(Arc::new(store), "m", 2).await.unwrap());
        let s = e.create_subject("old", Creator::default()).await.unwrap();
        e.add_template(&s.id, face(0.5), Creator::default())
            .await
            .unwrap();
        s.id
    };
    pg.psql(
        "ALTER TABLE facekey_templates DROP COLUMN enrolled_by; \
         DELETE FROM _sqlx_migrations WHERE version = 5",
    );
    let on_a = Arc::new(
        Enrolments::open(Arc::new(replicas.connect().await), "m", 2)
            .await
            .unwrap(),
    );
    let on_b = Arc::new(
        Enrolments::open(Arc::new(replicas.connect().await), "m", 2)
            .await
            .unwrap(),
    );
    let (_, old_faces) = on_a.index().get(&old).unwrap();
    assert_eq!(old_faces.len(), 1);
    assert_eq!(old_faces[0].enrolled_by, None);

    // Subjects both replicas know (each takes 5 faces).
    let mut subjects = Vec::new();
    for i in 0..4 {
        let name = format!("s{i}");
        let s = on_a.create_subject(&name, Creator::default()).await;
        subjects.push(s.unwrap().id);
    }
    on_b.reload().await.unwrap();

    const LIMIT: usize = 3;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let replica = if i % 2 == 0 {
            on_a.clone()
        } else {
            on_b.clone()
        };
        let key = if i < 12 { "racer" } else { "bystander" };
        let subject = subjects[i % 4].clone();
        tasks.push(tokio::spawn(async move {
            let enroller = Creator {
                key_id: Some(key),
                quota: Some(LIMIT),
            };
            let result = replica.add_template(&subject, face(i as f32), enroller);
            (key, result.await)
        }));
    }
    let (mut enrolled, mut refused) = (BTreeMap::<&str, usize>::new(), 0);
    for task in tasks {
        match task.await.unwrap() {
            (key, Ok(_)) => *enrolled.entry(key).or_default() += 1,
            (
                _,
                Err(StoreError::KeyQuota {
                    of: QuotaOf::Templates,
                    limit: LIMIT,
                    ..
                }),
            ) => refused += 1,
            (_, Err(e)) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(enrolled.get("racer"), Some(&LIMIT), "{enrolled:?}");
    assert_eq!(enrolled.get("bystander"), Some(&LIMIT), "{enrolled:?}");
    assert_eq!(refused, 12 - LIMIT + 4 - LIMIT);
    assert_eq!(
        pg.psql("SELECT count(*) FROM facekey_templates WHERE enrolled_by = 'racer'"),
        LIMIT.to_string()
    );

    // A replica started afresh counts each key's faces, the old one against none.
    let fresh = Arc::new(
        Enrolments::open(Arc::new(replicas.connect().await), "m", 2)
            .await
            .unwrap(),
    );
    assert_eq!(fresh.index().templates_enrolled_by("racer"), LIMIT);
    assert_eq!(fresh.index().templates_enrolled_by("bystander"), LIMIT);
    assert_eq!(fresh.index().template_count(), 2 * LIMIT + 1);
    let racer = Creator {
        key_id: Some("racer"),
        quota: Some(LIMIT),
    };
    assert!(matches!(
        fresh.add_template(&subjects[0], face(9.0), racer).await,
        Err(StoreError::KeyQuota { .. })
    ));
}
