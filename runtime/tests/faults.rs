//! Faults around the runtime: an SMTP server that is down or hangs must not slow or fail the
//! requests whose spoof alerts it would carry (alerts are queued, never awaited by a request).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Running, face, free_port, send_json};
use facekey_runtime::alerts::SmtpTls;
use facekey_runtime::config::Config;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

/// A runtime whose every face is a spoof (liveness threshold 1.0), alerting to `smarthost`.
fn alerting_config(smarthost: String) -> Config {
    let mut config = Config::for_tests();
    config.smtp_smarthost = Some(smarthost);
    config.smtp_tls = SmtpTls::None;
    config.alert_from = Some("facekey@example.test".into());
    config.alert_to = vec!["security@example.test".into()];
    config.alert_min_interval_secs = 0;
    config.liveness_threshold = 1.0;
    config
}

async fn spoofs(s: &Running, n: usize) {
    for i in 0..n {
        let form = Form::new().part(
            "image",
            Part::bytes(face("astronaut_640x480.jpg")).file_name("a.jpg"),
        );
        let (status, v) = send_json(s.client.post(s.url("/v1/liveness")).multipart(form)).await;
        assert_eq!(status, StatusCode::OK, "request {i}: {v}");
        assert_eq!(v["faces"][0]["liveness"]["state"], "spoof", "{v}");
    }
}

#[tokio::test]
async fn a_hanging_smtp_server_does_not_hold_up_requests() {
    // Accepts connections and never sends its greeting.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hole.local_addr().unwrap();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((conn, _)) = hole.accept() {
            let _ = seen_tx.send(());
            held.push(conn);
            if held.len() >= 4 {
                break;
            }
        }
        std::thread::sleep(Duration::from_secs(30));
        drop(held);
    });
    let s = Running::start(alerting_config(addr.to_string())).await;
    spoofs(&s, 1).await;
    // The mail task is now stuck in a connection that never answers ...
    seen_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the runtime never tried to mail the alert");
    // ... and every further spoofed request is still answered, its alert queued.
    spoofs(&s, 5).await;
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("facekey_spoof_detected_total 6"),
        "{metrics}"
    );
    assert!(metrics.contains(r#"facekey_alert_emails_total{result="sent"} 0"#));
    // Stopping waits a bounded time (10 s) for the stuck mail, then exits cleanly.
    let Running {
        mut stop,
        task,
        data_dir,
        ..
    } = s;
    stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the runtime did not exit with a mail stuck")
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(data_dir);
    drop(holder);
}

#[tokio::test]
async fn an_smtp_server_that_is_down_fails_emails_not_requests() {
    // Nothing listens on this port.
    let port = free_port();
    let s = Running::start(alerting_config(format!("127.0.0.1:{port}"))).await;
    spoofs(&s, 3).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = s.metrics().await;
        // The series exists at 0 from the start (alerts read its increase).
        assert!(metrics.contains(r#"facekey_alert_emails_total{result="failed"}"#));
        if !metrics.contains(r#"facekey_alert_emails_total{result="failed"} 0"#) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a refused SMTP connection was never counted as a failed email:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Still serving.
    spoofs(&s, 1).await;
    s.stop().await;
}

/// A small tmpfs mounted for one test (the data directory's file system), unmounted on drop.
/// `None`, with the reason printed, where mounting is not allowed (not root): the data-dir
/// tests then have nothing honest to run against and skip. CI runs as root, where it works.
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    fn tmpfs(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self { dir }),
            Ok(o) => {
                eprintln!(
                    "SKIP: cannot mount a tmpfs for the data directory ({}); run as root",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIP: no mount command ({e})");
                None
            }
        }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Remount read-only (no file may be open for writing on it).
    fn remount(&self, mode: &str) {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(self.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount {mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fill the file system holding `dir` with a ballast file until the disk is full.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let ballast = dir.join("ballast");
    let mut f = std::fs::File::create(&ballast).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = f.write_all(&chunk) {
            assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
            break;
        }
    }
    // Single bytes until not even one fits.
    while f.write_all(&[0]).is_ok() {}
    let _ = f.sync_all();
    ballast
}

/// A server on `data_dir` with a keys file kept outside it (a read-only data directory cannot
/// hold the harness's keys file); its clients: `(admin, verify)`.
async fn start_on(
    data_dir: &std::path::Path,
    keys_dir: &std::path::Path,
) -> (Running, reqwest::Client, reqwest::Client) {
    let (text, keys) = common::test_keys();
    let file = keys_dir.join(format!("api-keys-{}", uuid_like()));
    std::fs::write(&file, text).unwrap();
    let mut config = Config::for_tests();
    config.data_dir = data_dir.to_path_buf();
    config.api_keys_file = Some(file);
    let s = Running::start(config).await;
    let admin = common::keyed_client(&keys["admin"]);
    let verify = common::keyed_client(&keys["verify"]);
    (s, admin, verify)
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

async fn create_subject(s: &Running, c: &reqwest::Client, name: &str) -> (StatusCode, Value) {
    send_json(
        c.post(s.url("/v1/subjects"))
            .json(&serde_json::json!({ "name": name })),
    )
    .await
}

async fn enrol(s: &Running, c: &reqwest::Client, id: &str) -> (StatusCode, Value) {
    let form = Form::new().part(
        "image",
        Part::bytes(face("astronaut.png")).file_name("astronaut.png"),
    );
    send_json(
        c.post(s.url(&format!("/v1/subjects/{id}/faces")))
            .multipart(form),
    )
    .await
}

async fn verify(s: &Running, c: &reqwest::Client, id: &str) -> (StatusCode, Value) {
    let form = Form::new().text("subject", id.to_owned()).part(
        "image",
        Part::bytes(face("astronaut_640x480.jpg")).file_name("probe.jpg"),
    );
    send_json(c.post(s.url("/v1/verify")).multipart(form)).await
}

/// Reads and verification on a store whose writes fail: 200 with the right answers.
async fn reads_and_verification_work(
    s: &Running,
    admin: &reqwest::Client,
    c: &reqwest::Client,
    id: &str,
    faces: usize,
) {
    let (status, v) = verify(s, c, id).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["subject"], id, "{v}");
    assert!(
        !v["reasons"].to_string().contains("no_match"),
        "the enrolled face still matches: {v}"
    );
    let (status, v) = send_json(admin.get(s.url(&format!("/v1/subjects/{id}")))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["faces"].as_u64(), Some(faces as u64), "{v}");
    let (status, v) = send_json(admin.get(s.url("/v1/subjects"))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

fn assert_store_unavailable(status: StatusCode, v: &Value, cause: &str) {
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(common::error_code(v), "store_unavailable", "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(cause), "the message names the cause: {v}");
    assert!(message.contains("data directory"), "{v}");
}

/// The data directory fills up while the runtime serves: writes answer 503 `store_unavailable`
/// naming the full disk, reads and verification keep working, every acknowledged write is still
/// there, and once space is freed writes work again without a restart, and after one.
#[tokio::test]
async fn a_full_data_directory_refuses_writes_and_keeps_serving() {
    let Some(mount) = Mount::tmpfs("16m") else {
        return;
    };
    let keys_dir = tempfile::tempdir().unwrap();
    let data = mount.path().join("data");
    let (s, admin, verifier) = start_on(&data, keys_dir.path()).await;
    let (status, v) = create_subject(&s, &admin, "Eileen Collins").await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let eileen = v["id"].as_str().unwrap().to_owned();
    let (status, v) = enrol(&s, &admin, &eileen).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");

    let ballast = fill(mount.path());
    // Writes that still fit in the database file's free pages may succeed; every one
    // acknowledged is kept. Sooner or later one needs the disk and is refused.
    let mut acknowledged = vec![eileen.clone()];
    let refused = loop {
        let (status, v) =
            create_subject(&s, &admin, &format!("subject {}", acknowledged.len())).await;
        if status == StatusCode::CREATED {
            acknowledged.push(v["id"].as_str().unwrap().to_owned());
            assert!(
                acknowledged.len() < 5_000,
                "writes never failed on a full disk"
            );
            continue;
        }
        break (status, v);
    };
    assert_store_unavailable(refused.0, &refused.1, "full");
    // Every kind of write is refused while the disk is full; no 500.
    let (status, v) = enrol(&s, &admin, &eileen).await;
    assert_store_unavailable(status, &v, "");
    let (status, v) = send_json(admin.delete(s.url(&format!(
        "/v1/subjects/{}",
        acknowledged[1.min(acknowledged.len() - 1)]
    ))))
    .await;
    assert_store_unavailable(status, &v, "");
    // Readiness stays 200 (the replica still verifies) and reports the store as unavailable.
    let (status, v) = send_json(admin.get(s.url("/readyz"))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["store"]["available"], false, "{v}");
    // What failed, without the data directory's path (the open /readyz is no place for it).
    let error = v["store"]["error"].as_str().unwrap_or_default();
    assert!(!error.is_empty() && !error.contains('/'), "{v}");
    assert!(s.metrics().await.contains("facekey_store_up 0"));
    reads_and_verification_work(&s, &admin, &verifier, &eileen, 1).await;

    // Space comes back: writes work again on the same process.
    std::fs::remove_file(&ballast).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let face = loop {
        let (status, v) = enrol(&s, &admin, &eileen).await;
        if status == StatusCode::CREATED {
            break v["face_id"].as_str().unwrap().to_owned();
        }
        assert_store_unavailable(status, &v, "");
        assert!(
            std::time::Instant::now() < deadline,
            "writes never recovered: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (status, v) = send_json(admin.get(s.url("/readyz"))).await;
    assert_eq!(
        (status, &v["store"]["available"]),
        (StatusCode::OK, &Value::Bool(true)),
        "{v}"
    );

    // Restart on the same directory: everything acknowledged is there.
    let Running { mut stop, task, .. } = s;
    stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let (s, admin, verifier) = start_on(&data, keys_dir.path()).await;
    for id in &acknowledged {
        let (status, v) = send_json(admin.get(s.url(&format!("/v1/subjects/{id}")))).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "acknowledged subject {id} lost: {v}"
        );
    }
    let (_, v) = send_json(admin.get(s.url(&format!("/v1/subjects/{eileen}")))).await;
    assert_eq!(v["faces"], 2, "{v}");
    assert!(v.to_string().contains(&face), "{v}");
    reads_and_verification_work(&s, &admin, &verifier, &eileen, 2).await;
    s.stop().await;
    drop(mount);
}

/// The data directory is read-only when the runtime starts (a read-only volume, a file system
/// the kernel remounted read-only after errors): it serves reads and verification from the
/// enrolled subjects and answers every write 503 `store_unavailable` naming the cause.
#[tokio::test]
async fn a_read_only_data_directory_serves_reads_and_refuses_writes() {
    let Some(mount) = Mount::tmpfs("16m") else {
        return;
    };
    let keys_dir = tempfile::tempdir().unwrap();
    let data = mount.path().join("data");
    let (s, admin, _) = start_on(&data, keys_dir.path()).await;
    let (status, v) = create_subject(&s, &admin, "Eileen Collins").await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let eileen = v["id"].as_str().unwrap().to_owned();
    let (status, v) = enrol(&s, &admin, &eileen).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let Running { mut stop, task, .. } = s;
    stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    mount.remount("ro");
    let (s, admin, verifier) = start_on(&data, keys_dir.path()).await;
    // Unavailable from the start (the file is open read-only), not only once a write failed,
    // and the reads that work do not report it available (FaceKeyTemplateStoreDown can fire).
    let store_available = || async {
        let (status, v) = send_json(admin.get(s.url("/readyz"))).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["store"]["available"].clone()
    };
    assert_eq!(store_available().await, false);
    reads_and_verification_work(&s, &admin, &verifier, &eileen, 1).await;
    let (status, v) = create_subject(&s, &admin, "Sally Ride").await;
    assert_store_unavailable(status, &v, "read-only");
    let (status, v) = enrol(&s, &admin, &eileen).await;
    assert_store_unavailable(status, &v, "read-only");
    let (status, v) = send_json(
        admin
            .patch(s.url(&format!("/v1/subjects/{eileen}")))
            .json(&serde_json::json!({"name": "E. Collins"})),
    )
    .await;
    assert_store_unavailable(status, &v, "read-only");
    let (status, v) = send_json(admin.delete(s.url(&format!("/v1/subjects/{eileen}")))).await;
    assert_store_unavailable(status, &v, "read-only");
    // Nothing changed: the refused writes left the subject as it was.
    reads_and_verification_work(&s, &admin, &verifier, &eileen, 1).await;
    assert_eq!(store_available().await, false);
    // The refused writes are read back (5 s later): the read works, the store stays down.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(store_available().await, false);
    assert!(s.metrics().await.contains("facekey_store_up 0"));
    s.stop().await;
    drop(mount);
}
