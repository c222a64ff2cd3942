//! The per-key subject quota (`FACEKEY_MAX_SUBJECTS_PER_KEY`): one `enrol` key cannot fill the
//! store for every other key. Over HTTP on the embedded store: a key at its quota gets 507
//! `key_subject_quota` naming the limit and the setting while another key still creates, admin
//! keys are held to the store's bound only, deleting one of the key's subjects frees a place,
//! and the subjects' creators survive a restart on the same data directory. On a real
//! PostgreSQL: the creator column is migrated onto an old database (old rows count against no
//! key), persists, and two replicas count a key's subjects from the shared store's view; a
//! key's creations racing through both replicas at once are held to its quota exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::postgres::{PgServer, Replicas};
use common::{
    Running, error_code, eventually, keyed_client, metric, send_json, two_apps_and_admin_keys,
};
use facekey_runtime::config::Config;
use facekey_runtime::enrolments::{Creator, Enrolments};
use facekey_runtime::store::StoreError;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The quota the tests run with.
const QUOTA: usize = 3;

async fn create(s: &Running, client: &reqwest::Client, name: &str) -> (StatusCode, Value) {
    send_json(
        client
            .post(s.url("/v1/subjects"))
            .json(&json!({ "name": name })),
    )
    .await
}

/// Create a subject that must be created: its id, after checking it names its creator.
async fn created(s: &Running, client: &reqwest::Client, name: &str, key_id: &str) -> String {
    let (status, v) = create(s, client, name).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["created_by"], key_id, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

/// The creation must be refused as over `key_id`'s quota, with a message naming the key, the
/// limit and its setting.
async fn refused(s: &Running, client: &reqwest::Client, key_id: &str) {
    let (status, v) = create(s, client, "one too many").await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::INSUFFICIENT_STORAGE, "key_subject_quota"),
        "{v}"
    );
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{key_id:?}"))
            && message.contains(&format!("FACEKEY_MAX_SUBJECTS_PER_KEY = {QUOTA}")),
        "{message}"
    );
}

/// Every subject the server lists, by id, with its `created_by`.
async fn creators(s: &Running, admin: &reqwest::Client) -> BTreeMap<String, Value> {
    let (status, v) = send_json(admin.get(s.url("/v1/subjects?limit=1000"))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["created_by"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_key_at_its_quota_is_refused_while_others_create_and_the_quota_survives_a_restart() {
    let mut config = Config::for_tests();
    config.max_subjects_per_key = QUOTA;
    let (file, keys) = two_apps_and_admin_keys(&config.data_dir);
    config.api_keys_file = Some(file);
    let (a, b, admin) = (
        keyed_client(&keys["app-a"]),
        keyed_client(&keys["app-b"]),
        keyed_client(&keys["admin"]),
    );
    let s = Running::start(config.clone()).await;

    let mut a_subjects = Vec::new();
    for i in 0..QUOTA {
        a_subjects.push(created(&s, &a, &format!("a{i}"), "app-a").await);
    }
    refused(&s, &a, "app-a").await;
    // Key A being at its quota takes nothing from key B, nor from the admin key (held to
    // FACEKEY_MAX_SUBJECTS only).
    let b_first = created(&s, &b, "b0", "app-b").await;
    for i in 0..=QUOTA {
        created(&s, &admin, &format!("root{i}"), "admin").await;
    }
    // The quota is on subjects, not faces: A still enrols a face into a subject it holds.
    let (status, v) = s.enrol_sample(&a, &a_subjects[0], "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    // Refused creations stored nothing, and are counted.
    let listed = creators(&s, &admin).await;
    assert_eq!(listed.len(), QUOTA + 1 + QUOTA + 1);
    assert_eq!(listed.values().filter(|c| *c == "app-a").count(), QUOTA);
    let metrics = s.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "facekey_subjects_refused_total{reason=\"key_quota\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "facekey_subjects_refused_total{reason=\"store_full\"}"
        ),
        0.0
    );

    // An admin finds what a key filled its quota with: the list filtered by creator.
    let (status, v) = send_json(admin.get(s.url("/v1/subjects?created_by=app-a&limit=2"))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let page: Vec<&Value> = v["subjects"].as_array().unwrap().iter().collect();
    assert_eq!(page.len(), 2, "{v}");
    assert!(page.iter().all(|s| s["created_by"] == "app-a"), "{v}");
    let next = v["next"].as_str().unwrap().to_owned();
    let (status, v) = send_json(admin.get(s.url(&format!(
        "/v1/subjects?created_by=app-a&after={}",
        url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
    ))))
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["subjects"].as_array().unwrap().len(), QUOTA - 2, "{v}");
    assert!(v["next"].is_null(), "{v}");
    let (status, v) = send_json(admin.get(s.url("/v1/subjects?created_by=nobody"))).await;
    assert_eq!(
        (status, v["subjects"].as_array().unwrap().len()),
        (StatusCode::OK, 0)
    );
    let (status, v) = send_json(admin.get(s.url("/v1/subjects?created_by="))).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
    );

    // Deleting one of A's subjects (an admin can) frees exactly one place.
    let (status, _) =
        send_json(admin.delete(s.url(&format!("/v1/subjects/{}", a_subjects[1])))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    created(&s, &a, "a again", "app-a").await;
    refused(&s, &a, "app-a").await;

    // An application erases the subjects it created (a person's erasure request) without an
    // admin key, and no other key's: B is refused A's subject, A B's; A deletes its own.
    let delete = |client: &reqwest::Client, id: &str| {
        send_json(client.delete(s.url(&format!("/v1/subjects/{id}"))))
    };
    let (status, v) = delete(&b, &a_subjects[2]).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::FORBIDDEN, "not_subject_creator"),
        "{v}"
    );
    assert!(
        !v["error"]["message"].as_str().unwrap().contains("app-a"),
        "{v}"
    );
    let (status, v) = delete(&a, &b_first).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let (status, v) = delete(&a, &a_subjects[2]).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    let (status, v) = delete(&a, &a_subjects[2]).await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::NOT_FOUND, "subject_not_found"),
        "{v}"
    );
    created(&s, &a, "a once more", "app-a").await;

    // Restart on the same data directory: the creators were stored with the subjects.
    s.stop_keeping_data().await;
    let s = Running::start(config).await;
    let (status, v) = send_json(admin.get(s.url(&format!("/v1/subjects/{}", a_subjects[0])))).await;
    assert_eq!(
        (status, &v["created_by"]),
        (StatusCode::OK, &json!("app-a")),
        "{v}"
    );
    assert_eq!(v["faces"], 1, "{v}");
    refused(&s, &a, "app-a").await;
    for i in 1..QUOTA {
        created(&s, &b, &format!("b{i}"), "app-b").await;
    }
    refused(&s, &b, "app-b").await;
    let listed = creators(&s, &admin).await;
    assert_eq!(listed[&b_first], "app-b");
    assert_eq!(listed.values().filter(|c| *c == "app-a").count(), QUOTA);
    s.stop().await;
}

/// Without a per-key limit (0), a key is held to the store's bound only.
#[tokio::test]
async fn zero_means_no_per_key_limit() {
    let mut config = Config::for_tests();
    config.max_subjects_per_key = 0;
    config.max_subjects = 4;
    let (file, keys) = two_apps_and_admin_keys(&config.data_dir);
    config.api_keys_file = Some(file);
    let a = keyed_client(&keys["app-a"]);
    let s = Running::start(config).await;
    for i in 0..4 {
        created(&s, &a, &format!("a{i}"), "app-a").await;
    }
    let (status, v) = create(&s, &a, "a4").await;
    assert_eq!(
        (status, error_code(&v)),
        (StatusCode::INSUFFICIENT_STORAGE, "store_full"),
        "{v}"
    );
    let metrics = s.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "facekey_subjects_refused_total{reason=\"store_full\"}"
        ),
        1.0
    );
    // The API description lists both refusals of creating a subject.
    let (_, doc) = send_json(s.client.get(s.url("/openapi.json"))).await;
    let full = doc["paths"]["/v1/subjects"]["post"]["responses"]["507"]["description"]
        .as_str()
        .unwrap();
    assert!(
        full.contains("store_full")
            && full.contains("key_subject_quota")
            && full.contains("FACEKEY_MAX_SUBJECTS_PER_KEY"),
        "{full}"
    );
    s.stop().await;
}

/// PostgreSQL: migrating an old database adds the creator column (old rows: NULL, counted
/// against no key); creators persist; a replica counts a key's subjects created through
/// another once notified, and a deletion through one frees the place on both.
#[tokio::test]
async fn the_creator_is_stored_in_postgres_and_counted_across_replicas() {
    let pg = PgServer::start();
    let replicas = Replicas::new(&pg);

    // A database as the previous release left it: the schema before the creator column, with
    // a subject in it.
    drop(replicas.connect().await);
    pg.psql(
        "ALTER TABLE facekey_subjects DROP COLUMN created_by; \
         DELETE FROM _sqlx_migrations WHERE version = 4",
    );
    let old = uuid::Uuid::new_v4().to_string();
    pg.psql(&format!(
        "INSERT INTO facekey_subjects (id, name) VALUES ('{old}', 'old subject')"
    ));

    // The upgrade migrates it; the old subject loads, created by nobody.
    let a = replicas.connect().await;
    let b = replicas.connect().await;
    assert_eq!(
        pg.psql(&format!(
            "SELECT coalesce(created_by, '<null>') FROM facekey_subjects WHERE id = '{old}'"
        )),
        "<null>"
    );
    let on_a = Arc::new(Enrolments::open(Arc::new(a.clone()), "m", 2).await.unwrap());
    let on_b = Arc::new(Enrolments::open(Arc::new(b.clone()), "m", 2).await.unwrap());
    let follower = tokio::spawn(on_b.clone().follow(b));
    let (old_subject, _) = on_a.index().get(&old).unwrap();
    assert_eq!(old_subject.created_by, None);

    let app = Creator {
        key_id: Some("app-a"),
        quota: Some(2),
    };
    let first = on_a.create_subject("a0", app).await.unwrap();
    on_a.create_subject("a1", app).await.unwrap();
    assert_eq!(
        pg.psql("SELECT count(*) FROM facekey_subjects WHERE created_by = 'app-a'"),
        "2"
    );
    // Replica b counts them once notified, and refuses the key's third subject.
    assert!(
        eventually(Duration::from_secs(5), || on_b
            .index()
            .subjects_created_by("app-a")
            == 2)
        .await,
        "a's creations never reached b"
    );
    assert!(matches!(
        on_b.create_subject("a2", app).await,
        Err(StoreError::KeyQuota {
            held: 2,
            limit: 2,
            ..
        })
    ));
    // Another key, and the old creator-less subject, are not counted against it.
    let other = Creator {
        key_id: Some("app-b"),
        quota: Some(2),
    };
    on_b.create_subject("b0", other).await.unwrap();
    assert_eq!(on_b.index().subjects_created_by("app-b"), 1);

    // A deletion through a frees the place on b.
    assert!(on_a.delete_subject(&first.id).await.unwrap());
    assert!(
        eventually(Duration::from_secs(5), || on_b
            .index()
            .subjects_created_by("app-a")
            == 1)
        .await,
        "the deletion never reached b"
    );
    on_b.create_subject("a2", app).await.unwrap();

    // A replica started afresh loads the creators from the database.
    let fresh = Arc::new(
        Enrolments::open(Arc::new(replicas.connect().await), "m", 2)
            .await
            .unwrap(),
    );
    assert_eq!(fresh.index().subjects_created_by("app-a"), 2);
    assert_eq!(fresh.index().subjects_created_by("app-b"), 1);
    assert_eq!(fresh.index().subject_count(), 4);
    assert!(fresh.create_subject("a3", app).await.is_err());
    follower.abort();
}

/// PostgreSQL: one key's creations racing through two replicas at the same moment, before
/// either replica has heard of the other's, are held to the quota exactly: the store counts
/// the key's subjects inside each creation, one creation of the key at a time. Another key
/// racing beside it is not held up or counted.
#[tokio::test]
async fn racing_creations_through_two_replicas_stay_within_the_quota() {
    let pg = PgServer::start();
    let replicas = Replicas::new(&pg);
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

    const LIMIT: usize = 3;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let replica = if i % 2 == 0 {
            on_a.clone()
        } else {
            on_b.clone()
        };
        let key = if i < 12 { "racer" } else { "bystander" };
        tasks.push(tokio::spawn(async move {
            let creator = Creator {
                key_id: Some(key),
                quota: Some(LIMIT),
            };
            (key, replica.create_subject(&format!("s{i}"), creator).await)
        }));
    }
    let (mut created, mut refused) = (BTreeMap::<&str, usize>::new(), 0);
    for task in tasks {
        match task.await.unwrap() {
            (key, Ok(_)) => *created.entry(key).or_default() += 1,
            (_, Err(StoreError::KeyQuota { limit: LIMIT, .. })) => refused += 1,
            (_, Err(e)) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(created.get("racer"), Some(&LIMIT), "{created:?}");
    assert_eq!(created.get("bystander"), Some(&LIMIT), "{created:?}");
    assert_eq!(refused, 12 - LIMIT + 4 - LIMIT);
    assert_eq!(
        pg.psql("SELECT count(*) FROM facekey_subjects WHERE created_by = 'racer'"),
        LIMIT.to_string()
    );
}
