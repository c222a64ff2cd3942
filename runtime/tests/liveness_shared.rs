//! Challenge-liveness sessions shared by replicas through a real PostgreSQL (issue 13): two
//! runtimes on one database serve any call of a session (open on A, frames on B, read on A,
//! verify on B once, again on A → 409), a restart keeps open sessions, batches posted at once
//! through both replicas are one applied and one refused as busy (a batch captured before frames
//! already applied fails the session, as on one replica), a passed session verifies once when both replicas are
//! asked at the same moment, the bounds hold across replicas, expired sessions are swept (their
//! failure counted once), and a database outage answers 503 `store_unavailable`, never a pass.
//! An unbound passed session identifies once across replicas too; a bound one only verifies.
//! Each frames call writes its own batch row; a session the release before began (frames in its
//! row) goes on with its frames; the replay record of accepted sessions is shared.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
#[path = "common/challenge_frames.rs"]
mod frames;

use std::path::PathBuf;
use std::time::Duration;

use common::postgres::{PgServer, key_file};
use common::{Running, error_code, face, keyed_client, send_json, test_keys};
use facekey_runtime::challenge::Action;
use facekey_runtime::config::Config;
use frames::{
    astronaut, brighten, frames_json, mark_frame, passed_recording, passed_session, performance,
};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

/// What the replicas share: the database, the template key and the API keys.
struct Shared {
    pg: PgServer,
    work: tempfile::TempDir,
    template_keys: PathBuf,
    api_keys: PathBuf,
    keys: std::collections::BTreeMap<String, String>,
}

impl Shared {
    /// `n` replicas' session stores on this database (its migrations applied), with default
    /// limits and policy, and their pool.
    async fn pg_sessions(
        &self,
        n: usize,
    ) -> (
        sqlx::PgPool,
        Vec<facekey_runtime::challenge::pg::PgSessions>,
    ) {
        let keys = facekey_runtime::store::TemplateKeys::from_file(&self.template_keys).unwrap();
        let store = facekey_runtime::store::postgres::PgStore::connect(
            &self.pg.url(),
            None,
            keys.clone(),
            8,
            "FACEKEY_DATABASE_URL",
        )
        .await
        .unwrap();
        let pool = store.pool().clone();
        let replicas = (0..n)
            .map(|_| {
                facekey_runtime::challenge::pg::PgSessions::new(
                    pool.clone(),
                    keys.clone(),
                    Default::default(),
                    Default::default(),
                )
            })
            .collect();
        (pool, replicas)
    }

    fn new() -> Self {
        let pg = PgServer::start();
        let work = tempfile::tempdir().unwrap();
        let line = facekey_runtime::store::cipher::new_key_line("k1").unwrap();
        let template_keys = key_file(work.path(), &line);
        let (text, keys) = test_keys();
        let api_keys = work.path().join("api-keys");
        std::fs::write(&api_keys, text).unwrap();
        Self {
            pg,
            work,
            template_keys,
            api_keys,
            keys,
        }
    }

    fn config(&self, name: &str, tune: impl Fn(&mut Config)) -> Config {
        let mut c = Config::for_tests();
        c.database_url = Some(self.pg.url());
        c.template_key_file = Some(self.template_keys.clone());
        c.api_keys_file = Some(self.api_keys.clone());
        c.data_dir = self.work.path().join(name);
        tune(&mut c);
        c
    }

    fn client(&self, id: &str) -> reqwest::Client {
        keyed_client(&self.keys[id])
    }
}

fn url(r: &Running, path: &str) -> String {
    r.url(path)
}

async fn open(r: &Running, c: &reqwest::Client, body: Value) -> (StatusCode, Value) {
    send_json(c.post(url(r, "/v1/liveness/sessions")).json(&body)).await
}

async fn send(r: &Running, c: &reqwest::Client, id: &str, body: &Value) -> (StatusCode, Value) {
    send_json(
        c.post(url(r, &format!("/v1/liveness/sessions/{id}/frames")))
            .json(body),
    )
    .await
}

async fn get(r: &Running, c: &reqwest::Client, id: &str) -> (StatusCode, Value) {
    send_json(c.get(url(r, &format!("/v1/liveness/sessions/{id}")))).await
}

async fn verify(r: &Running, c: &reqwest::Client, subject: &str, id: &str) -> (StatusCode, Value) {
    send_json(
        c.post(url(r, "/v1/verify"))
            .json(&json!({"subject": subject, "session": id})),
    )
    .await
}

fn challenge_of(v: &Value) -> Vec<Action> {
    serde_json::from_value(v["challenge"].clone()).unwrap()
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

async fn identify(r: &Running, c: &reqwest::Client, id: &str) -> (StatusCode, Value) {
    send_json(
        c.post(url(r, "/v1/identify"))
            .json(&json!({ "session": id })),
    )
    .await
}

/// Neutral frames of the face, each a little brighter and marked apart (never
/// near-duplicates, in raw luma or in shape), in progress.
fn neutral(n: usize, from: u8) -> Vec<image::RgbImage> {
    let base = astronaut();
    (0..n)
        .map(|i| mark_frame(&brighten(&base, from + 3 * i as u8), usize::from(from) + i))
        .collect()
}

fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

async fn enrol(r: &Running, admin: &reqwest::Client) -> String {
    let (st, subj) = send_json(
        admin
            .post(url(r, "/v1/subjects"))
            .json(&json!({"name": "Eileen"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{subj}");
    let subject = subj["id"].as_str().unwrap().to_owned();
    let form = Form::new().part(
        "image",
        Part::bytes(face("astronaut.png")).file_name("a.png"),
    );
    let (st, v) = send_json(
        admin
            .post(url(r, &format!("/v1/subjects/{subject}/faces")))
            .multipart(form),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    subject
}

/// Waits until `r` knows `subject` (enrolled through another replica): it learns of it through
/// the database's notification.
/// Waits until replica `r` knows `subject` and, in its template index (what sessions and
/// verifications match against), every face the shared store holds: the subject's creation and
/// its face reach the other replicas as two changes, and a session bound to a subject known
/// without its face is refused `subject_has_no_faces`. Tests call it with one subject enrolled.
async fn known_to(r: &Running, admin: &reqwest::Client, subject: &str) {
    for _ in 0..200 {
        let (st, v) = send_json(admin.get(url(r, &format!("/v1/subjects/{subject}")))).await;
        let faces = v["templates"].as_array().map_or(0, Vec::len) as f64;
        if st == StatusCode::OK
            && faces > 0.0
            && common::metric(&r.metrics().await, "facekey_enrolled_templates") >= faces
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the other replica never learnt of subject {subject} and its faces");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_sessions_through_postgres() {
    let sh = Shared::new();
    let tune = |c: &mut Config| {
        c.max_sessions = 4;
        c.max_sessions_per_key = 2;
    };
    let a = Running::start(sh.config("a", tune)).await;
    let b = Running::start(sh.config("b", tune)).await;
    let (admin, verify_key) = (sh.client("admin"), sh.client("verify"));
    let subject = enrol(&a, &admin).await;
    known_to(&b, &admin, &subject).await;

    // Open on A, frames on B, read on A, verify on B once, again on A: 409.
    let (st, o) = open(&a, &verify_key, json!({ "subject": subject })).await;
    assert_eq!(st, StatusCode::CREATED, "{o}");
    let id = id_of(&o);
    let challenge = challenge_of(&o);
    let perf = performance(&challenge);
    let (st, fb) = send(&b, &verify_key, &id, &frames_json(&perf[..1], 10_000)).await;
    assert_eq!(
        (st, fb["state"].clone()),
        (StatusCode::OK, json!("in_progress")),
        "{fb}"
    );
    assert_eq!(fb["next_action"], json!(challenge[0]));
    let (st, fb) = send(&a, &verify_key, &id, &frames_json(&perf[1..], 10_150)).await;
    assert_eq!(
        (st, fb["state"].clone()),
        (StatusCode::OK, json!("passed")),
        "{fb}"
    );
    assert_eq!(fb["frames_received"], perf.len());
    let (st, g) = get(&a, &verify_key, &id).await;
    assert_eq!(
        (st, g["state"].clone(), g["live"].clone()),
        (StatusCode::OK, json!("passed"), json!(true)),
        "{g}"
    );
    // Another key sees nothing, on either replica.
    for r in [&a, &b] {
        let (st, v) = get(r, &admin, &id).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::NOT_FOUND, "session_not_found")
        );
    }
    let (st, v) = verify(&b, &verify_key, &subject, &id).await;
    assert_eq!(
        (st, v["decision"].clone()),
        (StatusCode::OK, json!("accept")),
        "{v}"
    );
    // The frames sealed in the row kept both models' embeddings: matched fused, as on one
    // replica, not on dlib alone.
    let mb = b.metrics().await;
    assert_eq!(
        counter(
            &mb,
            "facekey_verify_match_models_total{models=\"dlib+faceres\"}"
        ),
        1.0,
        "{mb}"
    );
    assert_eq!(
        counter(&mb, "facekey_verify_match_models_total{models=\"dlib\"}"),
        0.0
    );
    let (st, v) = verify(&a, &verify_key, &subject, &id).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::CONFLICT, "session_used"),
        "{v}"
    );
    // The row holds a key hash, never the key id; observations are sealed, not readable JSON.
    let row = sh.pg.psql(&format!(
        "SELECT key_hash, consumed, sealed IS NULL, position('landmarks' in coalesce(encode(sealed, 'escape'), '')) \
         FROM facekey_liveness_sessions WHERE id = '{id}'"
    ));
    assert_eq!(row.split('|').count(), 4, "{row}");
    assert!(!row.contains("verify") && row.contains("|t|t|0"), "{row}");

    // Both replicas asked at the same moment to verify one passed session: exactly one does.
    let id2 = passed_session(&b, &verify_key, Some(&subject)).await;
    let (ra, rb) = tokio::join!(
        verify(&a, &verify_key, &subject, &id2),
        verify(&b, &verify_key, &subject, &id2)
    );
    let mut statuses = [ra.0, rb.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{ra:?} {rb:?}"
    );

    // Batches posted at once through both replicas: one holds the session, the other answers
    // 409 session_busy, as on one replica (the lease is taken before the models run).
    let (st, o) = open(&a, &admin, json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{o}");
    let id3 = id_of(&o);
    let frames = neutral(8, 0);
    let (first, second) = (
        frames_json(&frames[..4], 20_000),
        frames_json(&frames[4..], 20_600),
    );
    let (ra, rb) = tokio::join!(
        send(&a, &admin, &id3, &first),
        send(&b, &admin, &id3, &second)
    );
    let mut statuses = [ra.0, rb.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{ra:?} {rb:?}"
    );
    let busy = if ra.0 == StatusCode::CONFLICT {
        &ra.1
    } else {
        &rb.1
    };
    assert_eq!(error_code(busy), "session_busy", "{busy}");
    // The lease is given back: the next batch through either replica is applied.
    let applied_first = ra.0 == StatusCode::OK;
    let (st, fb) = send(&b, &admin, &id3, &frames_json(&neutral(4, 30), 21_200)).await;
    assert_eq!(
        (st, fb["state"].clone()),
        (StatusCode::OK, json!("in_progress")),
        "{fb}"
    );
    let (st, g) = get(&a, &admin, &id3).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        g["detail"]["frames_received"], 8,
        "{g} (A's batch first: {applied_first})"
    );
    assert_eq!(g["detail"]["usable_frames"], 8, "{g}");
    // A batch captured before the frames already applied cannot be slipped in before them: the
    // session fails, on this replica as on one alone.
    let (st, fb) = send(&a, &admin, &id3, &frames_json(&neutral(1, 50)[..], 19_000)).await;
    assert_eq!(
        (st, fb["state"].clone()),
        (StatusCode::OK, json!("failed")),
        "{fb}"
    );
    let (_, g) = get(&b, &admin, &id3).await;
    assert_eq!(g["reasons"], json!(["timestamps_not_increasing"]), "{g}");
    // A failed session holds no place: another in progress stands in for it below.
    let (st, o) = open(&a, &admin, json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{o}");

    // Bounds across replicas: verify holds no place now (both sessions used); two on A and B,
    // the third refused on either. Admin (holding one) may not take the last place, which stays
    // for a key holding none; then 503.
    let (st, o4) = open(&a, &verify_key, json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{o4}");
    let (st, spare) = open(&b, &verify_key, json!({})).await;
    assert_eq!(st, StatusCode::CREATED);
    for r in [&a, &b] {
        let (st, v) = open(r, &verify_key, json!({})).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::TOO_MANY_REQUESTS, "too_many_sessions"),
            "{v}"
        );
    }
    let (st, v) = open(&b, &admin, json!({})).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_sessions"),
        "{v}"
    );
    let (st, v) = open(&a, &sh.client("slow"), json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = open(&a, &admin, json!({})).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "too_many_sessions"),
        "{v}"
    );

    // A restart of A keeps the session opened there: frames continue on the new A.
    let id4 = id_of(&o4);
    let perf4 = performance(&challenge_of(&o4));
    let (st, _) = send(&a, &verify_key, &id4, &frames_json(&perf4[..1], 30_000)).await;
    assert_eq!(st, StatusCode::OK);
    a.stop().await;
    let a = Running::start(sh.config("a", tune)).await;
    let (st, g) = get(&a, &verify_key, &id4).await;
    assert_eq!(
        (st, g["state"].clone()),
        (StatusCode::OK, json!("in_progress")),
        "{g}"
    );
    let (st, fb) = send(&a, &verify_key, &id4, &frames_json(&perf4[1..], 30_150)).await;
    assert_eq!(
        (st, fb["state"].clone()),
        (StatusCode::OK, json!("passed")),
        "{fb}"
    );
    let (st, v) = verify(&b, &verify_key, &subject, &id4).await;
    assert_eq!(st, StatusCode::OK, "{v}");

    // Verify holds one of three places: its spare session (failed as a replay of one frame) makes
    // room for the next, which the last free place would not.
    let replay = [neutral(1, 50), neutral(1, 50)].concat();
    let (st, fb) = send(
        &b,
        &verify_key,
        &id_of(&spare),
        &frames_json(&replay, 40_000),
    )
    .await;
    assert_eq!(
        (st, fb["state"].clone()),
        (StatusCode::OK, json!("failed")),
        "{fb}"
    );

    // The database down: 503 store_unavailable, never a pass; back up, sessions resume.
    let id5 = passed_session(&a, &verify_key, Some(&subject)).await;
    sh.pg.stop();
    let (st, v) = verify(&b, &verify_key, &subject, &id5).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        "{v}"
    );
    let (st, v) = open(&a, &verify_key, json!({})).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        "{v}"
    );
    let (st, v) = get(&b, &verify_key, &id5).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        "{v}"
    );
    sh.pg.restart();
    let mut last = None;
    for _ in 0..100 {
        let (st, v) = verify(&b, &verify_key, &subject, &id5).await;
        if st != StatusCode::SERVICE_UNAVAILABLE {
            last = Some((st, v));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (st, v) = last.expect("the database came back");
    assert_eq!(
        (st, v["decision"].clone()),
        (StatusCode::OK, json!("accept")),
        "{v}"
    );

    let (ma, mb) = (a.metrics().await, b.metrics().await);
    let passed = counter(&ma, "facekey_liveness_sessions_passed_total")
        + counter(&mb, "facekey_liveness_sessions_passed_total");
    // id, id2, id4, id5 (a restarted A's counter is lost only for what A concluded before).
    assert!(passed >= 3.0, "{passed}");
    a.stop().await;
    b.stop().await;
}

/// Deleting a subject through one replica deletes the sessions bound to it, wherever they were
/// opened (their frames and probe with them): the other replica's passed session is gone, not
/// left to its TTL, and a session of another subject stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_subject_deletes_its_sessions_on_every_replica() {
    let sh = Shared::new();
    let a = Running::start(sh.config("a", |_| {})).await;
    let b = Running::start(sh.config("b", |_| {})).await;
    let (admin, verify_key) = (sh.client("admin"), sh.client("verify"));
    let subject = enrol(&a, &admin).await;
    known_to(&b, &admin, &subject).await;
    let bound = passed_session(&b, &verify_key, Some(&subject)).await;
    let unbound = passed_session(&b, &verify_key, None).await;
    let (st, _) = send_json(admin.delete(url(&a, &format!("/v1/subjects/{subject}")))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = get(&b, &verify_key, &bound).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::NOT_FOUND, "session_not_found"),
        "{v}"
    );
    let (st, v) = get(&b, &verify_key, &unbound).await;
    assert_eq!(
        (st, v["state"].clone()),
        (StatusCode::OK, json!("passed")),
        "{v}"
    );
    // Closed by its client through A (another key may not), gone on B too.
    let close = |r: &Running, c: &reqwest::Client| {
        c.delete(url(r, &format!("/v1/liveness/sessions/{unbound}")))
    };
    let (st, v) = send_json(close(&a, &admin)).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::NOT_FOUND, "session_not_found"),
        "{v}"
    );
    assert_eq!(
        close(&a, &verify_key).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let (st, v) = get(&b, &verify_key, &unbound).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::NOT_FOUND, "session_not_found"),
        "{v}"
    );
    a.stop().await;
    b.stop().await;
}

/// A frames call writes its own batch only: each batch is a row of its own (sealed), the
/// session row stays small while the session runs, a batch applied through the other replica
/// continues the same session, and the batch rows go when the session ends or is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_frames_call_writes_its_own_batch_row() {
    let sh = Shared::new();
    let a = Running::start(sh.config("a", |_| {})).await;
    let b = Running::start(sh.config("b", |_| {})).await;
    let verify_key = sh.client("verify");
    let (st, o) = open(&a, &verify_key, json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{o}");
    let id = id_of(&o);
    let batches = || {
        sh.pg.psql(&format!(
            "SELECT count(*) || ' ' || coalesce(sum(octet_length(sealed)), 0) || ' ' || \
             coalesce((SELECT octet_length(sealed) FROM facekey_liveness_sessions \
               WHERE id = '{id}'), 0) \
             FROM facekey_liveness_session_frames WHERE session_id = '{id}'"
        ))
    };
    let (st, fb) = send(&a, &verify_key, &id, &frames_json(&neutral(3, 0), 5_000)).await;
    assert_eq!(
        (st, &fb["state"]),
        (StatusCode::OK, &json!("in_progress")),
        "{fb}"
    );
    let first_batch = || {
        sh.pg.psql(&format!(
            "SELECT encode(sealed_nonce, 'hex') FROM facekey_liveness_session_frames \
             WHERE session_id = '{id}' AND batch = 0"
        ))
    };
    let written = first_batch();
    assert_eq!(written.len(), 24, "{written:?}");
    let (st, fb) = send(&b, &verify_key, &id, &frames_json(&neutral(2, 60), 5_600)).await;
    assert_eq!(
        (st, &fb["state"]),
        (StatusCode::OK, &json!("in_progress")),
        "{fb}"
    );
    assert_eq!(fb["frames_received"], 5, "{fb}");
    assert_eq!(
        first_batch(),
        written,
        "the second call wrote its own batch only"
    );
    let seen: Vec<u64> = batches().split(' ').map(|v| v.parse().unwrap()).collect();
    assert_eq!(seen[0], 2, "one row per batch: {seen:?}");
    // Each frame carries both models' embeddings (6 KB packed); the row holds none.
    assert!(seen[1] > 5 * 6_144, "{seen:?}");
    assert!(seen[1] < 5 * 10_000, "packed: {seen:?}");
    assert!(seen[2] < 1_000, "the session row stays small: {seen:?}");
    // A frame of the first batch again, in a third batch (through the first replica, after a
    // batch through the other): every batch row is judged with it (duplicate_frames).
    let (st, fb) = send(&a, &verify_key, &id, &frames_json(&neutral(1, 0), 6_500)).await;
    assert_eq!(
        (st, &fb["state"]),
        (StatusCode::OK, &json!("failed")),
        "{fb}"
    );
    let (_, g) = get(&b, &verify_key, &id).await;
    assert!(
        g["reasons"]
            .as_array()
            .unwrap()
            .contains(&json!("duplicate_frames")),
        "{g}"
    );
    assert!(
        batches().starts_with("0 0"),
        "the ended session's batches go"
    );

    // A passed session keeps its probe in its row, and no batch rows.
    let admin = sh.client("admin");
    let passed = passed_session(&b, &admin, None).await;
    let rows = sh.pg.psql(&format!(
        "SELECT count(*) FROM facekey_liveness_session_frames WHERE session_id = '{passed}'"
    ));
    assert_eq!(rows, "0");
    // Closed in progress: its batch rows go with it.
    let (st, o) = open(&a, &verify_key, json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{o}");
    let open_id = id_of(&o);
    let (st, _) = send(
        &a,
        &verify_key,
        &open_id,
        &frames_json(&neutral(2, 90), 9_000),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let count = || {
        sh.pg.psql(&format!(
            "SELECT count(*) FROM facekey_liveness_session_frames WHERE session_id = '{open_id}'"
        ))
    };
    assert_eq!(count(), "1");
    let r = verify_key
        .delete(url(&b, &format!("/v1/liveness/sessions/{open_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(count(), "0");
    a.stop().await;
    b.stop().await;
}

/// The little-endian words the runtime's cipher seals bytes as (length first), as the release
/// before sealed a session row's observations.
fn words(bytes: &[u8]) -> Vec<f32> {
    let mut out = vec![f32::from_le_bytes((bytes.len() as u32).to_le_bytes())];
    for c in bytes.chunks(4) {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        out.push(f32::from_le_bytes(w));
    }
    out
}

/// A session the release before opened kept its frames in its own row, sealed under the
/// `facekey.liveness-session.v1` binding. Reached by this release during a rolling update, the
/// row's frames are read, become the session's first batch rows (8 frames a row) on its next
/// frames call, and are judged with the rest: a frame repeating one of them fails the session
/// as a duplicate. And this release's rows cannot be opened under that binding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_release_before_began_goes_on_with_its_frames() {
    use facekey_runtime::store::cipher::{Binding, TemplateKeys};
    let sh = Shared::new();
    let a = Running::start(sh.config("a", |_| {})).await;
    let verify_key = sh.client("verify");
    let (st, o) = open(&a, &verify_key, json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{o}");
    let id = id_of(&o);
    let challenge = challenge_of(&o);
    let keys = TemplateKeys::from_file(&sh.template_keys).unwrap();
    let hash = facekey_runtime::challenge::pg::key_hash("verify");
    // This release's row is sealed from its opening under a binding the release before cannot
    // open: a replica of it answers 500 for the session rather than judge part of it.
    let row: Vec<String> = sh
        .pg
        .psql(&format!(
            "SELECT sealed_key_id || ' ' || encode(sealed_nonce, 'hex') || ' ' || \
             encode(sealed, 'hex') FROM facekey_liveness_sessions WHERE id = '{id}'"
        ))
        .split(' ')
        .map(str::to_owned)
        .collect();
    let unhex = |h: &str| -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    };
    let opened_row = facekey_runtime::store::cipher::Sealed {
        key_id: row[0].clone(),
        nonce: unhex(&row[1]).try_into().unwrap(),
        ciphertext: unhex(&row[2]),
    };
    let bound = |model| Binding {
        template_id: &id,
        subject_id: &hash,
        model,
    };
    assert!(
        keys.open(bound("facekey.liveness-session.v1"), &opened_row)
            .is_err()
    );
    assert!(
        keys.open(bound("facekey.liveness-session.v2"), &opened_row)
            .is_ok()
    );
    // 20 frames as the release before kept them in the row (more than a batch row takes):
    // three observed, the rest copies with their own fingerprints and times.
    let (v, m) = frames::models();
    let shots = neutral(3, 0);
    let mut observed: Vec<_> = shots
        .iter()
        .map(|img| facekey_runtime::vision::landmarks::observe_frame(v, m, img, 0))
        .collect();
    for i in 3..20 {
        let mut copy = observed[i % 3].clone();
        let mut cells = copy.fingerprint.unwrap().as_bytes().to_vec();
        cells[..8].iter_mut().for_each(|c| *c = (13 * i) as u8);
        copy.fingerprint = Some(cells.try_into().unwrap());
        observed.push(copy);
    }
    // 20 ms apart (the least interval is 15 ms), so that the client's span stays well inside
    // what the server can have seen since the session opened, however fast this test runs.
    for (i, f) in observed.iter_mut().enumerate() {
        f.timestamp_ms = 5_000 + 20 * i as u64;
        f.received_ms = Some(20 * i as u64);
    }
    let verdict = facekey_runtime::challenge::evaluate(
        &challenge,
        &observed,
        &facekey_runtime::challenge::ChallengePolicy::default(),
    );
    assert_eq!(
        (verdict.usable_frames, verdict.outcome),
        (20, facekey_runtime::challenge::Outcome::InProgress),
        "{verdict:?}"
    );
    // As that release wrote them: embeddings as arrays of numbers.
    let mut frames_json_then = serde_json::to_value(&observed).unwrap();
    for (f, o) in frames_json_then
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .zip(&observed)
    {
        let values = o
            .face
            .as_ref()
            .unwrap()
            .embedding
            .as_ref()
            .unwrap()
            .template_values();
        f["face"]["embedding"] = json!(values);
    }
    let private = serde_json::to_vec(&json!({"frames": frames_json_then, "probe": null})).unwrap();
    let sealed = keys
        .seal(
            Binding {
                template_id: &id,
                subject_id: &hash,
                model: "facekey.liveness-session.v1",
            },
            &words(&private),
        )
        .unwrap();
    // Through a connection of its own: the sealed row is too long for psql's command line.
    let pool = sqlx::PgPool::connect(&sh.pg.url()).await.unwrap();
    sqlx::query(
        "UPDATE facekey_liveness_sessions SET frames_received = 20, verdict = $2::jsonb, \
         sealed_key_id = $3, sealed_nonce = $4, sealed = $5 WHERE id = $1",
    )
    .bind(&id)
    .bind(serde_json::to_string(&verdict).unwrap())
    .bind(&sealed.key_id)
    .bind(sealed.nonce.to_vec())
    .bind(&sealed.ciphertext)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    // A new frame: the row's 20 become batches 0-2 (8, 8 and 4), the new one batch 3.
    let (st, fb) = send(&a, &verify_key, &id, &frames_json(&neutral(1, 40), 5_420)).await;
    assert_eq!(
        (st, &fb["state"]),
        (StatusCode::OK, &json!("in_progress")),
        "{fb}"
    );
    assert_eq!(fb["frames_received"], 21, "{fb}");
    assert_eq!(fb["frames"][0]["face_found"], true, "{fb}");
    let rows = sh.pg.psql(&format!(
        "SELECT string_agg(batch::text, ',' ORDER BY batch) FROM facekey_liveness_session_frames \
         WHERE session_id = '{id}'"
    ));
    assert_eq!(rows, "0,1,2,3");
    // One of the row's frames again: judged with them, a duplicate.
    let (st, fb) = send(&a, &verify_key, &id, &frames_json(&shots[1..2], 5_440)).await;
    assert_eq!(
        (st, &fb["state"]),
        (StatusCode::OK, &json!("failed")),
        "{fb}"
    );
    let (_, g) = get(&a, &verify_key, &id).await;
    assert!(
        g["reasons"]
            .as_array()
            .unwrap()
            .contains(&json!("duplicate_frames")),
        "{g}"
    );
    a.stop().await;
}

/// The replay record is shared: a recording accepted through replica A is refused as a replay
/// when sent again through B, verify and identify alike (a spoof event on B). The record is
/// sealed in its table, counts only within the window (rows aged past it by hand no longer
/// refuse the recording, and the sweep deletes them), and deleting the subject deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_accepted_on_one_replica_is_a_replay_on_another() {
    let sh = Shared::new();
    let a = Running::start(sh.config("a", |_| {})).await;
    let b = Running::start(sh.config("b", |_| {})).await;
    let (admin, verify_key) = (sh.client("admin"), sh.client("verify"));
    let subject = enrol(&a, &admin).await;
    known_to(&b, &admin, &subject).await;

    let first = passed_recording(&a, &verify_key, Some(&subject), 77).await;
    let (st, v) = verify(&a, &verify_key, &subject, &first).await;
    assert_eq!(
        (st, &v["decision"]),
        (StatusCode::OK, &json!("accept")),
        "{v}"
    );
    let rows = sh.pg.psql(&format!(
        "SELECT count(*) FROM facekey_session_replay_record \
         WHERE subject = '{subject}' AND session_id = '{first}' AND sealed_key_id = 'k1'"
    ));
    assert_eq!(rows.trim(), "1", "the accepted session's frames, sealed");

    let again = passed_recording(&b, &verify_key, None, 77).await;
    let (st, v) = verify(&b, &verify_key, &subject, &again).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["decision"], "reject", "{v}");
    assert!(
        v["reasons"]
            .as_array()
            .unwrap()
            .contains(&json!("replayed_session")),
        "{v}"
    );
    let third = passed_recording(&b, &verify_key, None, 77).await;
    let (st, v) = identify(&b, &verify_key, &third).await;
    assert_eq!(
        (st, &v["decision"], &v["candidates"]),
        (StatusCode::OK, &json!("reject"), &json!([])),
        "{v}"
    );
    let metrics = b.metrics().await;
    assert_eq!(
        counter(&metrics, "facekey_liveness_sessions_replayed_total"),
        2.0
    );
    assert_eq!(counter(&metrics, "facekey_spoof_detected_total"), 2.0);

    // Past the window (a day by default: the rows aged by hand) the recording is not refused.
    sh.pg.psql(
        "UPDATE facekey_session_replay_record \
         SET verified_at = now() - interval '25 hours', expires_at = now() - interval '1 hour'",
    );
    let late = passed_recording(&a, &verify_key, None, 77).await;
    let (st, v) = verify(&a, &verify_key, &subject, &late).await;
    assert_eq!(
        (st, &v["decision"]),
        (StatusCode::OK, &json!("accept")),
        "{v}"
    );

    // Opening that session swept the rows past their window; the late session took their place.
    let rows = sh.pg.psql(&format!(
        "SELECT string_agg(session_id, ',') FROM facekey_session_replay_record \
         WHERE subject = '{subject}'"
    ));
    assert_eq!(
        rows, late,
        "the aged row swept, the accepted late session remembered"
    );

    // The subject deleted (through B): its record is gone from the table.
    let (st, _) = send_json(admin.delete(url(&b, &format!("/v1/subjects/{subject}")))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let rows = sh.pg.psql(&format!(
        "SELECT count(*) FROM facekey_session_replay_record WHERE subject = '{subject}'"
    ));
    assert_eq!(rows.trim(), "0");
    a.stop().await;
    b.stop().await;
}

/// Holds the replay-record locks of `subjects` from another connection, as a writer that got
/// there first would: the transaction holding them, to commit when the waiters are in place.
async fn hold_record_locks(
    pool: &sqlx::PgPool,
    subjects: &[&str],
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    for subject in subjects {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("facekey.replay-record/{subject}"))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx
}

/// Waits until `n` transactions wait for a lock of `locktype`, then commits `tx`, releasing
/// them all at once.
async fn release_when_waiting(
    pool: &sqlx::PgPool,
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    locktype: &str,
    n: i64,
) {
    for _ in 0..1000 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = $1 AND NOT granted",
        )
        .bind(locktype)
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting >= n {
            tx.commit().await.unwrap();
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{n} writers never waited for a {locktype} lock");
}

/// Two sessions of one recording verified at the same moment through two replicas, each past
/// its replay check (the record empty) before either is remembered: the writers wait on the
/// subject's lock (held here until both wait, so the order is certain), the first remembers its
/// session and the second finds it and is refused as a replay, whichever replica wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_verifying_one_recording_at_once_accept_it_once() {
    let sh = Shared::new();
    let a = Running::start(sh.config("a", |_| {})).await;
    let b = Running::start(sh.config("b", |_| {})).await;
    let (admin, verify_key) = (sh.client("admin"), sh.client("verify"));
    let subject = enrol(&a, &admin).await;
    known_to(&b, &admin, &subject).await;
    let pool = sqlx::PgPool::connect(&sh.pg.url()).await.unwrap();
    for recording in [91u8, 92] {
        let on_a = passed_recording(&a, &verify_key, None, recording).await;
        let on_b = passed_recording(&b, &verify_key, None, recording).await;
        let held = hold_record_locks(&pool, &[&subject]).await;
        let ((st1, v1), (st2, v2), ()) = tokio::join!(
            verify(&a, &verify_key, &subject, &on_a),
            verify(&b, &verify_key, &subject, &on_b),
            release_when_waiting(&pool, held, "advisory", 2)
        );
        assert_eq!((st1, st2), (StatusCode::OK, StatusCode::OK), "{v1} {v2}");
        let mut decisions = [v1["decision"].clone(), v2["decision"].clone()];
        decisions.sort_by_key(ToString::to_string);
        assert_eq!(decisions, [json!("accept"), json!("reject")], "{v1} {v2}");
        // A verify key's answer: the decision and its reasons.
        let refused = if v1["decision"] == "reject" { &v1 } else { &v2 };
        assert_eq!(
            refused["reasons"],
            json!(["spoof", "replayed_session"]),
            "{refused}"
        );
    }
    let replays = counter(
        &a.metrics().await,
        "facekey_liveness_sessions_replayed_total",
    ) + counter(
        &b.metrics().await,
        "facekey_liveness_sessions_replayed_total",
    );
    assert_eq!(replays, 2.0);
    pool.close().await;
    a.stop().await;
    b.stop().await;
}

/// The replay record's writes on two replicas' stores, at the same moment and ordered by the
/// subjects' locks: a session remembered for a subject makes another session of the recording,
/// checked before, a replay, whether it was accepted by a verification (one subject) or an
/// identification (every subject it accepted, locked in one order); a session the caller
/// compared already is not compared again; a different recording is remembered beside it; a
/// subject deleted while its write waits has nothing remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_replay_record_is_checked_and_written_under_the_subjects_locks() {
    use facekey_runtime::challenge::Fingerprint;
    use facekey_runtime::challenge::replay::Compared;
    use facekey_runtime::challenge::store::SessionStore;
    let sh = Shared::new();
    // The runtime applies the migrations. The database defaults to REPEATABLE READ, as some
    // are set up: the writes must still see what the lock's previous holder committed.
    Running::start(sh.config("a", |_| {})).await.stop().await;
    sh.pg.psql(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_isolation \
         = ''repeatable read''', current_database()); END $$",
    );
    let (pool, mut replicas) = sh.pg_sessions(2).await;
    let default: String = sqlx::query_scalar("SHOW default_transaction_isolation")
        .fetch_one(&sqlx::PgPool::connect(&sh.pg.url()).await.unwrap())
        .await
        .unwrap();
    assert_eq!(default, "repeatable read", "the database's default");
    let (b, a) = (replicas.pop().unwrap(), replicas.pop().unwrap());
    // A recording's frames: ramps over the cells, each frame rotated.
    let recording = |from: usize| -> Vec<Fingerprint> {
        (from..from + 6)
            .map(|k| {
                let cells: Vec<u8> = (0..256).map(|i| ((i + k * 7) % 256) as u8).collect();
                Fingerprint::try_from(cells).unwrap()
            })
            .collect()
    };
    let subject = |n: usize| -> String {
        let id = format!("00000000-0000-4000-8000-{n:012}");
        sh.pg.psql(&format!(
            "INSERT INTO facekey_subjects (id, name) VALUES ('{id}', 'subject {n}')"
        ));
        id
    };
    let checked = |subjects: &[&str], seen: &[String]| -> Vec<Compared> {
        subjects
            .iter()
            .map(|s| Compared {
                subject: (*s).to_owned(),
                sessions: seen.to_vec(),
            })
            .collect()
    };
    let rows = |subject: &str| {
        sh.pg.psql(&format!(
            "SELECT count(*) FROM facekey_session_replay_record WHERE subject = '{subject}'"
        ))
    };
    for round in 0..4 {
        // Verifications through both replicas; then a verification of X beside an
        // identification accepting X and Y (two enrolments of one person).
        let (x, y) = (subject(2 * round), subject(2 * round + 1));
        let identified: &[&str] = if round % 2 == 0 { &[&x] } else { &[&y, &x] };
        let prints = recording(0);
        let held = hold_record_locks(&pool, &[&x, &y]).await;
        let (one, other, ()) = tokio::join!(
            a.remember_verified(checked(&[&x], &[]), "one", prints.clone()),
            b.remember_verified(checked(identified, &[]), "other", prints.clone()),
            release_when_waiting(&pool, held, "advisory", 2)
        );
        let (one, other) = (one.unwrap(), other.unwrap());
        assert!(
            one.is_some() != other.is_some(),
            "round {round}: one remembered, one a replay: {one:?} {other:?}"
        );
        let (on, replay) = one.or(other).unwrap();
        assert_eq!(on, x, "the subject both were accepted for");
        assert!(replay.frames >= 2, "{replay:?}");
        assert_eq!(rows(&x), "1");
        let first = a.accepted_sessions(&x).await.unwrap();
        assert_eq!(first.len(), 1);
        // Compared already by its caller: remembered without comparing again. A new
        // recording: remembered.
        let seen = vec![first[0].session.clone()];
        let again = b
            .remember_verified(checked(&[&x], &seen), "c", prints)
            .await
            .unwrap();
        assert_eq!(again, None);
        let fresh = a
            .remember_verified(checked(&[&x], &[]), "d", recording(100))
            .await;
        assert_eq!(fresh.unwrap(), None);
        assert_eq!(a.accepted_sessions(&x).await.unwrap().len(), 3);
    }

    // A subject deleted while the write waits for its row: nothing is remembered for it (its
    // deletion's clean-up may have run already, and would not run again).
    let gone = subject(100);
    let mut deleting = pool.begin().await.unwrap();
    sqlx::query("DELETE FROM facekey_subjects WHERE id = $1::uuid")
        .bind(&gone)
        .execute(&mut *deleting)
        .await
        .unwrap();
    let (kept, ()) = tokio::join!(
        b.remember_verified(checked(&[&gone], &[]), "e", recording(200)),
        release_when_waiting(&pool, deleting, "transactionid", 1)
    );
    assert_eq!(kept.unwrap(), None);
    assert_eq!(rows(&gone), "0");
    // One that never existed, nor an id that is no UUID, has nothing remembered either.
    let never = "00000000-0000-4000-8000-00000000ffff";
    for id in [never, "not-a-subject"] {
        let kept = a
            .remember_verified(checked(&[id], &[]), "f", recording(300))
            .await;
        assert_eq!(kept.unwrap(), None);
        assert_eq!(rows(id), "0");
    }
}

/// Identify takes shared sessions as verify does: a session bound to a subject is refused and left
/// unused (it still verifies the subject), and an unbound one asked of both replicas at the same
/// moment identifies exactly once; a verification after it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_session_identifies_once_across_replicas() {
    let sh = Shared::new();
    let a = Running::start(sh.config("a", |_| {})).await;
    let b = Running::start(sh.config("b", |_| {})).await;
    let (admin, verify_key) = (sh.client("admin"), sh.client("verify"));
    let subject = enrol(&a, &admin).await;
    known_to(&b, &admin, &subject).await;

    let bound = passed_session(&a, &verify_key, Some(&subject)).await;
    let (st, v) = identify(&b, &verify_key, &bound).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "session_bound_to_subject"),
        "{v}"
    );
    let (st, v) = verify(&a, &verify_key, &subject, &bound).await;
    assert_eq!(
        (st, v["decision"].clone()),
        (StatusCode::OK, json!("accept")),
        "{v}"
    );

    let id = passed_session(&b, &verify_key, None).await;
    let (ra, rb) = tokio::join!(
        identify(&a, &verify_key, &id),
        identify(&b, &verify_key, &id)
    );
    let (won, lost) = if ra.0 == StatusCode::OK {
        (ra, rb)
    } else {
        (rb, ra)
    };
    assert_eq!(won.0, StatusCode::OK, "{won:?} {lost:?}");
    assert_eq!(
        won.1["candidates"],
        json!([{"subject": {"id": subject, "name": "Eileen"}}]),
        "{won:?}"
    );
    assert_eq!(
        (lost.0, error_code(&lost.1)),
        (StatusCode::CONFLICT, "session_used"),
        "{lost:?}"
    );
    let (st, v) = verify(&a, &verify_key, &subject, &id).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::CONFLICT, "session_used"),
        "{v}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_are_swept_once_across_replicas() {
    let sh = Shared::new();
    let tune = |c: &mut Config| c.session_ttl_secs = 5;
    let a = Running::start(sh.config("a", tune)).await;
    let b = Running::start(sh.config("b", tune)).await;
    let admin = sh.client("admin");
    let opened_at = std::time::Instant::now();
    let (st, o) = open(&a, &admin, json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{o}");
    let id = id_of(&o);
    let (st, v) = send(&b, &admin, &id, &frames_json(&neutral(2, 0), 1_000)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        sh.pg.psql(&format!(
            "SELECT count(*) FROM facekey_liveness_session_frames WHERE session_id = '{id}'"
        )),
        "1",
        "the batch is stored"
    );
    tokio::time::sleep(Duration::from_millis(5_300).saturating_sub(opened_at.elapsed())).await;
    let (st, g) = get(&b, &admin, &id).await;
    assert_eq!(
        (st, g["state"].clone(), g["live"].clone()),
        (StatusCode::OK, json!("expired"), json!(false)),
        "{g}"
    );
    let (st, v) = send(&a, &admin, &id, &frames_json(&neutral(1, 50), 9_000)).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::GONE, "session_expired"),
        "{v}"
    );
    // Both sweepers run every second; the row goes one TTL after expiry, its observations (the
    // row's sealed data and its batch rows) at once.
    let count = |sql: &str| sh.pg.psql(sql);
    let mut gone = false;
    let mut batches_gone_first = false;
    for _ in 0..150 {
        if count(&format!(
            "SELECT count(*) FROM facekey_liveness_sessions WHERE id = '{id}'"
        )) == "0"
        {
            gone = true;
            break;
        }
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM facekey_liveness_sessions WHERE id = '{id}' AND sealed IS NOT NULL \
                 AND expires_at < now() - interval '3 seconds'"
            )),
            "0"
        );
        let batch_rows = count(&format!(
            "SELECT count(*) FROM facekey_liveness_session_frames f \
             JOIN facekey_liveness_sessions s ON s.id = f.session_id \
             WHERE f.session_id = '{id}' AND s.expires_at < now() - interval '3 seconds'"
        ));
        assert_eq!(
            batch_rows, "0",
            "an expired session's batch rows outlived the sweep"
        );
        batches_gone_first |= count(&format!(
            "SELECT count(*) FROM facekey_liveness_sessions WHERE id = '{id}' \
             AND expires_at < now() - interval '3 seconds'"
        )) == "1";
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the expired session's row was not swept");
    assert!(
        batches_gone_first,
        "the row was never seen expired without its batch rows (the sweep, not the row's \
         deletion, must remove them)"
    );
    let (st, v) = get(&a, &admin, &id).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::NOT_FOUND, "session_not_found"),
        "{v}"
    );
    // Its failure (expired) was counted once, by one replica.
    let metric = r#"facekey_liveness_sessions_failed_total{reason="expired"}"#;
    let total = counter(&a.metrics().await, metric) + counter(&b.metrics().await, metric);
    assert_eq!(total, 1.0);
    a.stop().await;
    b.stop().await;
}

/// Session ids no session can have, the ones `bad_input.rs` tries against the in-memory store
/// (NUL bytes, unicode, path-like, over-long), are 404 `session_not_found` on every call that
/// names a session in the shared store too: read, close, frames, verify and identify with it.
/// PostgreSQL refuses a NUL byte in a `text` parameter, which was answered 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_session_ids_are_not_found_in_the_shared_store() {
    let sh = Shared::new();
    let a = Running::start(sh.config("a", |_| {})).await;
    let (admin, verify_key) = (sh.client("admin"), sh.client("verify"));
    let subject = enrol(&a, &admin).await;
    let long = "x".repeat(5000);
    // In the path, percent-encoded; the ids they decode to go in JSON bodies.
    let ids = [
        ("a%00b", "a\0b".to_owned()),
        ("%00", "\0".to_owned()),
        // The form of a session id but for its last character.
        (
            "0123456789abcdef0123456789abcde%00",
            "0123456789abcdef0123456789abcde\0".to_owned(),
        ),
        ("%F0%9F%92%A5", "\u{1F4A5}".to_owned()),
        ("..%2F..%2Fetc%2Fpasswd", "../../etc/passwd".to_owned()),
        ("null", "null".to_owned()),
        (long.as_str(), long.clone()),
        // Well formed, and no such session.
        (
            "0123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcdef".to_owned(),
        ),
    ];
    let frame = json!({"frames": [{"image": "aGk=", "timestamp_ms": 1}]});
    for (in_path, id) in &ids {
        let session = format!("/v1/liveness/sessions/{in_path}");
        for (what, request) in [
            ("read", verify_key.get(url(&a, &session))),
            ("close", verify_key.delete(url(&a, &session))),
            (
                "frames",
                verify_key
                    .post(url(&a, &format!("{session}/frames")))
                    .json(&frame),
            ),
            (
                "verify",
                verify_key
                    .post(url(&a, "/v1/verify"))
                    .json(&json!({"subject": subject, "session": id})),
            ),
            (
                "identify",
                verify_key
                    .post(url(&a, "/v1/identify"))
                    .json(&json!({"session": id})),
            ),
        ] {
            let (st, v) = send_json(request).await;
            assert_eq!(
                (st, error_code(&v)),
                (StatusCode::NOT_FOUND, "session_not_found"),
                "{what} {in_path}: {v}"
            );
        }
    }
    // The store still serves.
    let (st, o) = open(&a, &verify_key, json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{o}");
    let (st, g) = get(&a, &verify_key, &id_of(&o)).await;
    assert_eq!(st, StatusCode::OK, "{g}");
    a.stop().await;
}

/// A frames call whose write fails gives the session's batch lease back: the retry its error
/// invites is served, not answered 409 `session_busy` for the lease's 30 s. The write fails
/// here on sealed data that does not open; a lock timeout or a failover mid-transaction rolls
/// back the lease's clearing the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_frames_write_gives_the_session_back() {
    let sh = Shared::new();
    let a = Running::start(sh.config("a", |_| {})).await;
    let verify_key = sh.client("verify");
    let (st, o) = open(&a, &verify_key, json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{o}");
    let id = id_of(&o);
    let perf = performance(&challenge_of(&o));
    let (st, fb) = send(&a, &verify_key, &id, &frames_json(&perf[..1], 10_000)).await;
    assert_eq!(
        (st, fb["state"].clone()),
        (StatusCode::OK, json!("in_progress")),
        "{fb}"
    );
    let row = format!("FROM facekey_liveness_sessions WHERE id = '{id}'");
    let sealed = sh.pg.psql(&format!("SELECT encode(sealed, 'hex') {row}"));
    assert!(!sealed.is_empty());
    sh.pg.psql(&format!(
        "UPDATE facekey_liveness_sessions SET sealed = '\\x00' WHERE id = '{id}'"
    ));
    let (st, v) = send(&a, &verify_key, &id, &frames_json(&perf[1..2], 10_100)).await;
    assert!(st.is_server_error(), "{st} {v}");
    assert_ne!(error_code(&v), "session_busy", "{v}");
    assert_eq!(
        sh.pg.psql(&format!("SELECT busy_until IS NULL {row}")),
        "t",
        "the lease is given back"
    );
    // The data back, the retry is served.
    sh.pg.psql(&format!(
        "UPDATE facekey_liveness_sessions SET sealed = decode('{sealed}', 'hex') WHERE id = '{id}'"
    ));
    let (st, fb) = send(&a, &verify_key, &id, &frames_json(&perf[1..], 10_150)).await;
    assert_eq!(
        (st, fb["state"].clone()),
        (StatusCode::OK, json!("passed")),
        "{fb}"
    );
}

/// Sweeps running at once on several replicas, with more expired sessions than one sweep
/// ends, each end their share and clear the rest they may: none waits for rows another holds
/// (two sweeps each holding a share and waiting for the other's deadlocked, and PostgreSQL
/// aborted one with 40P01, an `open` answered 503). Every session is ended once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sweeps_share_the_expired_sessions_without_deadlock() {
    use facekey_runtime::challenge::store::SessionStore;
    const SESSIONS: usize = 1500;
    let sh = Shared::new();
    let a = Running::start(sh.config("a", |_| {})).await;
    let verify_key = sh.client("verify");
    let (st, o) = open(&a, &verify_key, json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{o}");
    let id = id_of(&o);
    let (st, v) = send(&a, &verify_key, &id, &frames_json(&neutral(2, 0), 1_000)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    a.stop().await;
    // Copies of the session, every one expired, in progress and holding observations (its
    // sealed row and its batch row; the copies' seals are not theirs, which the sweep never
    // opens).
    sh.pg.psql(&format!(
        "INSERT INTO facekey_liveness_sessions SELECT (jsonb_populate_record( \
           NULL::facekey_liveness_sessions, to_jsonb(s) || jsonb_build_object( \
             'id', md5(g::text), 'expires_at', now() - interval '1 second'))).* \
         FROM facekey_liveness_sessions s, generate_series(1, {SESSIONS}) g \
         WHERE s.id = '{id}'; \
         INSERT INTO facekey_liveness_session_frames SELECT md5(g::text), f.batch, \
           f.sealed_key_id, f.sealed_nonce, f.sealed \
         FROM facekey_liveness_session_frames f, generate_series(1, {SESSIONS}) g \
         WHERE f.session_id = '{id}'; \
         DELETE FROM facekey_liveness_sessions WHERE id = '{id}'"
    ));
    assert_eq!(
        sh.pg
            .psql("SELECT count(*) FROM facekey_liveness_session_frames"),
        SESSIONS.to_string()
    );
    let (_, replicas) = sh.pg_sessions(4).await;
    let mut ended = 0;
    for _ in 0..10 {
        let sweeps = futures::future::join_all(replicas.iter().map(|r| r.sweep())).await;
        for sweep in sweeps {
            ended += sweep.expect("a sweep failed").len();
        }
        if ended >= SESSIONS {
            break;
        }
    }
    assert_eq!(ended, SESSIONS, "every expired session ended once");
    // One more sweep clears what the others skipped.
    assert!(replicas[0].sweep().await.unwrap().is_empty());
    assert_eq!(
        sh.pg.psql(
            "SELECT count(*) FROM facekey_liveness_sessions \
             WHERE outcome = 'in_progress' OR sealed IS NOT NULL"
        ),
        "0"
    );
    // The batch rows went with the sweep, not with the rows (those stay for another TTL).
    assert_eq!(
        sh.pg.psql(
            "SELECT (SELECT count(*) FROM facekey_liveness_session_frames) || ' ' || \
             (SELECT count(*) FROM facekey_liveness_sessions)"
        ),
        format!("0 {SESSIONS}")
    );
}

/// A replica keeps the frames it judged (decrypted) for its next call on the session, which
/// then reads only the batch rows written since, by other replicas: a session fed through one
/// replica reads no row after its first call, one fed in turns reads each other replica's rows
/// once. The verdict sees every frame either way (a frame repeated across replicas is still a
/// duplicate), and closing the session drops what was kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_reads_only_the_batches_written_since_its_last_call() {
    use facekey_runtime::challenge::FrameObservation;
    use facekey_runtime::challenge::fingerprint::Fingerprint;
    use facekey_runtime::challenge::pg::PgSessions;
    use facekey_runtime::challenge::session::SessionState;
    use facekey_runtime::challenge::store::SessionStore;
    let sh = Shared::new();
    Running::start(sh.config("a", |_| {})).await.stop().await;
    let (_, mut replicas) = sh.pg_sessions(2).await;
    let (b, a) = (replicas.pop().unwrap(), replicas.pop().unwrap());
    // Frames without a face, each with its own fingerprint, 100 ms apart.
    let frame = |n: u64| {
        let mut f = FrameObservation::unusable(1_000 + 100 * n, "no face");
        let cells: Vec<u8> = (0..256)
            .map(|i| ((i * 3 + n as usize * 41) % 256) as u8)
            .collect();
        f.fingerprint = Some(Fingerprint::try_from(cells).unwrap());
        f
    };
    let (opened, _) = a.open("k", None).await.unwrap();
    let id = opened.id;
    async fn feed(
        r: &PgSessions,
        id: &str,
        frames: Vec<FrameObservation>,
    ) -> facekey_runtime::challenge::session::BatchResult {
        r.begin_batch("k", id, frames.len()).await.unwrap();
        r.add_frames("k", id, frames).await.unwrap()
    }
    feed(&a, &id, vec![frame(0), frame(1)]).await;
    feed(&a, &id, vec![frame(2), frame(3)]).await;
    assert_eq!(
        a.batch_rows_read(),
        0,
        "the first replica read nothing back"
    );
    feed(&b, &id, vec![frame(4), frame(5)]).await;
    assert_eq!(
        b.batch_rows_read(),
        2,
        "the other replica read the two earlier rows"
    );
    let result = feed(&a, &id, vec![frame(6)]).await;
    assert_eq!(a.batch_rows_read(), 1, "then only the other replica's row");
    assert_eq!(result.view.state, SessionState::InProgress);
    assert_eq!(result.view.frames_received, 7);
    // A frame the first replica applied, sent again through it after the other replica's
    // batch: judged against every frame, whatever was kept.
    let repeated = feed(&a, &id, vec![frame(1)]).await;
    assert_eq!(
        repeated.view.state,
        SessionState::Failed,
        "{:?}",
        repeated.view
    );

    // Closing a session drops the frames kept for it.
    let (opened, _) = a.open("k", None).await.unwrap();
    let id = opened.id;
    a.begin_batch("k", &id, 1).await.unwrap();
    a.add_frames("k", &id, vec![frame(0)]).await.unwrap();
    a.close("k", &id).await.unwrap();
    let before = a.batch_rows_read();
    let (opened, _) = a.open("k", None).await.unwrap();
    a.begin_batch("k", &opened.id, 1).await.unwrap();
    a.add_frames("k", &opened.id, vec![frame(0)]).await.unwrap();
    assert_eq!(a.batch_rows_read(), before);
}
