//! Spoof alert emails delivered to a real SMTP server (aiosmtpd, started on loopback) that
//! requires STARTTLS and AUTH, with a self-signed certificate the mailer is told to trust.
//! Needs the test venv (`tests/setup.sh` creates `.venv-tests` with aiosmtpd) and `openssl`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

mod common;

use facekey_runtime::alerts::{self, EmailSettings, Mailer, SmtpTls, SpoofAttempt};
use facekey_runtime::metrics::Metrics;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> PathBuf {
    let p = std::env::var_os("FACEKEY_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv-tests/bin/python"));
    assert!(
        p.exists(),
        "{} not found: run tests/setup.sh to create the test venv with aiosmtpd",
        p.display()
    );
    p
}

struct SmtpServer {
    child: Child,
    port: u16,
    maildir: PathBuf,
    cert: PathBuf,
    dir: tempfile::TempDir,
}

impl SmtpServer {
    fn start() -> Self {
        Self::start_with_delay(0.0)
    }

    /// A relay that waits `delay` seconds before accepting each message (0: none).
    fn start_with_delay(delay: f64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        common::self_signed_cert(&cert, &key);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let maildir = dir.path().join("maildir");
        let child = Self::spawn_with(port, &cert, &key, &maildir, delay);
        Self {
            child,
            port,
            maildir,
            cert,
            dir,
        }
    }

    fn spawn(port: u16, cert: &Path, key: &Path, maildir: &Path) -> Child {
        Self::spawn_with(port, cert, key, maildir, 0.0)
    }

    fn spawn_with(port: u16, cert: &Path, key: &Path, maildir: &Path, delay: f64) -> Child {
        let mut child = Command::new(python())
            .env("SMTP_DATA_DELAY_SECS", delay.to_string())
            .arg(repo_root().join("tests/smtp/server.py"))
            .arg(port.to_string())
            .arg(cert)
            .arg(key)
            .arg(maildir)
            .args(["alerts", "s3cret"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "SMTP server did not start");
        child
    }

    /// The relay goes away (connections to its port are refused).
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The relay comes back on the same port, with the same mailbox.
    fn restart(&mut self) {
        self.stop();
        let key = self.dir.path().join("key.pem");
        self.child = Self::spawn(self.port, &self.cert, &key, &self.maildir);
    }

    fn settings(&self, password: &str, min_interval: Duration) -> EmailSettings {
        EmailSettings {
            smarthost: format!("127.0.0.1:{}", self.port),
            tls: SmtpTls::Starttls,
            username: Some("alerts".into()),
            password: Some(password.into()),
            ca_file: Some(self.cert.clone()),
            from: "FaceKey <facekey@example.test>".into(),
            to: vec!["security@example.test".into(), "oncall@example.test".into()],
            min_interval,
            instance: "test-instance".into(),
        }
    }

    fn messages(&self) -> Vec<String> {
        let new = self.maildir.join("new");
        let mut out: Vec<(SystemTime, String)> = std::fs::read_dir(&new)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| {
                        let t = e.metadata().unwrap().modified().unwrap();
                        (t, decode_qp(&std::fs::read_to_string(e.path()).unwrap()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|(t, _)| *t);
        out.into_iter().map(|(_, m)| m).collect()
    }

    async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.messages();
            if m.len() >= n || Instant::now() > deadline {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `facekey_alert_emails_total{result}` as the metrics render it (0 when absent).
fn emails(metrics: &Metrics, result: &str) -> u64 {
    let prefix = format!("facekey_alert_emails_total{{result=\"{result}\"}} ");
    metrics
        .render()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str())?.parse().ok())
        .unwrap_or(0)
}

/// Undo quoted-printable encoding (soft line breaks and `=XX` escapes) so assertions read text.
fn decode_qp(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Drop the last sender and wait (at most `secs`) for the email task to flush and end.
async fn finish(sender: alerts::AlertSender, task: tokio::task::JoinHandle<()>, secs: u64) {
    drop(sender);
    tokio::time::timeout(Duration::from_secs(secs), task)
        .await
        .unwrap()
        .unwrap();
}

fn attempt(i: usize) -> SpoofAttempt {
    SpoofAttempt {
        at: SystemTime::now(),
        route: "/v1/verify",
        subject: Some(format!("subject-{i}")),
        liveness: 0.12,
        threshold: 0.5,
        request_id: Some(format!("req-{i}")),
        key_id: Some("checkout-app".to_owned()),
    }
}

#[tokio::test]
async fn alerts_are_delivered_over_starttls_with_auth_and_throttled() {
    let smtp = SmtpServer::start();
    let metrics = Metrics::new().unwrap();
    let interval = Duration::from_secs(2);
    let mailer = Mailer::new(&smtp.settings("s3cret", interval)).unwrap();
    let (sender, task) = alerts::spawn(mailer, interval, metrics.clone());

    // The first attempt is mailed at once.
    attempt(1).emit(&metrics, Some(&sender));
    let first = smtp.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(first.len(), 1, "first alert not delivered");
    let m = &first[0];
    assert!(
        m.contains("Subject: [FaceKey] spoof attempt detected on test-instance"),
        "{m}"
    );
    assert!(m.contains("security@example.test") && m.contains("oncall@example.test"));
    assert!(m.contains("request_id=req-1"), "{m}");
    // aiosmtpd records how the message arrived: TLS was used and the peer authenticated.
    assert!(m.contains("X-Peer:"), "{m}");

    // Three more within the interval arrive as one summary, not three mails.
    for i in 2..=4 {
        attempt(i).emit(&metrics, Some(&sender));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        smtp.messages().len(),
        1,
        "throttle let a second mail through early"
    );
    let all = smtp.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(all.len(), 2);
    let summary = &all[1];
    assert!(
        summary.contains("[FaceKey] 3 spoof attempts detected"),
        "{summary}"
    );
    for i in 2..=4 {
        assert!(
            summary.contains(&format!("request_id=req-{i}")),
            "{summary}"
        );
    }

    finish(sender, task, 10).await;
    let text = metrics.render().unwrap();
    assert!(
        text.contains(r#"facekey_alert_emails_total{result="sent"} 2"#),
        "{text}"
    );
    assert!(text.contains("facekey_spoof_detected_total 4"), "{text}");
}

/// A slow relay (each message accepted after 3 s) does not make events be dropped: they keep
/// being taken off the queue while a mail is sent, and the next mail counts them all.
#[tokio::test]
async fn a_slow_relay_loses_no_event() {
    let smtp = SmtpServer::start_with_delay(3.0);
    let metrics = Metrics::new().unwrap();
    let interval = Duration::from_millis(200);
    let mailer = Mailer::new(&smtp.settings("s3cret", interval)).unwrap();
    let (sender, task) = alerts::spawn(mailer, interval, metrics.clone());
    attempt(0).emit(&metrics, Some(&sender));
    // While the first mail waits on the relay: more events than the queue holds (1024).
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Arriving as requests do, a few at a time (all within the first mail's 3 s).
    for i in 1..=2000 {
        attempt(i).emit(&metrics, Some(&sender));
        if i % 10 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let mails = smtp.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(mails.len(), 2, "the second mail never came");
    assert!(
        mails[1].contains("[FaceKey] 2000 spoof attempts detected"),
        "{}",
        mails[1]
    );
    finish(sender, task, 20).await;
    let text = metrics.render().unwrap();
    assert!(
        text.contains(r#"facekey_alert_emails_total{result="dropped"} 0"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_lockout_is_mailed_and_not_lost_behind_throttled_spoof_alerts() {
    use facekey_runtime::lockout::{Lockouts, MemoryLedger, Policy};
    let smtp = SmtpServer::start();
    let metrics = Metrics::new().unwrap();
    let interval = Duration::from_secs(2);
    let mailer = Mailer::new(&smtp.settings("s3cret", interval)).unwrap();
    let (sender, task) = alerts::spawn(mailer, interval, metrics.clone());
    let lockouts = Lockouts::new(
        Policy {
            attempts: 3,
            window: Duration::from_secs(900),
            lock: Duration::from_secs(600),
            max_lock: Duration::ZERO,
        },
        std::sync::Arc::new(MemoryLedger::new()),
        metrics.clone(),
        Some(sender.clone()),
    );
    let subject = "5d2c1b0a-9e8f-4a7b-8c6d-5e4f3a2b1c0d";

    // The lock's mail goes out at once.
    for _ in 0..2 {
        assert_eq!(lockouts.record_failure(subject).await.unwrap(), None);
    }
    assert!(lockouts.record_failure(subject).await.unwrap().is_some());
    // Long subject lines arrive folded: unfold them before matching.
    let unfold = |mails: Vec<String>| -> Vec<String> {
        mails
            .into_iter()
            .map(|m| m.replace("\r\n ", " ").replace("\n ", " "))
            .collect()
    };
    let first = unfold(smtp.wait_for(1, Duration::from_secs(10)).await);
    assert_eq!(first.len(), 1, "lockout alert not delivered");
    assert!(
        first[0].contains(&format!(
            "Subject: [FaceKey] subject {subject} locked after failed verifications on \
             test-instance"
        )),
        "{}",
        first[0]
    );
    assert!(
        first[0].contains(&format!(
            "subject={subject} locked: 3 failed verifications within 900 s; locked for 600 s"
        )),
        "{}",
        first[0]
    );

    // Within the interval, a spoof flood and a second lockout share the next mail: the lockout
    // is listed, not crowded out.
    for i in 0..30 {
        attempt(i).emit(&metrics, Some(&sender));
    }
    let other = "0e1d2c3b-4a59-4687-9a6b-7c8d9e0f1a2b";
    for _ in 0..3 {
        lockouts.record_failure(other).await.unwrap();
    }
    let all = unfold(smtp.wait_for(2, Duration::from_secs(10)).await);
    assert_eq!(all.len(), 2);
    let summary = &all[1];
    assert!(
        summary.contains(&format!(
            "[FaceKey] subject {other} locked and 30 spoof attempts"
        )),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("subject={other} locked: 3 failed")),
        "{summary}"
    );
    // The 10 spoofs past the 20 listed are named by target, none merely counted.
    assert!(
        summary.contains("- 1 x /v1/verify subject=subject-29 key=checkout-app"),
        "{summary}"
    );
    assert!(!summary.contains("more"), "{summary}");

    drop(lockouts);
    finish(sender, task, 10).await;
    let text = metrics.render().unwrap();
    assert!(text.contains("facekey_subject_lockouts_total 2"), "{text}");
    assert!(
        text.contains(r#"facekey_alert_emails_total{result="sent"} 2"#),
        "{text}"
    );
}

/// A relay that is down when an alert is due does not lose it: the events are kept and mailed
/// once it is back (with what arrived meanwhile), the failed attempts counted.
#[tokio::test]
async fn an_email_that_fails_is_sent_again_once_the_relay_is_back() {
    let mut smtp = SmtpServer::start();
    smtp.stop();
    let metrics = Metrics::new().unwrap();
    let interval = Duration::from_millis(200);
    let mailer = Mailer::new(&smtp.settings("s3cret", interval)).unwrap();
    let (sender, task) = alerts::spawn(mailer, interval, metrics.clone());
    attempt(1).emit(&metrics, Some(&sender));
    // Wait for a failed attempt, then another event arrives while the relay is still down.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !metrics
        .render()
        .unwrap()
        .contains(r#"facekey_alert_emails_total{result="failed"} 1"#)
    {
        assert!(Instant::now() < deadline, "no failed attempt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    attempt(2).emit(&metrics, Some(&sender));
    smtp.restart();
    let messages = smtp.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(messages.len(), 1, "one mail once the relay is back");
    assert!(
        messages[0].contains("2 spoof attempts detected"),
        "both events in it: {}",
        messages[0]
    );
    finish(sender, task, 20).await;
    let text = metrics.render().unwrap();
    assert!(
        text.contains(r#"facekey_alert_emails_total{result="sent"} 1"#),
        "{text}"
    );
}

/// The relay is checked at start-up (connect, STARTTLS, login) before any event: a wrong
/// password shows as `facekey_alert_smtp_reachable 0` at once, not at the first attack; the
/// right one as 1.
#[tokio::test]
async fn the_relay_is_checked_before_any_alert_needs_it() {
    let smtp = SmtpServer::start();
    for (password, expected) in [("wrong-password", 0), ("s3cret", 1)] {
        let metrics = Metrics::new().unwrap();
        let interval = Duration::from_millis(100);
        let mailer = Mailer::new(&smtp.settings(password, interval)).unwrap();
        let (sender, task) = alerts::spawn(mailer, interval, metrics.clone());
        // The series appears with the check's result (not before: nothing is known until then).
        let series = format!(
            "facekey_alert_smtp_reachable{{smarthost=\"127.0.0.1:{}\"}}",
            smtp.port
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        let value = loop {
            let text = metrics.render().unwrap();
            if let Some(v) = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{series} ")))
            {
                break v.trim().to_owned();
            }
            assert!(Instant::now() < deadline, "{series} never read");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(value, expected.to_string(), "with password {password}");
        assert_eq!(emails(&metrics, "failed"), 0, "no email was even attempted");
        finish(sender, task, 10).await;
    }
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn a_rejected_login_is_counted_as_a_failed_email() {
    let smtp = SmtpServer::start();
    let metrics = Metrics::new().unwrap();
    let interval = Duration::from_millis(100);
    let mailer = Mailer::new(&smtp.settings("wrong-password", interval)).unwrap();
    let (sender, task) = alerts::spawn(mailer, interval, metrics.clone());
    attempt(1).emit(&metrics, Some(&sender));
    drop(sender);
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "a rejected login must fail fast"
    );
    assert!(smtp.messages().is_empty());
    // One attempt, or two when the event arrived before the senders were dropped (the failed
    // email is kept and tried again at shutdown); never sent.
    let failed = emails(&metrics, "failed");
    assert!((1..=2).contains(&failed), "{failed}");
    assert_eq!(emails(&metrics, "sent"), 0);
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused() {
    let smtp = SmtpServer::start();
    let metrics = Metrics::new().unwrap();
    let mut settings = smtp.settings("s3cret", Duration::from_millis(100));
    settings.ca_file = None;
    let mailer = Mailer::new(&settings).unwrap();
    let (sender, task) = alerts::spawn(mailer, Duration::from_millis(100), metrics.clone());
    attempt(1).emit(&metrics, Some(&sender));
    finish(sender, task, 20).await;
    assert!(
        smtp.messages().is_empty(),
        "mail sent over an unverified TLS connection"
    );
    assert!(emails(&metrics, "failed") >= 1);
    assert_eq!(emails(&metrics, "sent"), 0);
}

#[tokio::test]
async fn a_spoof_seen_by_the_server_reaches_the_inbox() {
    let smtp = SmtpServer::start();
    let mut config = facekey_runtime::config::Config::for_tests();
    config.smtp_smarthost = Some(format!("127.0.0.1:{}", smtp.port));
    config.smtp_username = Some("alerts".into());
    config.smtp_password = Some("s3cret".into());
    config.smtp_ca_file = Some(smtp.cert.clone());
    config.alert_from = Some("facekey@example.test".into());
    config.alert_to = vec!["security@example.test".into()];
    config.instance = Some("pod-under-test".into());
    // Every face scores below a threshold of 1.0, so any face is treated as an attack.
    config.liveness_threshold = 1.0;
    let data_dir = config.data_dir.clone();
    let (keys_text, keys) = common::test_keys();
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::write(data_dir.join("test-api-keys"), keys_text).unwrap();
    config.api_keys_file = Some(data_dir.join("test-api-keys"));
    let server = facekey_runtime::server::Server::bind(config).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    let client = common::keyed_client(&keys["admin"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "runtime not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let image = std::fs::read(repo_root().join("runtime/testdata/faces/astronaut.png")).unwrap();
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(image).file_name("a.png"),
    );
    let r = client
        .post(format!("http://{addr}/v1/liveness"))
        .header("x-request-id", "spoof-e2e-1")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["faces"][0]["liveness"]["decision"], "reject", "{v}");

    let mails = smtp.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(mails.len(), 1, "no alert email arrived");
    assert!(
        mails[0].contains("spoof attempt detected on pod-under-test"),
        "{}",
        mails[0]
    );
    assert!(mails[0].contains("/v1/liveness") && mails[0].contains("request_id=spoof-e2e-1"));
    // The key that sent it is named (a request id is the client's to choose).
    assert!(mails[0].contains("key=admin"), "{}", mails[0]);

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(data_dir);
}
