//! Several runtime processes sharing one real PostgreSQL template store, as replicas of a
//! FaceKeyDeployment do: enrolments and deletions reach every replica within a second,
//! migrations run once when replicas start together, a database outage under verify load keeps
//! verification answering while writes get 503 and nothing acknowledged is lost, and a wrong
//! template key or an unreachable database stops start-up with a clear error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::postgres::{PgServer, Replicas, key_file};
use common::{face, free_port, keyed_client, send_json, test_keys};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

/// One `facekey-runtime` process.
struct Replica {
    child: Child,
    port: u16,
    log: PathBuf,
    client: reqwest::Client,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The replicas' shared API keys file in `work` (created on first use) and its admin key.
fn api_keys(work: &Path) -> (PathBuf, String) {
    let file = work.join("api-keys");
    let admin = work.join("admin.key");
    if !file.exists() {
        let (text, keys) = test_keys();
        std::fs::write(&file, text).unwrap();
        std::fs::write(&admin, &keys["admin"]).unwrap();
    }
    (file, std::fs::read_to_string(admin).unwrap())
}

fn spawn(db_url: &str, keys: &Path, work: &Path, name: &str) -> Replica {
    spawn_with(db_url, keys, work, name, &[])
}

/// [`spawn`] with more environment variables.
fn spawn_with(
    db_url: &str,
    keys: &Path,
    work: &Path,
    name: &str,
    extra: &[(&str, &Path)],
) -> Replica {
    let port = free_port();
    let (api_keys, admin) = api_keys(work);
    let log = work.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_facekey-runtime"))
        .env("FACEKEY_LISTEN", format!("127.0.0.1:{port}"))
        .env("FACEKEY_DATABASE_URL", db_url)
        .env("FACEKEY_TEMPLATE_KEY_FILE", keys)
        .env("FACEKEY_API_KEYS_FILE", api_keys)
        .env("FACEKEY_AUDIT_LOG", work.join(format!("{name}.audit.log")))
        .env("FACEKEY_DATA_DIR", work.join(name))
        .env("FACEKEY_SESSIONS_PER_MODEL", "1")
        .env("FACEKEY_UI_ENABLED", "false")
        .envs(extra.iter().copied())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Replica {
        child,
        port,
        log,
        client: keyed_client(&admin),
    }
}

impl Replica {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "replica exited with {status} during start-up:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "replica not ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn json(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        send_json(req).await
    }

    async fn create(&self, name: &str) -> (StatusCode, Value) {
        self.json(
            self.client
                .post(self.url("/v1/subjects"))
                .json(&serde_json::json!({ "name": name })),
        )
        .await
    }

    async fn enrol(&self, id: &str, image: &str) -> (StatusCode, Value) {
        let form = Form::new().part("image", Part::bytes(face(image)).file_name("f.png"));
        self.json(
            self.client
                .post(self.url(&format!("/v1/subjects/{id}/faces")))
                .multipart(form),
        )
        .await
    }

    async fn verify(&self, id: &str, image: &str) -> (StatusCode, Value) {
        let form = Form::new()
            .text("subject", id.to_owned())
            .part("image", Part::bytes(face(image)).file_name("f.jpg"));
        self.json(self.client.post(self.url("/v1/verify")).multipart(form))
            .await
    }

    async fn subject(&self, id: &str) -> (StatusCode, Value) {
        self.json(self.client.get(self.url(&format!("/v1/subjects/{id}"))))
            .await
    }

    async fn readyz(&self) -> Value {
        self.json(self.client.get(self.url("/readyz"))).await.1
    }

    async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Poll `check` every 20 ms until it holds; panics after `limit`. Returns the time it took.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn new_key(id: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_facekey-runtime"))
        .args(["--new-template-key", id])
        .output()
        .unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        line.starts_with(&format!("{id}:")) && line.len() == id.len() + 65,
        "{line}"
    );
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_enrolments_within_a_second_and_migrate_once() {
    let pg = PgServer::start();
    let work = tempfile::tempdir().unwrap();
    let keys = key_file(work.path(), &new_key("k1"));
    // Two replicas start at the same moment against an empty database.
    let mut a = spawn(&pg.url(), &keys, work.path(), "a");
    let mut b = spawn(&pg.url(), &keys, work.path(), "b");
    a.wait_ready().await;
    b.wait_ready().await;
    let migrations = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count();
    assert_eq!(
        pg.psql("SELECT count(*), count(DISTINCT version) FROM _sqlx_migrations"),
        format!("{migrations}|{migrations}"),
        "each migration applied exactly once"
    );
    // The password never reaches the log, and the open /readyz names no host or user.
    assert!(!a.log().contains("s3cret-pw") && !b.log().contains("s3cret-pw"));
    let ready = a.readyz().await;
    assert_eq!(ready["store"]["backend"], "postgresql", "{ready}");

    let (status, s) = a.create("Eileen Collins").await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    let id = s["id"].as_str().unwrap().to_owned();
    let took = within(Duration::from_secs(1), "subject on replica b", || async {
        b.subject(&id).await.0 == StatusCode::OK
    })
    .await;
    eprintln!("subject visible on b after {took:?}");

    let (status, e) = a.enrol(&id, "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED, "{e}");
    let took = within(Duration::from_secs(1), "template on replica b", || async {
        b.subject(&id).await.1["faces"] == 1
    })
    .await;
    eprintln!("template visible on b after {took:?}");
    // Replica b verifies against the template replica a enrolled.
    let (status, v) = b.verify(&id, "astronaut_640x480.jpg").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["match"]["decision"], "accept", "{v}");
    // And identifies it among everyone.
    let form = Form::new().part(
        "image",
        Part::bytes(face("astronaut_640x480.jpg")).file_name("p.jpg"),
    );
    let (status, i) = b
        .json(b.client.post(b.url("/v1/identify")).multipart(form))
        .await;
    assert_eq!(status, StatusCode::OK, "{i}");
    assert_eq!(i["templates_searched"], 1, "{i}");

    // Templates are sealed in the database: no embedding in clear, a key id per row. With the
    // default fused match both embeddings are sealed as one: (128 dlib + 1024 faceres-deep)
    // f32 values and the 16-byte AEAD tag.
    assert_eq!(
        pg.psql("SELECT key_id, octet_length(ciphertext) FROM facekey_templates"),
        format!("k1|{}", (128 + 1024) * 4 + 16)
    );

    // Another person's face is rejected and counted in the shared lockout ledger...
    let (status, v) = a.verify(&id, "Tom_Hanks_54745.png").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["decision"], "reject", "{v}");
    assert_eq!(pg.psql("SELECT count(*) FROM facekey_lockouts"), "1");
    // ...with the failures through b: the fifth, through either, locks the subject on both.
    for (n, replica) in [&b, &a, &b, &a].into_iter().enumerate() {
        let (status, v) = replica.verify(&id, "Tom_Hanks_54745.png").await;
        assert_eq!(status, StatusCode::OK, "failure {}: {v}", n + 2);
    }
    for replica in [&a, &b] {
        let (status, v) = replica.verify(&id, "astronaut_640x480.jpg").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
        assert_eq!(v["error"]["code"], "subject_locked", "{v}");
    }
    // An administrator's release through b lifts it on a at once.
    let (status, r) = b
        .json(
            b.client
                .delete(b.url(&format!("/v1/subjects/{id}/lockout"))),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["was_locked"], true, "{r}");
    let (status, v) = a.verify(&id, "astronaut_640x480.jpg").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["decision"], "accept", "{v}");

    // A deletion through b disappears from a, and erases the subject's ledger row too.
    let r = b
        .client
        .delete(b.url(&format!("/v1/subjects/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let took = within(Duration::from_secs(1), "deletion on replica a", || async {
        a.subject(&id).await.0 == StatusCode::NOT_FOUND
    })
    .await;
    eprintln!("deletion visible on a after {took:?}");
    assert_eq!(pg.psql("SELECT count(*) FROM facekey_templates"), "0");
    assert_eq!(pg.psql("SELECT count(*) FROM facekey_lockouts"), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_under_verify_load_serves_reads_refuses_writes_loses_nothing() {
    let pg = PgServer::start();
    let work = tempfile::tempdir().unwrap();
    let keys = key_file(work.path(), &new_key("k1"));
    let mut a = spawn(&pg.url(), &keys, work.path(), "a");
    a.wait_ready().await;
    let mut acknowledged = Vec::new();
    for name in ["one", "two"] {
        let (status, s) = a.create(name).await;
        assert_eq!(status, StatusCode::CREATED, "{s}");
        acknowledged.push(s["id"].as_str().unwrap().to_owned());
    }
    let (status, e) = a.enrol(&acknowledged[0], "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED, "{e}");

    // Verify load for the whole outage.
    let load = {
        let id = acknowledged[0].clone();
        let port = a.port;
        let client = a.client.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            let until = Instant::now() + Duration::from_secs(8);
            while Instant::now() < until {
                let form = Form::new().text("subject", id.clone()).part(
                    "image",
                    Part::bytes(face("astronaut_640x480.jpg")).file_name("p.jpg"),
                );
                let r = client
                    .post(format!("http://127.0.0.1:{port}/v1/verify"))
                    .multipart(form)
                    .send()
                    .await
                    .unwrap();
                if r.status() == StatusCode::OK {
                    ok += 1;
                } else {
                    failed.push(r.status());
                }
            }
            (ok, failed)
        })
    };

    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.stop();
    within(
        Duration::from_secs(5),
        "store reported unavailable",
        || async { a.readyz().await["store"]["available"] == false },
    )
    .await;
    let ready = a.readyz().await;
    assert_eq!(ready["status"], "ready", "reads still served: {ready}");
    assert!(a.metrics().await.contains("facekey_store_up 0"));
    let (status, v) = a.create("during the outage").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("store_unavailable")),
        "{v}"
    );
    let (status, v) = a.enrol(&acknowledged[1], "astronaut.png").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    // Reads from the index keep answering.
    let (status, _) = a.subject(&acknowledged[1]).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(2)).await;

    pg.restart();
    let took = within(Duration::from_secs(10), "store available again", || async {
        a.readyz().await["store"]["available"] == true
    })
    .await;
    eprintln!("store available {took:?} after the database restarted");
    let (ok, failed) = load.await.unwrap();
    eprintln!(
        "verify during the outage: {ok} answered 200, {} other",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "verify failed during the outage: {failed:?}"
    );
    assert!(ok > 0);

    // Nothing acknowledged is lost, and writes work again.
    for id in &acknowledged {
        let (status, _) = a.subject(id).await;
        assert_eq!(status, StatusCode::OK, "{id} lost");
    }
    assert_eq!(pg.psql("SELECT count(*) FROM facekey_subjects"), "2");
    assert_eq!(pg.psql("SELECT count(*) FROM facekey_templates"), "1");
    let (status, v) = a.create("after the outage").await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert!(a.metrics().await.contains("facekey_store_up 1"));
}

/// A database that turns read-only (a primary demoted during failover, a database set
/// read-only for maintenance): writes answer 503 `store_unavailable`, not 500, and verification
/// keeps answering with the lockout counted in this replica's memory meanwhile; once it is
/// writable again so are the writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_refuses_writes_with_503_and_verification_keeps_answering() {
    let pg = PgServer::start();
    let work = tempfile::tempdir().unwrap();
    let keys = key_file(work.path(), &new_key("k1"));
    let mut a = spawn(&pg.url(), &keys, work.path(), "a");
    a.wait_ready().await;
    let (status, s) = a.create("Eileen Collins").await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    let id = s["id"].as_str().unwrap().to_owned();
    let (status, e) = a.enrol(&id, "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED, "{e}");

    // Read-only from now on: every new transaction, and every connection is started afresh.
    let reconnect = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE datname = 'facekey' AND pid <> pg_backend_pid()";
    pg.psql("ALTER DATABASE facekey SET default_transaction_read_only = on");
    pg.psql(reconnect);
    for (image, decision) in [
        ("astronaut_640x480.jpg", "accept"),
        ("Tom_Hanks_54745.png", "reject"),
    ] {
        let (status, v) = a.verify(&id, image).await;
        assert_eq!(status, StatusCode::OK, "{image}: {v}");
        assert_eq!(v["decision"], decision, "{v}");
    }
    assert!(
        a.metrics().await.contains("facekey_lockout_ledger_local 1"),
        "the lockout did not fall back to memory"
    );
    let (status, v) = a.create("while read-only").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("store_unavailable")),
        "{v}"
    );
    // The ledger's recheck (every 5 s) asks for a writable database, not a read: still local.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(a.metrics().await.contains("facekey_lockout_ledger_local 1"));

    pg.psql(
        "BEGIN READ WRITE; ALTER DATABASE facekey SET default_transaction_read_only = off; COMMIT",
    );
    pg.psql(reconnect);
    within(Duration::from_secs(10), "writes accepted again", || async {
        a.create("after").await.0 == StatusCode::CREATED
    })
    .await;
    // And the lockout is shared again without waiting for a verification.
    within(
        Duration::from_secs(10),
        "the ledger shared again",
        || async { a.metrics().await.contains("facekey_lockout_ledger_local 0") },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_or_unreachable_database_stop_start_up_clearly() {
    let pg = PgServer::start();
    let work = tempfile::tempdir().unwrap();
    let right = key_file(work.path(), &new_key("k1"));
    let mut a = spawn(&pg.url(), &right, work.path(), "a");
    a.wait_ready().await;
    let (_, s) = a.create("someone").await;
    let id = s["id"].as_str().unwrap();
    let (status, e) = a.enrol(id, "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED, "{e}");
    drop(a);

    // The same key id with other key material: start-up fails, never matches garbage.
    let other_dir = work.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let wrong = key_file(&other_dir, &new_key("k1"));
    let mut b = spawn(&pg.url(), &wrong, work.path(), "b");
    let status = wait_exit(&mut b.child, Duration::from_secs(60));
    assert!(!status.success());
    let log = b.log();
    assert!(log.contains("does not decrypt with key \"k1\""), "{log}");

    // A key file without the template's key id names the missing key.
    let missing = key_file(&other_dir, &new_key("k2"));
    let mut c = spawn(&pg.url(), &missing, work.path(), "c");
    assert!(!wait_exit(&mut c.child, Duration::from_secs(60)).success());
    assert!(c.log().contains("\"k1\""), "{}", c.log());

    // Unreachable database: the error names the setting, never the password.
    let dead = format!(
        "postgres://postgres:s3cret-pw@127.0.0.1:{}/facekey",
        free_port()
    );
    let mut d = spawn(&dead, &right, work.path(), "d");
    assert!(!wait_exit(&mut d.child, Duration::from_secs(60)).success());
    let log = d.log();
    assert!(log.contains("FACEKEY_DATABASE_URL"), "{log}");
    assert!(!log.contains("s3cret-pw"), "password in the log: {log}");

    // A database without a key file is refused up front.
    let out = Command::new(env!("CARGO_BIN_EXE_facekey-runtime"))
        .env("FACEKEY_DATABASE_URL", pg.url())
        .env("FACEKEY_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env_remove("FACEKEY_TEMPLATE_KEY_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("FACEKEY_TEMPLATE_KEY_FILE"), "{text}");
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(start.elapsed() < limit, "process did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// TLS to the database: with `sslmode=verify-full` and the server's certificate as root the
/// runtime connects; without TLS the server refuses it; without the root the certificate is not
/// trusted. Every failure stops start-up naming the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_tls_is_verified() {
    let pg = PgServer::start_tls();
    let work = tempfile::tempdir().unwrap();
    let keys = key_file(work.path(), &new_key("k1"));
    let root = pg.tls_cert.clone().unwrap();
    let url = |query: &str| format!("{}?{query}", pg.url());

    let mut ok = spawn(
        &url(&format!(
            "sslmode=verify-full&sslrootcert={}",
            root.display()
        )),
        &keys,
        work.path(),
        "tls",
    );
    ok.wait_ready().await;
    let (status, s) = ok.create("over TLS").await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    assert_eq!(pg.psql("SELECT count(*) FROM facekey_subjects"), "1");
    let (encrypted, all) = pg
        .psql(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.application_name LIKE 'facekey-runtime%'",
        )
        .split_once('|')
        .map(|(e, a)| (e.to_owned(), a.to_owned()))
        .unwrap();
    assert!(all != "0", "the runtime holds connections");
    assert_eq!(encrypted, all, "every runtime connection is encrypted");
    drop(ok);

    for (name, query, expect) in [
        (
            "plain",
            "sslmode=disable".to_owned(),
            "FACEKEY_DATABASE_URL",
        ),
        (
            "untrusted",
            "sslmode=verify-full".to_owned(),
            "FACEKEY_DATABASE_URL",
        ),
    ] {
        let mut r = spawn(&url(&query), &keys, work.path(), name);
        assert!(
            !wait_exit(&mut r.child, Duration::from_secs(60)).success(),
            "{name} connected"
        );
        assert!(r.log().contains(expect), "{name}: {}", r.log());
    }

    // The CA as its own setting, for URLs one cannot edit (CloudNativePG's has no sslmode): it
    // wins over the URL, here one asking for no TLS, which this server would refuse.
    for (name, url) in [
        ("ca-file", pg.url()),
        ("ca-file-wins", url("sslmode=disable")),
    ] {
        let mut ca = spawn_with(
            &url,
            &keys,
            work.path(),
            name,
            &[("FACEKEY_DATABASE_CA_FILE", &root)],
        );
        ca.wait_ready().await;
        let (status, s) = ca.create(name).await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {s}");
    }
    // A CA that did not sign the server's certificate stops start-up, naming the setting.
    let other = work.path().join("other.crt");
    common::self_signed_cert(&other, &work.path().join("other.key"));
    let mut r = spawn_with(
        &pg.url(),
        &keys,
        work.path(),
        "wrong-ca",
        &[("FACEKEY_DATABASE_CA_FILE", &other)],
    );
    assert!(
        !wait_exit(&mut r.child, Duration::from_secs(60)).success(),
        "connected with a CA that did not sign the server's certificate"
    );
    assert!(r.log().contains("FACEKEY_DATABASE_CA_FILE"), "{}", r.log());
}

/// Key rotation: dropping the old key while it still seals data stops start-up, naming it; a
/// replica starting with the new key first (the old one still listed) seals every template
/// again with it (no re-enrolment), after which the old key can leave the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_keys_rotate_without_re_enrolment() {
    let pg = PgServer::start();
    let work = tempfile::tempdir().unwrap();
    let (k1, k2) = (new_key("k1"), new_key("k2"));
    let keys = key_file(work.path(), &k1);
    let mut a = spawn(&pg.url(), &keys, work.path(), "a");
    a.wait_ready().await;
    let (_, s) = a.create("rotated").await;
    let id = s["id"].as_str().unwrap().to_owned();
    let (status, e) = a.enrol(&id, "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED, "{e}");
    drop(a);

    // The new key alone cannot open what k1 sealed: start-up stops naming k1.
    std::fs::write(&keys, format!("{k2}\n")).unwrap();
    let mut early = spawn(&pg.url(), &keys, work.path(), "early");
    assert!(!wait_exit(&mut early.child, Duration::from_secs(60)).success());
    assert!(early.log().contains("\"k1\""), "{}", early.log());

    // The new key first, the old one still listed: start-up seals every template again with k2.
    std::fs::write(&keys, format!("{k2}\n{k1}\n")).unwrap();
    let mut b = spawn(&pg.url(), &keys, work.path(), "b");
    b.wait_ready().await;
    within(
        Duration::from_secs(10),
        "templates sealed again with k2",
        || async {
            pg.psql("SELECT string_agg(DISTINCT key_id, ',') FROM facekey_templates") == "k2"
        },
    )
    .await;
    let (status, v) = b.verify(&id, "astronaut_640x480.jpg").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["match"]["decision"], "accept", "{v}");
    let (status, e) = b.enrol(&id, "astronaut_640x480.jpg").await;
    assert_eq!(status, StatusCode::CREATED, "{e}");
    drop(b);

    // So k1 is retired: a replica with k2 alone starts and matches both faces.
    std::fs::write(&keys, format!("{k2}\n")).unwrap();
    let mut c = spawn(&pg.url(), &keys, work.path(), "c");
    c.wait_ready().await;
    let (status, v) = c.subject(&id).await;
    assert_eq!(
        (status, &v["faces"]),
        (StatusCode::OK, &serde_json::json!(2)),
        "{v}"
    );
    let (status, v) = c.verify(&id, "astronaut.png").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["match"]["decision"], "accept", "{v}");
}

/// A database a newer release migrated further (a migration this binary does not know) still
/// opens: an older replica restarting mid-rollout, or a rollback, starts instead of failing.
#[tokio::test]
async fn an_older_binary_starts_on_a_newer_schema() {
    let pg = PgServer::start();
    let replicas = Replicas::new(&pg);
    drop(replicas.connect().await);
    pg.psql(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99999, 'from a newer release', true, '\\x00', 0)",
    );
    use facekey_runtime::store::TemplateStore as _;
    let store = replicas.connect().await;
    assert!(store.load_all().await.unwrap().is_empty());
}

/// Another session holding subject `id`'s row lock for 2 s (a write to it waits), started.
async fn hold_subject_row(pg: &PgServer, id: &str) -> std::process::Child {
    let holder = pg.psql_spawn(&format!(
        "BEGIN; SELECT * FROM facekey_subjects WHERE id = '{id}' FOR UPDATE; SELECT pg_sleep(2);"
    ));
    within(
        Duration::from_secs(10),
        "the lock holder started",
        || async {
            pg.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(2)%' \
             AND state = 'active' AND pid <> pg_backend_pid()",
            ) == "1"
        },
    )
    .await;
    holder
}

/// A write that commits after its client went away is in the audit trail with what it did: a
/// rename waits on a row lock another session holds, the client gives up (audited 499), the lock
/// goes, the rename commits, and the write's own follow-up event says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_committed_after_its_client_left_is_audited_with_its_outcome() {
    let pg = PgServer::start();
    let work = tempfile::tempdir().unwrap();
    let keys = key_file(work.path(), &new_key("k1"));
    let audit = work.path().join("audit.log");
    let mut a = spawn_with(
        &pg.url(),
        &keys,
        work.path(),
        "a",
        &[("FACEKEY_AUDIT_LOG", audit.as_path())],
    );
    a.wait_ready().await;
    let (status, s) = a.create("Ada").await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    let id = s["id"].as_str().unwrap().to_owned();
    let mut holder = hold_subject_row(&pg, &id).await;
    let gave_up = a
        .client
        .patch(a.url(&format!("/v1/subjects/{id}")))
        .json(&serde_json::json!({"name": "Ada L."}))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(gave_up.is_err_and(|e| e.is_timeout()));
    holder.wait().unwrap();
    let renames = || {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["action"] == "subject.rename")
            .collect::<Vec<_>>()
    };
    within(Duration::from_secs(10), "the commit audited", || async {
        renames().len() == 2
    })
    .await;
    let events = renames();
    assert_eq!(events[0]["status"], 499, "{events:?}");
    assert_eq!(
        (&events[1]["status"], &events[1]["subject"]),
        (&serde_json::json!(200), &serde_json::json!(id)),
        "{events:?}"
    );
    assert!(
        events[1]["reasons"]
            .to_string()
            .contains("committed_after_request_ended"),
        "{events:?}"
    );
    assert_eq!(a.subject(&id).await.1["name"], "Ada L.");
}

/// A subject deletion that commits after its client went away still takes what the subject
/// left outside the template store: its liveness sessions (and their frames) go too. The delete
/// waits on a row lock, the client gives up, the lock goes, the delete commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_committed_after_its_client_left_still_erases_the_sessions() {
    let pg = PgServer::start();
    let work = tempfile::tempdir().unwrap();
    let keys = key_file(work.path(), &new_key("k1"));
    let mut a = spawn_with(&pg.url(), &keys, work.path(), "a", &[]);
    a.wait_ready().await;
    let (status, s) = a.create("Ada").await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    let id = s["id"].as_str().unwrap().to_owned();
    let (status, e) = a.enrol(&id, "astronaut.png").await;
    assert_eq!(status, StatusCode::CREATED, "{e}");
    let (status, session) = a
        .json(
            a.client
                .post(a.url("/v1/liveness/sessions"))
                .json(&serde_json::json!({ "subject": id })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let session = a.url(&format!(
        "/v1/liveness/sessions/{}",
        session["id"].as_str().unwrap()
    ));
    assert_eq!(a.json(a.client.get(&session)).await.0, StatusCode::OK);

    let mut holder = hold_subject_row(&pg, &id).await;
    let gave_up = a
        .client
        .delete(a.url(&format!("/v1/subjects/{id}")))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(gave_up.is_err_and(|e| e.is_timeout()));
    holder.wait().unwrap();
    within(
        Duration::from_secs(10),
        "the deletion committed",
        || async { a.subject(&id).await.0 == StatusCode::NOT_FOUND },
    )
    .await;
    within(
        Duration::from_secs(10),
        "the bound session erased with it",
        || async { a.json(a.client.get(&session)).await.0 == StatusCode::NOT_FOUND },
    )
    .await;
}

/// A replica whose migration must wait for a table lock (a backup, a long transaction) waits
/// a short while at a time: a waiting `CREATE INDEX` or `ALTER TABLE` makes every later query on
/// that table wait behind it, so with the 60 s wait it had, every replica's writes to the table
/// stalled (and failed their own 5 s lock timeout). Writes now get through within a few
/// seconds, and the migration lands once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_waiting_for_a_table_lock_does_not_stall_the_tables_queries() {
    let pg = PgServer::start();
    let replicas = Replicas::new(&pg);
    drop(replicas.connect().await);
    // The last migration pending again: its index gone, its record too.
    pg.psql(
        "DROP INDEX facekey_lockouts_streak_expires; \
         DELETE FROM _sqlx_migrations WHERE version = 9",
    );
    // A long transaction that wrote the table: CREATE INDEX waits for it.
    let mut holder = pg.psql_spawn(
        "BEGIN; LOCK TABLE facekey_lockouts IN ROW EXCLUSIVE MODE; SELECT pg_sleep(8); COMMIT;",
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    // Another replica's write to the table, behind the waiting migration, with the runtime's
    // own lock timeout.
    let write = async {
        use sqlx::Connection;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut c = sqlx::PgConnection::connect(&pg.url()).await?;
        sqlx::raw_sql("SET lock_timeout = '5s'")
            .execute(&mut c)
            .await?;
        sqlx::query("INSERT INTO facekey_lockouts (subject, expires_at) VALUES ('w', now())")
            .execute(&mut c)
            .await
    };
    let (store, written) = tokio::join!(replicas.connect(), write);
    written.expect("a write behind the waiting migration");
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "waited for the lock"
    );
    drop(store);
    holder.wait().unwrap();
    assert_eq!(
        pg.psql(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'facekey_lockouts_streak_expires'"
        ),
        "1"
    );
}

/// While the template store opens (here a migration waits for another replica's), the
/// operations listener already answers the kubelet's probes: `/healthz` 200, `/readyz` 503.
/// Before, nothing answered until the store was open, and a startup probe could restart the pod
/// mid-wait, again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_answered_while_the_store_opens() {
    let pg = PgServer::start();
    let work = tempfile::tempdir().unwrap();
    let line = facekey_runtime::store::cipher::new_key_line("k1").unwrap();
    let template_keys = key_file(work.path(), &line);
    let (api_keys, _) = api_keys(work.path());
    // Another replica migrating: the lock held for 6 s.
    let mut holder = pg.psql_spawn(
        "SELECT pg_advisory_lock(hashtextextended('facekey.migrations', 0)); SELECT pg_sleep(6);",
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics_port = free_port();
    let mut config = facekey_runtime::config::Config::for_tests();
    config.database_url = Some(pg.url());
    config.template_key_file = Some(template_keys);
    config.api_keys_file = Some(api_keys);
    config.data_dir = work.path().join("data");
    config.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], metrics_port)));
    // Server::bind's future is not Send: it is polled here, beside the probes.
    let mut bind = std::pin::pin!(facekey_runtime::server::Server::bind(config));

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let get = |path: &str| {
        client
            .get(format!("http://127.0.0.1:{metrics_port}{path}"))
            .send()
    };
    let probes = async {
        let deadline = Instant::now() + Duration::from_secs(3);
        let healthz = loop {
            match get("/healthz").await {
                Ok(r) => break r,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no answer to /healthz: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        assert_eq!(healthz.status(), StatusCode::OK);
        let readyz = get("/readyz").await.unwrap();
        assert_eq!(readyz.status(), StatusCode::SERVICE_UNAVAILABLE);
        let v: Value = readyz.json().await.unwrap();
        assert_eq!(v["error"]["code"], "not_ready", "{v}");
    };
    tokio::select! {
        bound = &mut bind => panic!(
            "the store opened before the test could look (ok: {})",
            bound.is_ok()
        ),
        () = probes => {}
    }
    let server = tokio::time::timeout(Duration::from_secs(60), bind)
        .await
        .unwrap()
        .unwrap();
    holder.wait().unwrap();
    assert_eq!(server.metrics_addr().map(|a| a.port()), Some(metrics_port));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    // The server took the listener over: its own /healthz answers.
    assert_eq!(get("/healthz").await.unwrap().status(), StatusCode::OK);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
