//! Tests of the `facekey-runtime` binary as an operator runs it: configuration from the
//! environment, JSON logs, clean exit on SIGTERM, and a non-zero exit naming a bad file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::free_port;

/// Start the binary on a free port with its data in `<dir>/data`, keys from `keys_file` and
/// the `extra` environment, and wait until `/readyz` says ready.
fn start_keyed(
    dir: &std::path::Path,
    keys_file: &std::path::Path,
    extra: &[(&str, &str)],
) -> (std::process::Child, u16) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_facekey-runtime"))
        .env("FACEKEY_LISTEN", format!("127.0.0.1:{port}"))
        .env("FACEKEY_DATA_DIR", dir.join("data"))
        .env("FACEKEY_API_KEYS_FILE", keys_file)
        .env("FACEKEY_LOG", "warn")
        .env("FACEKEY_AUDIT_LOG", dir.join("audit.log"))
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("curl")
            .args(["-s", &format!("http://127.0.0.1:{port}/readyz")])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("\"ready\"") {
            break;
        }
        assert!(Instant::now() < deadline, "not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}

#[test]
fn serves_from_env_config_logs_json_and_exits_cleanly_on_sigterm() {
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_facekey-runtime"))
        .env("FACEKEY_LISTEN", format!("127.0.0.1:{port}"))
        .env("FACEKEY_DATA_DIR", data.path())
        .env("FACEKEY_LOG_FORMAT", "json")
        .env("FACEKEY_THRESHOLD", "0.9")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    // First start without a keys file: an admin key is created and shown once, as a login URL
    // on stderr.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let key = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("no login URL on stderr");
        if let Some((_, key)) = line.split_once("/#key=") {
            assert!(
                line.contains(&format!("http://127.0.0.1:{port}/#key=")),
                "{line}"
            );
            break key.trim().to_owned();
        }
    };
    let stored = std::fs::read_to_string(data.path().join("api-keys")).unwrap();
    assert!(!stored.contains(&key), "only the key's hash is stored");
    let auth = format!("authorization: Bearer {key}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let out = Command::new("curl")
            .args([
                "-s",
                "-X",
                "POST",
                "-H",
                &auth,
                "-H",
                "content-type: application/json",
                "-d",
                r#"{"features":[1,0.5,-1]}"#,
                &format!("http://127.0.0.1:{port}/v1/score"),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains("probability") {
            break text;
        }
        assert!(Instant::now() < deadline, "server never answered");
        std::thread::sleep(Duration::from_millis(50));
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["threshold"], 0.9);
    assert_eq!(v["decision"], "reject");

    let health = Command::new(env!("CARGO_BIN_EXE_facekey-runtime"))
        .args(["--check-health", "--listen", &format!("0.0.0.0:{port}")])
        .status()
        .unwrap();
    assert!(
        health.success(),
        "--check-health failed against a serving runtime"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit status {exit:?}");

    let lines = lines.join().unwrap();
    let json_lines: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert!(
        json_lines
            .iter()
            .any(|l| l["message"] == "facekey-runtime listening"),
        "{lines:?}"
    );
    assert!(
        json_lines
            .iter()
            .any(|l| l["message"] == "received SIGTERM"),
        "{lines:?}"
    );
    assert!(json_lines.iter().any(|l| l["message"] == "stopped cleanly"));
}

#[test]
fn bad_weights_file_exits_non_zero_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("facekey-bin-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken-weights.json");
    std::fs::write(&path, r#"{"format":"facekey.fusion-weights","version":1}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_facekey-runtime"))
        .env("FACEKEY_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("FACEKEY_DATA_DIR", dir.join("data"))
        .env("FACEKEY_WEIGHTS", &path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken-weights.json"), "{stderr}");
    assert!(stderr.contains("missing field"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A database URL read from a file that leaves TLS to chance stops start-up, naming the file's
/// setting, before anything connects; the same URL stating `sslmode=disable` is a choice.
#[test]
fn a_database_url_without_sslmode_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("url");
    std::fs::write(&url, "postgres://facekey:s3cret@db.invalid:5432/facekey\n").unwrap();
    let key = dir.path().join("template.key");
    std::fs::write(&key, format!("k1:{}\n", "ab".repeat(32))).unwrap();
    let keys = dir.path().join("api-keys");
    std::fs::write(&keys, common::test_keys().0).unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_facekey-runtime"))
            .env("FACEKEY_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("FACEKEY_DATA_DIR", dir.path().join("data"))
            .env("FACEKEY_DATABASE_URL_FILE", &url)
            .env("FACEKEY_TEMPLATE_KEY_FILE", &key)
            .env("FACEKEY_API_KEYS_FILE", &keys)
            .output()
            .unwrap()
    };
    let out = run();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FACEKEY_DATABASE_URL_FILE") && stderr.contains("sslmode"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    // Stated: start-up goes on to connect (and fails on the unresolvable host instead).
    std::fs::write(
        &url,
        "postgres://facekey:s3cret@db.invalid:5432/facekey?sslmode=disable\n",
    )
    .unwrap();
    let out = run();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("unsafe settings") && stderr.contains("cannot connect"),
        "{stderr}"
    );
}

/// A setting this runtime does not know (a typo, or a newer operator's) is named, not ignored
/// silently.
#[test]
fn check_config_names_unknown_settings() {
    let out = Command::new(env!("CARGO_BIN_EXE_facekey-runtime"))
        .arg("--check-config")
        .env("FACEKEY_LOCKOUT_MAX_SECCS", "60")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("UNKNOWN SETTING (ignored by this runtime): FACEKEY_LOCKOUT_MAX_SECCS"),
        "{stderr}"
    );
}

#[test]
fn check_health_fails_when_nothing_listens() {
    let out = Command::new(env!("CARGO_BIN_EXE_facekey-runtime"))
        .args([
            "--check-health",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

#[test]
fn invalid_flag_value_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_facekey-runtime"))
        .args(["--threshold", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[0, 1]"), "{stderr}");
}

#[test]
fn enrolled_subjects_survive_a_killed_process() {
    let dir = tempfile::tempdir().unwrap();
    // Each start's stderr lines (the first start prints the login URL there).
    let start = || {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_facekey-runtime"))
            .env("FACEKEY_LISTEN", format!("127.0.0.1:{port}"))
            .env("FACEKEY_DATA_DIR", dir.path())
            .env("FACEKEY_LOG", "warn")
            .env("FACEKEY_AUDIT_LOG", dir.path().join("audit.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = std::thread::spawn(move || {
            BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        (child, port, lines)
    };
    let curl = |args: &[&str]| -> String {
        let out = Command::new("curl").arg("-s").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let wait = |port: u16| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let ready = || {
            serde_json::from_str::<serde_json::Value>(&curl(&[&format!(
                "http://127.0.0.1:{port}/readyz"
            )]))
            .is_ok_and(|v| v["status"] == "ready")
        };
        while !ready() {
            assert!(Instant::now() < deadline, "not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    let (mut child, port, stderr) = start();
    wait(port);
    let marker = format!("http://127.0.0.1:{port}/#key=");
    let created_without_key = curl(&[
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"name":"Intruder"}"#,
        &format!("http://127.0.0.1:{port}/v1/subjects"),
    ]);
    let refused: serde_json::Value = serde_json::from_str(&created_without_key).unwrap();
    assert_eq!(refused["error"]["code"], "unauthorized", "{refused}");
    child.kill().unwrap();
    child.wait().unwrap();
    let lines = stderr.join().unwrap();
    let key = lines
        .iter()
        .find_map(|l| l.split_once(&marker).map(|(_, k)| k.trim().to_owned()))
        .unwrap_or_else(|| panic!("no login URL in {lines:?}"));
    let auth = format!("authorization: Bearer {key}");

    let (mut child, port, stderr) = start();
    wait(port);
    let created = curl(&[
        "-H",
        &auth,
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"name":"Durable"}"#,
        &format!("http://127.0.0.1:{port}/v1/subjects"),
    ]);
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    // SIGKILL: no chance to flush anything after the 201 was sent.
    child.kill().unwrap();
    child.wait().unwrap();

    let second = stderr.join().unwrap();
    assert!(
        !second.iter().any(|l| l.contains("#key=")),
        "the key is shown on first start only: {second:?}"
    );

    let (mut child, port, _stderr) = start();
    wait(port);
    let got = curl(&[
        "-H",
        &auth,
        &format!("http://127.0.0.1:{port}/v1/subjects/{id}"),
    ]);
    let got: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(got["name"], "Durable", "{got}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn new_api_key_prints_the_key_then_its_keys_file_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_facekey-runtime"))
        .args([
            "new-api-key",
            "checkout",
            "--scopes",
            "verify,enrol",
            "--rps",
            "5",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let (key, line) = (lines[0], lines[1]);
    assert!(key.starts_with("fk_"), "{key}");
    let ring = facekey_runtime::auth::KeyRing::parse(line, std::path::Path::new("stdout")).unwrap();
    let entry = ring
        .authenticate(key)
        .expect("the line authenticates the key");
    assert_eq!(entry.id(), "checkout");
    assert_eq!(entry.rps, Some(5.0));
    assert!(!line.contains(&key[3..]));

    let bad = Command::new(env!("CARGO_BIN_EXE_facekey-runtime"))
        .args(["new-api-key", "x", "--scopes", "root"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown scope"));
}

/// SIGKILL while enrolments are in flight: the store opens cleanly on restart and every face
/// whose enrolment was acknowledged (201) is there; none half-written.
#[test]
fn a_kill_during_enrolments_loses_no_acknowledged_face() {
    let dir = tempfile::tempdir().unwrap();
    let (keys_text, keys) = common::test_keys();
    let keys_file = dir.path().join("api-keys");
    std::fs::write(&keys_file, keys_text).unwrap();
    let auth = format!("authorization: Bearer {}", keys["admin"]);
    let start = || {
        start_keyed(
            dir.path(),
            &keys_file,
            // Room for every enrolment of the run (the same person's face each time).
            &[("FACEKEY_MAX_FACES_PER_SUBJECT", "50")],
        )
    };
    let curl = |args: &[&str]| -> String {
        let out = Command::new("curl").arg("-s").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let (mut child, port) = start();
    let created: serde_json::Value = serde_json::from_str(&curl(&[
        "-H",
        &auth,
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"name":"Killed mid-enrolment"}"#,
        &format!("http://127.0.0.1:{port}/v1/subjects"),
    ]))
    .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let image = format!(
        "image=@{}/testdata/faces/astronaut.png",
        env!("CARGO_MANIFEST_DIR")
    );
    let url = format!("http://127.0.0.1:{port}/v1/subjects/{id}/faces");
    // Enrolments one after another on several threads, until the process is killed.
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (auth, image, url) = (auth.clone(), image.clone(), url.clone());
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                loop {
                    let out = Command::new("curl")
                        .args(["-s", "-H", &auth, "-F", &image, &url])
                        .output()
                        .unwrap();
                    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
                        return acknowledged; // the connection died with the process
                    };
                    match v["face_id"].as_str() {
                        Some(face) => acknowledged.push(face.to_owned()),
                        None => return acknowledged,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2500));
    child.kill().unwrap();
    child.wait().unwrap();
    let acknowledged: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(
        !acknowledged.is_empty(),
        "no enrolment finished before the kill"
    );

    let (mut child, port) = start();
    let detail: serde_json::Value = serde_json::from_str(&curl(&[
        "-H",
        &auth,
        &format!("http://127.0.0.1:{port}/v1/subjects/{id}"),
    ]))
    .unwrap();
    let stored: Vec<&str> = detail["templates"]
        .as_array()
        .unwrap_or_else(|| panic!("{detail}"))
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    for face in &acknowledged {
        assert!(
            stored.contains(&face.as_str()),
            "acknowledged face {face} lost: {detail}"
        );
    }
    assert_eq!(
        detail["faces"].as_u64(),
        Some(stored.len() as u64),
        "{detail}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// One request a load worker sent: when curl started and ended (since the test began), curl's
/// exit code, the HTTP status (0 without an answer) and the body.
#[derive(Debug, Clone)]
struct Sent {
    started: Duration,
    ended: Duration,
    exit: i32,
    status: u16,
    body: String,
}

/// Send one request with curl (`extra` flags, then `args`), timed from `t0`.
fn send(t0: Instant, auth: &str, extra: &[&str], args: &[String]) -> Sent {
    let started = t0.elapsed();
    let out = Command::new("curl")
        .args(["-s", "-m", "60", "-w", "\n%{http_code}", "-H", auth])
        .args(extra)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Sent {
        started,
        ended: t0.elapsed(),
        exit: out.status.code().unwrap_or(-1),
        status: code.trim().parse().unwrap_or(0),
        body: body.to_owned(),
    }
}

/// SIGTERM while verifications and enrolments are in flight: every request the server had
/// already accepted is answered in full (among them one still uploading its image at the
/// signal), requests sent after the signal are refused (the listener is closed: connection
/// refused), the process exits 0, and every enrolment it acknowledged is there after a restart.
#[test]
fn sigterm_under_load_finishes_in_flight_requests_and_loses_no_enrolment() {
    let dir = tempfile::tempdir().unwrap();
    let (keys_text, keys) = common::test_keys();
    let keys_file = dir.path().join("api-keys");
    std::fs::write(&keys_file, keys_text).unwrap();
    let auth = format!("authorization: Bearer {}", keys["admin"]);
    let start = || {
        start_keyed(
            dir.path(),
            &keys_file,
            &[
                ("FACEKEY_MAX_FACES_PER_SUBJECT", "200"),
                // Room for every worker: this test is about shutdown, not shedding.
                ("FACEKEY_MAX_QUEUE", "16"),
                ("FACEKEY_QUEUE_MAX_LOAD", "1000"),
            ],
        )
    };
    let (mut child, port) = start();
    let out = Command::new("curl")
        .args(["-s", "-H", &auth, "-H", "content-type: application/json"])
        .args(["-d", r#"{"name":"Stopped under load"}"#])
        .arg(format!("http://127.0.0.1:{port}/v1/subjects"))
        .output()
        .unwrap();
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let faces = format!("{}/testdata/faces", env!("CARGO_MANIFEST_DIR"));
    let enrol: Vec<String> = vec![
        "-F".into(),
        format!("image=@{faces}/astronaut.png"),
        format!("http://127.0.0.1:{port}/v1/subjects/{id}/faces"),
    ];
    let verify: Vec<String> = vec![
        "-F".into(),
        format!("subject={id}"),
        "-F".into(),
        format!("image=@{faces}/astronaut_640x480.jpg"),
        format!("http://127.0.0.1:{port}/v1/verify"),
    ];
    // The first enrolment, so verifications have a template.
    let first = Command::new("curl")
        .args(["-s", "-H", &auth])
        .args(&enrol)
        .output()
        .unwrap();
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert!(first["face_id"].is_string(), "{first}");

    let t0 = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Two enrolling and two verifying workers, each sending one request after another (a new
    // connection each) until the server stops answering.
    let workers: Vec<_> = [enrol.clone(), enrol, verify.clone(), verify.clone()]
        .into_iter()
        .map(|args| {
            let (auth, stop) = (auth.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut sent = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let s = send(t0, &auth, &[], &args);
                    let answered = s.status != 0;
                    sent.push(s);
                    if !answered {
                        break; // refused: the server is going away
                    }
                }
                sent
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2400));
    // One verification whose 68 kB image uploads at 40 kB/s (above the slow-client floor of
    // 16 kB/s): certainly accepted and still in flight, mid-body, when the signal comes. (The
    // workers' requests alone may all fall between two requests at the signal.)
    let slow = {
        let (auth, verify) = (auth.clone(), verify.clone());
        std::thread::spawn(move || send(t0, &auth, &["--limit-rate", "40k"], &verify))
    };
    std::thread::sleep(Duration::from_millis(600));
    let term_at = t0.elapsed();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    let exited_at = t0.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        exit.success(),
        "exit status after SIGTERM under load: {exit:?}"
    );
    let slow = slow.join().unwrap();
    assert!(
        slow.ended > term_at && slow.status == 200,
        "the upload in progress at SIGTERM was not answered in full: {slow:?}"
    );
    let sent: Vec<Sent> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .chain([slow])
        .collect();

    // Requests sent well before the signal were accepted by the server: each is answered in
    // full with a success, including those still running when the signal came.
    let margin = Duration::from_millis(300);
    let before: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.started + margin < term_at)
        .collect();
    for s in &before {
        assert!(
            s.exit == 0 && (200..300).contains(&s.status),
            "a request sent before SIGTERM was not answered in full: {s:?}"
        );
        serde_json::from_str::<serde_json::Value>(&s.body)
            .unwrap_or_else(|e| panic!("truncated answer {s:?}: {e}"));
    }
    let in_flight = before.iter().filter(|s| s.ended > term_at).count();
    assert!(
        in_flight > 0,
        "no request was in flight at SIGTERM, nothing tested: {sent:?}"
    );
    // Requests sent after the signal (and before exit) are refused, never served.
    for s in sent.iter().filter(|s| s.started > term_at + margin) {
        assert!(
            s.status == 0 || s.status == 503,
            "a request sent after SIGTERM was served: {s:?}"
        );
    }
    eprintln!(
        "SIGTERM at {term_at:?}, exit at {exited_at:?}: {} requests, {in_flight} in flight at the signal",
        sent.len()
    );

    // Every acknowledged enrolment is in the store after a restart.
    let acknowledged: Vec<String> = sent
        .iter()
        .filter(|s| s.status == 201)
        .filter_map(|s| serde_json::from_str::<serde_json::Value>(&s.body).ok())
        .filter_map(|v| v["face_id"].as_str().map(str::to_owned))
        .chain(first["face_id"].as_str().map(str::to_owned))
        .collect();
    let (mut child, port) = start();
    let out = Command::new("curl")
        .args(["-s", "-H", &auth])
        .arg(format!("http://127.0.0.1:{port}/v1/subjects/{id}"))
        .output()
        .unwrap();
    let detail: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stored: Vec<&str> = detail["templates"]
        .as_array()
        .unwrap_or_else(|| panic!("{detail}"))
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert!(acknowledged.len() > 1, "no enrolment under load: {sent:?}");
    for face in &acknowledged {
        assert!(
            stored.contains(&face.as_str()),
            "acknowledged face {face} lost: {detail}"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
