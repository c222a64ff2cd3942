//! Enrolment integrity over HTTP with the real models and the sample images in
//! runtime/testdata/faces: the gates of `POST /v1/subjects/{id}/faces` (one face, live, of
//! sufficient quality, within the per-subject limit, matching the subject's faces unless the key
//! is `admin`), deleting one face, renaming and paged listing of subjects; and, with a real
//! PostgreSQL, that a face deletion and a rename on one replica reach another's index.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use common::postgres::{PgServer, Replicas};
use common::{Running, eventually, face};
use facekey_runtime::config::{Config, Switch};
use facekey_runtime::enrolments::{Creator, Enrolments};
use facekey_runtime::store::{NewTemplate, RedbStore, StoreError, TemplateKeys, TemplateStore};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

fn png(img: &image::RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// One person of the group photo t1.jpg, cut out: a live face of someone other than the
/// astronaut.
fn stranger() -> Vec<u8> {
    let group = image::load_from_memory(&face("t1.jpg")).unwrap().to_rgb8();
    png(&image::imageops::crop_imm(&group, 0, 170, 300, 320).to_image())
}

fn blank() -> Vec<u8> {
    png(&image::RgbImage::from_pixel(
        320,
        240,
        image::Rgb([128, 128, 128]),
    ))
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

async fn create(s: &Running, name: &str) -> String {
    create_with(s, &s.client, name).await
}

/// A subject created with `client`'s key (its creator).
async fn create_with(s: &Running, client: &reqwest::Client, name: &str) -> String {
    let (status, v) = s
        .json(
            client
                .post(s.url("/v1/subjects"))
                .json(&json!({ "name": name })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

async fn enrol(
    s: &Running,
    client: &reqwest::Client,
    id: &str,
    bytes: Vec<u8>,
) -> (StatusCode, Value) {
    let form = Form::new().part("image", Part::bytes(bytes).file_name("face"));
    s.json(
        client
            .post(s.url(&format!("/v1/subjects/{id}/faces")))
            .multipart(form),
    )
    .await
}

async fn faces_of(s: &Running, id: &str) -> Vec<String> {
    let (status, v) = s
        .json(s.client.get(s.url(&format!("/v1/subjects/{id}"))))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

fn spoofs(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("facekey_spoof_detected_total "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Every gate refuses with its code before anything is stored; a face of another person is
/// refused for an `enrol` key and admitted for an `admin` key; the limit names its setting; a
/// deleted face frees its place.
#[tokio::test]
async fn enrolment_gates_with_real_images() {
    let mut config = Config::for_tests();
    config.max_faces_per_subject = 3;
    let s = Running::start(config).await;
    let enrol_key = s.client_for("enrol");
    let id = create_with(&s, &enrol_key, "Eileen Collins").await;

    // The first face of a subject another key created decides who that subject is: refused to
    // an `enrol` key before any model runs, whatever the face; its creator (here `admin`) sets it,
    // and then the `enrol` key may add faces that match it.
    let others = create(&s, "Created by admin").await;
    let (status, v) = enrol(&s, &enrol_key, &others, face("astronaut.png")).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::FORBIDDEN, "not_subject_creator"),
        "{v}"
    );
    // The creator's key id is another tenant's: not named to this one.
    assert!(!message(&v).contains("(admin)"), "{v}");
    let (status, v) = enrol(&s, &s.client, &others, face("astronaut.png")).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, v) = enrol(&s, &enrol_key, &others, face("astronaut_640x480.jpg")).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");

    // The group photo: several faces, whatever FACEKEY_MULTI_FACE (default `largest`) says.
    let (status, v) = enrol(&s, &enrol_key, &id, face("t1.jpg")).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "multiple_faces"),
        "{v}"
    );
    let (status, v) = enrol(&s, &enrol_key, &id, blank()).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "no_face"),
        "{v}"
    );

    // Tom_Hanks_54745.png is a photo the liveness model calls a presentation attack: refused,
    // and reported as a spoof like verification reports one.
    let before = spoofs(&s.metrics().await);
    let (status, v) = enrol(&s, &enrol_key, &id, face("Tom_Hanks_54745.png")).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "enrol_not_live"),
        "{v}"
    );
    assert!(message(&v).contains("FACEKEY_ENROL_LIVENESS"), "{v}");
    assert_eq!(spoofs(&s.metrics().await), before + 1);

    // messi5.jpg is live but its face is 28 px wide: below the default quality minimum.
    let (status, v) = enrol(&s, &enrol_key, &id, face("messi5.jpg")).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "low_quality"),
        "{v}"
    );
    assert!(
        message(&v).contains("FACEKEY_ENROL_MIN_QUALITY") && message(&v).contains("0.4"),
        "{v}"
    );
    assert!(faces_of(&s, &id).await.is_empty(), "nothing stored");

    // A good, live portrait is enrolled; a second photo of the same person matches it.
    let (status, v) = enrol(&s, &enrol_key, &id, face("astronaut.png")).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(
        (v["faces"].as_u64(), v["liveness"].as_str()),
        (Some(1), Some("live"))
    );
    assert!(v["quality"]["score"].as_f64().unwrap() >= 0.4, "{v}");
    let (status, v) = enrol(&s, &enrol_key, &id, face("astronaut_640x480.jpg")).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");

    // Someone else's face, live and sharp: refused for an `enrol` key, admitted for `admin`.
    let (status, v) = enrol(&s, &enrol_key, &id, stranger()).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "face_mismatch"),
        "{v}"
    );
    assert!(message(&v).contains("admin"), "{v}");
    let (status, v) = enrol(&s, &s.client, &id, stranger()).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let stranger_face = v["face_id"].as_str().unwrap().to_owned();

    // The limit (3 here) is checked before any inference and names its setting.
    let (status, v) = enrol(&s, &s.client, &id, face("astronaut.png")).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::CONFLICT, "too_many_faces"),
        "{v}"
    );
    assert!(message(&v).contains("FACEKEY_MAX_FACES_PER_SUBJECT"), "{v}");

    // Deleting a face: 204, then 404 for it and for an unknown subject; its place is free.
    let url = |subject: &str, f: &str| s.url(&format!("/v1/subjects/{subject}/faces/{f}"));
    let r = s
        .client
        .delete(url(&id, &stranger_face))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(!faces_of(&s, &id).await.contains(&stranger_face));
    let (status, v) = s.json(s.client.delete(url(&id, &stranger_face))).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::NOT_FOUND, "face_not_found"),
        "{v}"
    );
    let (status, v) = s
        .json(s.client.delete(url("no-such-subject", &stranger_face)))
        .await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::NOT_FOUND, "subject_not_found"),
        "{v}"
    );
    // Deleting needs `admin`.
    let (status, _) = s.json(enrol_key.delete(url(&id, "x"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, v) = enrol(&s, &enrol_key, &id, face("astronaut.png")).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["faces"], 3);

    // The gates' codes are documented.
    let (_, doc) = s.json(s.client.get(s.url("/openapi.json"))).await;
    let responses = doc["paths"]["/v1/subjects/{id}/faces"]["post"]["responses"].to_string();
    for code in [
        "multiple_faces",
        "enrol_not_live",
        "enrol_liveness_unknown",
        "low_quality",
        "face_mismatch",
        "not_subject_creator",
        "too_many_faces",
    ] {
        assert!(responses.contains(code), "{code} undocumented: {responses}");
    }
    assert!(
        doc["paths"]["/v1/subjects/{id}/faces/{face_id}"]["delete"].is_object(),
        "face deletion undocumented"
    );
    s.stop().await;
}

/// `FACEKEY_ENROL_LIVENESS=off`, for enrolment from ID photos: a photo the liveness model calls
/// an attack is enrolled; the other gates still hold.
#[tokio::test]
async fn enrol_liveness_off_admits_id_photos() {
    let mut config = Config::for_tests();
    config.enrol_liveness = Switch::Off;
    let s = Running::start(config).await;
    let enrol_key = s.client_for("enrol");
    let id = create_with(&s, &enrol_key, "Tom Hanks").await;
    let before = spoofs(&s.metrics().await);
    let (status, v) = enrol(&s, &enrol_key, &id, face("Tom_Hanks_54745.png")).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["liveness"], "off");
    assert_eq!(spoofs(&s.metrics().await), before);
    let (status, v) = enrol(&s, &enrol_key, &id, face("t1.jpg")).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "multiple_faces"),
        "{v}"
    );
    let (status, v) = enrol(&s, &enrol_key, &id, face("messi5.jpg")).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "low_quality"),
        "{v}"
    );
    s.stop().await;
}

/// `PATCH /v1/subjects/{id}` renames with the creation's name rules.
#[tokio::test]
async fn subjects_are_renamed() {
    let s = Running::start(Config::for_tests()).await;
    let id = create(&s, "Eileen").await;
    let patch = |id: &str, body: Value| {
        s.client
            .patch(s.url(&format!("/v1/subjects/{id}")))
            .json(&body)
    };
    let (status, v) = s
        .json(patch(&id, json!({ "name": "  Eileen Collins " })))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["id"].as_str(), v["name"].as_str()),
        (Some(id.as_str()), Some("Eileen Collins"))
    );
    let (_, v) = s
        .json(s.client.get(s.url(&format!("/v1/subjects/{id}"))))
        .await;
    assert_eq!(v["name"], "Eileen Collins");
    for body in [
        json!({ "name": "  " }),
        json!({ "name": "x".repeat(129) }),
        json!({ "name": "a", "extra": 1 }),
        json!({}),
    ] {
        let (status, v) = s.json(patch(&id, body.clone())).await;
        assert_eq!(
            (status, code(&v)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            "{body}: {v}"
        );
    }
    let (status, v) = s
        .json(patch("no-such-subject", json!({ "name": "x" })))
        .await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::NOT_FOUND, "subject_not_found"),
        "{v}"
    );
    // Renaming needs `admin`.
    let (status, _) = s
        .json(
            s.client_for("enrol")
                .patch(s.url(&format!("/v1/subjects/{id}")))
                .json(&json!({ "name": "Mallory" })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    s.stop().await;
}

/// `GET /v1/subjects?limit=&after=` pages through every subject once, oldest first, also when
/// the subject a cursor points at is deleted in between; bad parameters are 422 JSON.
#[tokio::test]
async fn subjects_are_listed_a_page_at_a_time() {
    let s = Running::start(Config::for_tests()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(create(&s, &format!("subject {i}")).await);
    }
    let list = |query: String| s.client.get(s.url(&format!("/v1/subjects{query}")));
    let (status, all) = s.json(list(String::new())).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["next"], Value::Null);
    let all: Vec<String> = all["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    let mut listed = all.clone();
    listed.sort();
    assert_eq!(listed, sorted);

    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let (status, v) = s.json(list(query.clone())).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let page = v["subjects"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|s| s["id"].as_str().unwrap().to_owned()));
        pages += 1;
        match v["next"].as_str() {
            Some(next) => {
                query = format!("?limit=2&after={}", urlencode(next));
            }
            None => break,
        }
    }
    assert_eq!((seen.clone(), pages), (all.clone(), 3));

    // A subject id works as `after` too; deleting the cursor's subject keeps the position.
    let (_, v) = s.json(list(format!("?limit=1&after={}", all[0]))).await;
    assert_eq!(v["subjects"][0]["id"], all[1].as_str());
    let (_, first) = s.json(list("?limit=2".into())).await;
    let next = first["next"].as_str().unwrap().to_owned();
    let r = s
        .client
        .delete(s.url(&format!("/v1/subjects/{}", all[1])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, rest) = s
        .json(list(format!("?limit=100&after={}", urlencode(&next))))
        .await;
    let rest: Vec<&str> = rest["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        rest,
        all[2..].iter().map(String::as_str).collect::<Vec<_>>()
    );

    for query in [
        "?limit=0",
        "?limit=1001",
        "?limit=ten",
        "?after=no-such-subject",
        "?after=yesterday_x",
        "?page=2",
    ] {
        let (status, v) = s.json(list(query.into())).await;
        assert_eq!(
            (status, code(&v)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            "{query}: {v}"
        );
    }
    let (status, v) = s.json(list("?limit=1000".into())).await;
    assert_eq!(
        (status, v["subjects"].as_array().unwrap().len()),
        (StatusCode::OK, 4)
    );
    s.stop().await;
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Two replicas' enrolments on `pg`'s database, the second following the changes the first
/// makes (its follower task, to abort at the end).
async fn followed_replicas(
    pg: &PgServer,
) -> (
    Arc<Enrolments>,
    Arc<Enrolments>,
    tokio::task::JoinHandle<()>,
) {
    followed_from(&Replicas::new(pg)).await
}

/// [`followed_replicas`] of `replicas` (whose key a third replica can share).
async fn followed_from(
    replicas: &Replicas,
) -> (
    Arc<Enrolments>,
    Arc<Enrolments>,
    tokio::task::JoinHandle<()>,
) {
    let a = replicas.connect().await;
    let b = replicas.connect().await;
    let on_a = Arc::new(Enrolments::open(Arc::new(a), "m", 2).await.unwrap());
    let on_b = Arc::new(Enrolments::open(Arc::new(b.clone()), "m", 2).await.unwrap());
    let follower = tokio::spawn(on_b.clone().follow(b));
    (on_a, on_b, follower)
}

/// Two replicas on one PostgreSQL: a face deleted and a subject renamed through one reach the
/// other's index through NOTIFY, without a reload.
#[tokio::test]
async fn face_deletion_and_rename_reach_other_replicas() {
    let pg = PgServer::start();
    let (on_a, on_b, follower) = followed_replicas(&pg).await;
    let reloads = on_b.health().reloads;

    let subject = on_a
        .create_subject("Ada", Creator::default())
        .await
        .unwrap();
    let template = |v: f32| NewTemplate {
        model: "m".into(),
        embedding: vec![v, v],
        quality: Some(0.9),
        enrolled_by: None,
    };
    let (gone, _) = on_a
        .add_template(&subject.id, template(1.0), Creator::default())
        .await
        .unwrap();
    on_a.add_template(&subject.id, template(2.0), Creator::default())
        .await
        .unwrap();
    let faces_on_b = || on_b.index().get(&subject.id).map(|(s, _)| s.faces);
    assert!(
        eventually(Duration::from_secs(5), || faces_on_b() == Some(2)).await,
        "enrolments never reached b"
    );
    // The follower's (re)connection reloads once; from here on only notifications apply.
    let reloads_after_connect = on_b.health().reloads;
    assert!(reloads_after_connect > reloads);

    let after = on_a.delete_template(&subject.id, &gone.id).await.unwrap();
    assert_eq!(after.faces, 1);
    assert!(
        eventually(Duration::from_secs(5), || faces_on_b() == Some(1)).await,
        "the deletion never reached b"
    );
    let (_, templates) = on_b.index().get(&subject.id).unwrap();
    assert!(templates.iter().all(|t| t.id != gone.id));
    assert_eq!(
        on_b.index().nearest(&[1.0, 1.0], 1)[0].distance,
        2f32.sqrt()
    );

    on_a.rename_subject(&subject.id, "Ada Lovelace")
        .await
        .unwrap();
    let name_on_b = || on_b.index().get(&subject.id).map(|(s, _)| s.name);
    assert!(
        eventually(Duration::from_secs(5), || name_on_b().as_deref()
            == Some("Ada Lovelace"))
        .await,
        "the rename never reached b"
    );
    assert_eq!(
        on_b.health().reloads,
        reloads_after_connect,
        "no reload needed"
    );

    // Unknown face and subject, and ids that are not UUIDs, are told apart (by a third
    // connection to the same database).
    let a = Replicas::new(&pg).connect().await;
    let store: &dyn TemplateStore = &a;
    assert!(
        store
            .delete_template(&subject.id, &gone.id)
            .await
            .unwrap_err()
            .to_string()
            .contains("has no face")
    );
    assert!(
        store
            .delete_template(&subject.id, "not-a-uuid")
            .await
            .unwrap_err()
            .to_string()
            .contains("has no face")
    );
    assert!(
        store
            .delete_template("not-a-uuid", &gone.id)
            .await
            .unwrap_err()
            .to_string()
            .contains("not found")
    );
    assert!(
        store
            .rename_subject(&uuid::Uuid::new_v4().to_string(), "x")
            .await
            .unwrap_err()
            .to_string()
            .contains("not found")
    );
    follower.abort();
}

/// Every replica keeps every subject and template in memory: the store's size is bounded, and
/// past the bound creating or enrolling answers 507 `store_full` naming the setting, before any
/// model work; deleting makes room again.
#[tokio::test]
async fn the_store_is_bounded_with_a_clear_error() {
    let mut config = Config::for_tests();
    config.max_subjects = 2;
    config.max_templates = 1;
    let s = Running::start(config).await;
    let a = create(&s, "A").await;
    let b = create(&s, "B").await;
    let (status, v) = s
        .json(
            s.client
                .post(s.url("/v1/subjects"))
                .json(&json!({"name": "C"})),
        )
        .await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{v}");
    assert_eq!(code(&v), "store_full");
    assert!(message(&v).contains("FACEKEY_MAX_SUBJECTS"), "{v}");
    let (status, v) = enrol(&s, &s.client, &a, face("astronaut.png")).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, v) = enrol(&s, &s.client, &b, face("Tom_Hanks_54745.png")).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{v}");
    assert_eq!(code(&v), "store_full");
    assert!(message(&v).contains("FACEKEY_MAX_TEMPLATES"), "{v}");
    assert!(faces_of(&s, &b).await.is_empty());
    let metrics = s.metrics().await;
    for line in [
        "facekey_enrolled_subjects_limit 2",
        "facekey_enrolled_templates_limit 1",
        "facekey_enrolled_templates 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}");
    }
    // Deleting a subject (and its face) makes room for both again.
    let (status, _) = s
        .json(s.client.delete(s.url(&format!("/v1/subjects/{a}"))))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    create(&s, "C").await;
    let (status, v) = enrol(&s, &s.client, &b, face("astronaut.png")).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    s.stop().await;
}

/// The other replica's change listener loses its connection without a reset (its database
/// backend frozen, as a failover to another node or a NAT dropping an idle connection leaves
/// it): notifications stop arriving and nothing says so. The listener's probe notices within
/// its period, reconnects and reloads, so a subject deleted meanwhile stops matching there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_listener_is_noticed_and_the_index_catches_up() {
    let pg = PgServer::start();
    let (on_a, on_b, follower) = followed_replicas(&pg).await;
    let subject = on_a
        .create_subject("Ada", Creator::default())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || on_b
            .index()
            .get(&subject.id)
            .is_some())
        .await,
        "the subject never reached b"
    );
    // Freeze the backend serving b's LISTEN: its socket stays open, nothing answers.
    let pid = pg.psql(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'facekey-runtime-listener' ORDER BY backend_start DESC LIMIT 1",
    );
    let pid = pid.trim().to_owned();
    assert!(!pid.is_empty(), "no listening backend");
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
    };
    assert!(signal("-STOP").success());
    assert!(on_a.delete_subject(&subject.id).await.unwrap());
    let caught_up = eventually(Duration::from_secs(60), || {
        on_b.index().get(&subject.id).is_none()
    })
    .await;
    signal("-CONT");
    assert!(caught_up, "b still matches a deleted subject");
    follower.abort();
}

/// A subject created through one replica is known to another before its notification arrives
/// (here, never: the other replica does not follow), so create-then-enrol behind one Service,
/// each request on another replica, does not answer `subject_not_found`.
#[tokio::test]
async fn a_subject_just_created_elsewhere_is_read_from_the_store() {
    let pg = PgServer::start();
    let replicas = Replicas::new(&pg);
    let on_a = Arc::new(
        Enrolments::open(Arc::new(replicas.connect().await), "m", 2)
            .await
            .unwrap(),
    );
    let on_b = Enrolments::open(Arc::new(replicas.connect().await), "m", 2)
        .await
        .unwrap();
    let ada = on_a
        .create_subject("Ada", Creator::default())
        .await
        .unwrap();
    on_a.add_template(
        &ada.id,
        NewTemplate {
            model: "m".into(),
            embedding: vec![1.0, 0.0],
            quality: Some(0.9),
            enrolled_by: None,
        },
        Creator::default(),
    )
    .await
    .unwrap();
    assert!(on_b.index().get(&ada.id).is_none());
    on_b.catch_up(&ada.id).await;
    let (subject, faces) = on_b.index().get(&ada.id).expect("read from the store");
    assert_eq!((subject.name.as_str(), faces.len()), ("Ada", 1));
    // Unknown ids stay unknown, and ids no UUID spells are not looked up at all.
    on_b.catch_up(&uuid::Uuid::new_v4().to_string()).await;
    on_b.catch_up("../etc/passwd").await;
    assert_eq!(on_b.index().stats().subjects, 1);
    assert!(on_b.health().available);
}

/// A TCP proxy in front of `port` that, once armed, forwards the next client message holding a
/// `COMMIT` and then cuts that connection without passing the server's answer on: the commit
/// takes on the server, its answer is lost. Returns the proxy's port and the arming switch.
async fn commit_answer_cutter(port: u16) -> (u16, Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let armed = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    let switch = armed.clone();
    tokio::spawn(async move {
        loop {
            let (client, _) = listener.accept().await.unwrap();
            let server = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let armed = switch.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let cut = Arc::new(tokio::sync::Notify::new());
                let cut_up = cut.clone();
                let up = tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        // The COMMIT statement itself (a simple query, NUL-terminated), not
                        // a `BEGIN ISOLATION LEVEL READ COMMITTED`.
                        let commit = buf[..n].windows(7).any(|w| w == b"COMMIT\0");
                        if commit && armed.swap(false, Ordering::SeqCst) {
                            // Let the server take it, then drop both sides unanswered.
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            cut_up.notify_one();
                            return;
                        }
                    }
                });
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    tokio::select! {
                        () = cut.notified() => break,
                        read = sr.read(&mut buf) => match read {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if cw.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        },
                    }
                }
                up.abort();
            });
        }
    });
    (proxy_port, armed)
}

/// A commit whose answer is lost (the connection broke after `COMMIT` went out) but which took:
/// the write is acknowledged, not answered 503 for the client to retry into a second subject
/// or face counted against its key's quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_is_found_stored() {
    use std::sync::atomic::Ordering;
    let pg = PgServer::start();
    let (proxy, armed) = commit_answer_cutter(pg.port).await;
    let line = facekey_runtime::store::cipher::new_key_line("k1").unwrap();
    let keys = TemplateKeys::parse(&line, std::path::Path::new("k")).unwrap();
    let url = format!("postgres://postgres:x@127.0.0.1:{proxy}/facekey?sslmode=disable");
    let store = facekey_runtime::store::postgres::PgStore::connect(&url, None, keys, 5, "TEST_URL")
        .await
        .unwrap();
    armed.store(true, Ordering::SeqCst);
    let subject = store.create_subject("Ada", Some("app"), Some(10)).await;
    assert!(
        !armed.load(Ordering::SeqCst),
        "the commit never went through the proxy"
    );
    let subject = subject.expect("a stored subject acknowledged");
    let count = |sql: &str| pg.psql(sql).trim().to_owned();
    assert_eq!(count("SELECT count(*) FROM facekey_subjects"), "1");
    armed.store(true, Ordering::SeqCst);
    let face = store
        .add_template(
            &subject.id,
            NewTemplate {
                model: "m".into(),
                embedding: vec![1.0, 0.0],
                quality: Some(0.9),
                enrolled_by: Some("app".into()),
            },
            Some(10),
        )
        .await
        .expect("a stored face acknowledged");
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM facekey_templates WHERE id = '{}'",
            face.id
        )),
        "1"
    );
}

/// A listener that answers queries but never receives a notification (as behind a PgBouncer in
/// transaction mode) keeps the store reported unavailable: reconnecting and reloading do not
/// count as receiving, only its own probe coming back does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_never_receives_stays_reported() {
    let pg = PgServer::start();
    let replicas = Replicas::new(&pg);
    let store = replicas.connect().await;
    let deaf = store.clone().listening_on("facekey_nobody_writes_here");
    let on_b = Arc::new(Enrolments::open(Arc::new(store), "m", 2).await.unwrap());
    let follower = tokio::spawn(on_b.clone().follow(deaf));
    assert!(
        eventually(Duration::from_secs(10), || !on_b.health().available).await,
        "a deaf listener was reported healthy"
    );
    // Through its reconnections and reloads (one every ~6 s), never available again.
    let mut seen_available = false;
    let until = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < until {
        seen_available |= on_b.health().available;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = on_b.health().error.unwrap_or_default();
    assert!(!seen_available, "reported available between reconnections");
    assert!(error.contains("probe did not come back"), "{error}");
    assert!(on_b.health().reloads >= 2, "{:?}", on_b.health());
    follower.abort();
}

/// A real PgBouncer between a replica and PostgreSQL. In session mode (what the README asks
/// for) the replica's listener receives: its probe comes back, and a deletion through another
/// replica reaches it at once. In transaction mode PgBouncer does not carry session state
/// (prepared statements, `LISTEN`): start-up stops naming the pooler, or the replica's store is
/// reported unavailable (its probe never comes back), never silently out of step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_real_pgbouncer_session_mode_follows_and_transaction_mode_is_reported() {
    use common::postgres::PgBouncer;
    let pg = PgServer::start();
    let replicas = Replicas::new(&pg);
    let on_a = Arc::new(
        Enrolments::open(Arc::new(replicas.connect().await), "m", 2)
            .await
            .unwrap(),
    );

    let session = PgBouncer::start(&pg, "session");
    let b = replicas.connect_to(&session.url()).await.unwrap();
    let on_b = Arc::new(Enrolments::open(Arc::new(b.clone()), "m", 2).await.unwrap());
    let follower = tokio::spawn(on_b.clone().follow(b));
    assert!(
        eventually(Duration::from_secs(10), || on_b.health().available).await,
        "behind a session-mode PgBouncer the probe never came back: {:?}\n{}",
        on_b.health(),
        session.log()
    );
    let ada = on_a
        .create_subject("Ada", Creator::default())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || on_b
            .index()
            .get(&ada.id)
            .is_some())
        .await,
        "a creation never reached the replica behind PgBouncer"
    );
    assert!(on_a.delete_subject(&ada.id).await.unwrap());
    assert!(
        eventually(Duration::from_secs(2), || on_b
            .index()
            .get(&ada.id)
            .is_none())
        .await,
        "a deletion never reached the replica behind PgBouncer"
    );
    assert!(on_b.health().available, "{:?}", on_b.health());
    follower.abort();

    // Debian's PgBouncer (1.18) does not carry prepared statements in transaction mode either:
    // start-up stops, naming the cause. Were it to start, it must never be reported available.
    let transaction = PgBouncer::start(&pg, "transaction");
    let c = match replicas.connect_to(&transaction.url()).await {
        Err(e) => {
            let why = format!("{e}");
            assert!(
                why.contains("pooler in transaction mode") && why.contains("session pooling"),
                "{why}"
            );
            return;
        }
        Ok(c) => c,
    };
    let on_c = Arc::new(Enrolments::open(Arc::new(c.clone()), "m", 2).await.unwrap());
    let follower = tokio::spawn(on_c.clone().follow(c));
    let mut seen_available = false;
    let until = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < until {
        seen_available |= on_c.health().available;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = on_c.health().error.unwrap_or_default();
    assert!(
        !seen_available,
        "a replica behind a transaction-mode PgBouncer was reported available"
    );
    assert!(error.contains("probe did not come back"), "{error}");
    follower.abort();
}

/// A key creating subjects as fast as it can through a replica, each creation waiting on the
/// key's quota lock with a store connection held, takes every store connection there. The
/// replica's change listener and its reloads have connections of their own, so a subject
/// deleted through another replica still stops verifying there at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_writes_does_not_starve_the_change_listener() {
    use sqlx::Connection;
    let pg = PgServer::start();
    let (on_a, on_b, follower) = followed_replicas(&pg).await;
    let ada = on_a
        .create_subject("Ada", Creator::default())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || on_b
            .index()
            .get(&ada.id)
            .is_some())
        .await,
        "the subject never reached b"
    );
    // Hold key `app`'s quota lock, so that its creations through b wait with their connection.
    let mut holder = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
    let mut tx = holder.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('facekey.subject_creator.app', 0))")
        .execute(&mut *tx)
        .await
        .unwrap();
    let burst: Vec<_> = (0..12)
        .map(|i| {
            let on_b = on_b.clone();
            tokio::spawn(async move {
                let creator = Creator {
                    key_id: Some("app"),
                    quota: Some(100),
                };
                on_b.create_subject(&format!("burst-{i}"), creator).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(on_a.delete_subject(&ada.id).await.unwrap());
    let dropped = eventually(Duration::from_secs(2), || {
        on_b.index().get(&ada.id).is_none()
    })
    .await;
    tx.rollback().await.unwrap();
    for creation in burst {
        let _ = creation.await.unwrap();
    }
    assert!(
        dropped,
        "a subject deleted on a still verifies on b during the burst"
    );
    follower.abort();
}

/// A template that stops decrypting (written under a key this replica does not hold, as a
/// mis-ordered key rotation leaves it) is left out of the other replica's index, which reports
/// its store unavailable (`/readyz`, `facekey_store_up`, the store-down alert) naming it, and
/// keeps following every other change: a subject deleted elsewhere stops verifying there at
/// once. (It used to stop following altogether until restarted, deletions included.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_that_does_not_open_here_stops_no_other_change() {
    let pg = PgServer::start();
    let replicas = Replicas::new(&pg);
    let (on_a, on_b, follower) = followed_from(&replicas).await;
    let template = |v: f32| NewTemplate {
        model: "m".into(),
        embedding: vec![v, 1.0 - v],
        quality: Some(0.9),
        enrolled_by: None,
    };
    let ada = on_a
        .create_subject("Ada", Creator::default())
        .await
        .unwrap();
    on_a.add_template(&ada.id, template(1.0), Creator::default())
        .await
        .unwrap();
    let eve = on_a
        .create_subject("Eve", Creator::default())
        .await
        .unwrap();
    on_a.add_template(&eve.id, template(0.0), Creator::default())
        .await
        .unwrap();
    let faces_on_b = |id: &str| on_b.index().get(id).map(|(_, t)| t.len());
    assert!(
        eventually(Duration::from_secs(5), || faces_on_b(&ada.id) == Some(1)
            && faces_on_b(&eve.id) == Some(1))
        .await,
        "the faces never reached b"
    );
    assert!(on_b.health().available);
    let key_id = pg.psql("SELECT DISTINCT key_id FROM facekey_templates");
    let key_id = key_id.trim();
    pg.psql(&format!(
        "UPDATE facekey_templates SET key_id = 'rotated-away' WHERE subject_id = '{}'",
        ada.id
    ));
    pg.psql(&format!(
        "SELECT pg_notify('facekey_changes', '{}')",
        ada.id
    ));
    assert!(
        eventually(Duration::from_secs(10), || !on_b.health().available).await,
        "b kept reporting a store whose template it cannot open as available"
    );
    let error = on_b.health().error.unwrap_or_default();
    assert!(
        error.contains("1 stored template(s) do not open") && error.contains("rotated-away"),
        "{error}"
    );
    assert_eq!(faces_on_b(&ada.id), Some(0), "never matched garbage");
    // Its faces in the index are not all it has: no enrolment is judged against them (with
    // none left, the creator's key would add any face unmatched).
    let refused = on_b.check_all_faces_readable(&ada.id).unwrap_err();
    assert!(matches!(refused, StoreError::Unavailable(_)), "{refused}");
    assert!(on_b.check_all_faces_readable(&eve.id).is_ok());
    // Every other change still reaches b: a deletion at once, a new face too.
    assert!(on_a.delete_subject(&eve.id).await.unwrap());
    assert!(
        eventually(Duration::from_secs(5), || faces_on_b(&eve.id).is_none()).await,
        "a subject deleted on a still verifies on b"
    );
    let cy = on_a.create_subject("Cy", Creator::default()).await.unwrap();
    on_a.add_template(&cy.id, template(0.5), Creator::default())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || faces_on_b(&cy.id) == Some(1)).await,
        "a face enrolled on a never reached b"
    );
    assert!(!on_b.health().available);
    // Readable again (the key back in the file, here the row): healthy with its next change.
    pg.psql(&format!(
        "UPDATE facekey_templates SET key_id = '{key_id}' WHERE subject_id = '{}'",
        ada.id
    ));
    pg.psql(&format!(
        "SELECT pg_notify('facekey_changes', '{}')",
        ada.id
    ));
    assert!(
        eventually(Duration::from_secs(10), || on_b.health().available).await,
        "b never recovered: {:?}",
        on_b.health()
    );
    assert_eq!(faces_on_b(&ada.id), Some(1));
    assert!(on_b.health().error.is_none());
    // A replica starting while a template does not open refuses to start, naming it.
    pg.psql(&format!(
        "UPDATE facekey_templates SET key_id = 'rotated-away' WHERE subject_id = '{}'",
        ada.id
    ));
    let err = Enrolments::open(Arc::new(replicas.connect().await), "m", 2)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("do not open") && err.contains(&ada.id),
        "{err}"
    );
    follower.abort();
}

/// Every store operation on `store` through another spelling of a subject's or face's UUID
/// (upper case, no hyphens, braces) names nothing and writes nothing: one id, one spelling.
async fn other_spellings_name_nothing(store: &dyn TemplateStore) {
    let subject = store.create_subject("Ada", None, None).await.unwrap();
    let new = |v: f32| NewTemplate {
        model: "m".into(),
        embedding: vec![v, v],
        quality: Some(0.9),
        enrolled_by: None,
    };
    let face = store
        .add_template(&subject.id, new(1.0), None)
        .await
        .unwrap();
    let spellings = |id: &str| {
        [
            id.to_uppercase(),
            id.replace('-', ""),
            format!("{{{id}}}"),
            format!("urn:uuid:{id}"),
        ]
    };
    for other in spellings(&subject.id) {
        let described = store.describe();
        assert!(
            store.load_subject(&other).await.unwrap().is_none(),
            "{described}: {other} loaded"
        );
        let added = store.add_template(&other, new(2.0), None).await;
        assert!(
            matches!(added, Err(StoreError::SubjectNotFound(_))),
            "{described}: add through {other}: {added:?}"
        );
        let renamed = store.rename_subject(&other, "Eve").await;
        assert!(renamed.is_err(), "{described}: renamed through {other}");
        let gone = store.delete_template(&other, &face.id).await;
        assert!(gone.is_err(), "{described}: face deleted through {other}");
        assert!(
            !store.delete_subject(&other).await.unwrap(),
            "{described}: subject deleted through {other}"
        );
    }
    for other in spellings(&face.id) {
        let gone = store.delete_template(&subject.id, &other).await;
        assert!(gone.is_err(), "face deleted through {other}");
    }
    let kept = store.load_subject(&subject.id).await.unwrap().unwrap();
    assert_eq!(kept.name, "Ada");
    assert_eq!(kept.templates.len(), 1, "{}", store.describe());
    assert_eq!(kept.templates[0].id, face.id);
}

/// The embedded store and PostgreSQL agree on subject and face ids: another spelling of the
/// same UUID is not found by either. (PostgreSQL used to accept it, commit the write and then
/// answer 404 when the index, keyed by the spelling it hands out, did not have it.)
#[tokio::test]
async fn an_id_has_one_spelling_in_both_stores() {
    let dir = tempfile::tempdir().unwrap();
    let keys = TemplateKeys::load_or_create_local(dir.path()).unwrap();
    let redb = RedbStore::open(dir.path(), 10, keys).unwrap();
    other_spellings_name_nothing(&redb).await;

    let pg = PgServer::start();
    let on_pg = Replicas::new(&pg).connect().await;
    other_spellings_name_nothing(&on_pg).await;
}

/// A TCP proxy in front of `port` that, once given a needle, passes on the next client message
/// holding it and from then on black-holes that connection: nothing more is passed either way
/// and the sockets stay open, as a network dropping everything without a reset does. Returns
/// the proxy's port and the needle's slot.
async fn black_hole_after(port: u16) -> (u16, Arc<std::sync::Mutex<Option<Vec<u8>>>>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let needle: Arc<std::sync::Mutex<Option<Vec<u8>>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    let armed = needle.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            // The server stopped (the test is over): the client's connection just closes.
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                continue;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let holed = Arc::new(AtomicBool::new(false));
            let (armed, holed_up) = (armed.clone(), holed.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if holed_up.load(Ordering::SeqCst) {
                        continue;
                    }
                    {
                        let mut needle = armed.lock().unwrap();
                        let hit = needle
                            .as_ref()
                            .is_some_and(|x| buf[..n].windows(x.len()).any(|w| w == x));
                        if hit {
                            // The message goes through; its answer, and all after, do not.
                            *needle = None;
                            holed_up.store(true, Ordering::SeqCst);
                        }
                    }
                    if sw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if !holed.load(Ordering::SeqCst) && cw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (proxy_port, needle)
}

/// A connection whose query was abandoned (a request timeout) on a network that drops
/// everything without a reset (the database's node lost) is given back to its pool and, not
/// answering, dropped within the release check's 5 s: it held its pool place until TCP gave up
/// (about 15 minutes), and a few such connections took a replica's whole pool past a failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_connection_that_never_answers_leaves_the_pool() {
    const PROBE: &str = "facekey-black-hole-probe";
    let pg = PgServer::start();
    let replicas = Replicas::new(&pg);
    let (proxy, needle) = black_hole_after(pg.port).await;
    let url = format!("postgres://postgres:x@127.0.0.1:{proxy}/facekey?sslmode=disable");
    let store = replicas.connect_to(&url).await.unwrap();
    let pool = store.pool().clone();
    let mut conn = pool.acquire().await.unwrap();
    *needle.lock().unwrap() = Some(PROBE.as_bytes().to_vec());
    let hung = tokio::time::timeout(
        Duration::from_secs(1),
        sqlx::query("SELECT 'facekey-black-hole-probe'").execute(&mut *conn),
    )
    .await;
    assert!(hung.is_err(), "the query was answered: {hung:?}");
    let size = pool.size();
    drop(conn);
    assert!(
        eventually(Duration::from_secs(10), || pool.size() < size).await,
        "the connection still holds its pool place"
    );
    // The pool serves on new connections.
    sqlx::query("SELECT 1").execute(&pool).await.unwrap();
}

/// The change listener's read of a notified subject whose connection black-holes mid-query (no
/// reset, no answer: TCP would take about 15 minutes to give up) does not hold the listener, nor
/// the store reported in step on `/readyz`, meanwhile: within the read's bound the listener
/// counts as lost and the store is reported unavailable; it reconnects, reloads, and the
/// change reaches the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_read_that_never_gets_an_answer_is_noticed() {
    let pg = PgServer::start();
    let replicas = Replicas::new(&pg);
    let (proxy, needle) = black_hole_after(pg.port).await;
    let on_a = Arc::new(
        Enrolments::open(Arc::new(replicas.connect().await), "m", 2)
            .await
            .unwrap(),
    );
    let url = format!("postgres://postgres:x@127.0.0.1:{proxy}/facekey?sslmode=disable");
    let b = replicas.connect_to(&url).await.unwrap();
    let on_b = Arc::new(Enrolments::open(Arc::new(b.clone()), "m", 2).await.unwrap());
    let follower = tokio::spawn(on_b.clone().follow(b));
    let subject = on_a
        .create_subject("Ada", Creator::default())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || on_b
            .index()
            .get(&subject.id)
            .is_some()
            && on_b.health().available)
        .await,
        "the subject never reached b: {:?}",
        on_b.health()
    );
    // b's read of the subject after its deletion goes out, and nothing comes back.
    *needle.lock().unwrap() = Some(subject.id.as_bytes().to_vec());
    assert!(on_a.delete_subject(&subject.id).await.unwrap());
    let noticed = eventually(Duration::from_secs(30), || !on_b.health().available).await;
    assert!(
        needle.lock().unwrap().is_none(),
        "b never read the deleted subject"
    );
    assert!(noticed, "a hung read left the store reported in step");
    let error = on_b.health().error.unwrap_or_default();
    assert!(error.contains("no answer within"), "{error}");
    // Reconnected and reloaded (on other connections): the deletion reaches b.
    assert!(
        eventually(Duration::from_secs(60), || on_b
            .index()
            .get(&subject.id)
            .is_none()
            && on_b.health().available)
        .await,
        "b never caught up: {:?}",
        on_b.health()
    );
    follower.abort();
}

/// A subject's faces read back in the order they were enrolled, whatever their ids: the first
/// face is the anchor new faces are matched against. `ORDER BY created_at` named the output
/// column (the timestamp as text, to the second), so faces of one second came back in the
/// random order of their ids, on every replica but the writer and after every reload.
#[tokio::test]
async fn faces_enrolled_in_one_second_read_back_in_enrolment_order() {
    let pg = PgServer::start();
    let line = facekey_runtime::store::cipher::new_key_line("k1").unwrap();
    let keys = TemplateKeys::parse(&line, std::path::Path::new("k")).unwrap();
    let store =
        facekey_runtime::store::postgres::PgStore::connect(&pg.url(), None, keys, 5, "TEST_URL")
            .await
            .unwrap();
    let subject = store
        .create_subject("Ada", Some("app"), None)
        .await
        .unwrap();
    let face = |i: f32| NewTemplate {
        model: "m".into(),
        embedding: vec![1.0, i],
        quality: Some(0.9),
        enrolled_by: Some("app".into()),
    };
    let first = store
        .add_template(&subject.id, face(0.0), None)
        .await
        .unwrap();
    // A later face whose id sorts before the first's (ids are random: one try in two).
    let mut later = None;
    for _ in 0..40 {
        let t = store
            .add_template(&subject.id, face(1.0), None)
            .await
            .unwrap();
        if t.id < first.id {
            later = Some(t);
            break;
        }
        store.delete_template(&subject.id, &t.id).await.unwrap();
    }
    let later = later.expect("a later id sorting first");
    // Both within one second, in enrolment order (ids are sealed with the rows: not changed).
    pg.psql(&format!(
        "UPDATE facekey_templates SET created_at = date_trunc('second', now()) + \
         (CASE WHEN id = '{}' THEN interval '1 millisecond' ELSE interval '2 milliseconds' END) \
         WHERE id IN ('{}', '{}')",
        first.id, first.id, later.id
    ));
    let read = store.load_subject(&subject.id).await.unwrap().unwrap();
    let order: Vec<f32> = read.templates.iter().map(|t| t.embedding[1]).collect();
    assert_eq!(order, vec![0.0, 1.0], "{:?}", read.templates);
    let all = store.load_all().await.unwrap();
    let order: Vec<f32> = all
        .iter()
        .flat_map(|s| s.templates.iter().map(|t| t.embedding[1]))
        .collect();
    assert_eq!(order, vec![0.0, 1.0]);
}

/// A database or role whose `synchronous_commit` is `off` answers commits before their WAL is
/// flushed, so a server crash loses enrolments already answered 201: the store's connections
/// raise it to `on`, and keep a stricter setting.
#[tokio::test]
async fn connections_never_commit_without_a_flush() {
    let pg = PgServer::start();
    let line = facekey_runtime::store::cipher::new_key_line("k1").unwrap();
    let keys = TemplateKeys::parse(&line, std::path::Path::new("k")).unwrap();
    let setting = |sql: &'static str| {
        let (pg_url, keys) = (pg.url(), keys.clone());
        async move {
            pg_run(&pg_url, sql).await;
            let store = facekey_runtime::store::postgres::PgStore::connect(
                &pg_url, None, keys, 2, "TEST_URL",
            )
            .await
            .unwrap();
            let v: String = sqlx::query_scalar("SHOW synchronous_commit")
                .fetch_one(store.pool())
                .await
                .unwrap();
            v
        }
    };
    assert_eq!(
        setting("ALTER DATABASE facekey SET synchronous_commit = off").await,
        "on"
    );
    assert_eq!(
        setting("ALTER DATABASE facekey SET synchronous_commit = remote_apply").await,
        "remote_apply"
    );
}

/// Runs `sql` on its own connection to `url`.
async fn pg_run(url: &str, sql: &'static str) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
}
