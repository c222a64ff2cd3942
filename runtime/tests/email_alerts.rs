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
        Self::start_with(delay, "")
    }

    /// A relay that waits `delay` seconds before accepting each message and refuses the
    /// comma-separated recipients `reject` with 550.
    fn start_with(delay: f64, reject: &str) -> Self {
        Self::start_refusing(delay, reject, "")
    }

    /// [`Self::start_with`], also refusing the `address:n`-th RCPT TO of that address with 451.
    fn start_refusing(delay: f64, reject: &str, tempfail: &str) -> Self {
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
        let child = Self::spawn_with(port, &cert, &key, &maildir, delay, reject, tempfail);
        Self {
            child,
            port,
            maildir,
            cert,
            dir,
        }
    }

    fn spawn(port: u16, cert: &Path, key: &Path, maildir: &Path) -> Child {
        Self::spawn_with(port, cert, key, maildir, 0.0, "", "")
    }

    fn spawn_with(
        port: u16,
        cert: &Path,
        key: &Path,
        maildir: &Path,
        delay: f64,
        reject: &str,
        tempfail: &str,
    ) -> Child {
        let mut child = Command::new(python())
            .env("SMTP_DATA_DELAY_SECS", delay.to_string())
            .env("SMTP_REJECT_RCPT", reject)
            .env("SMTP_TEMPFAIL_RCPT", tempfail)
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
async fn finish(sender: alerts::AlertSender, task: alerts::AlertTask, secs: u64) {
    drop(sender);
    tokio::time::timeout(Duration::from_secs(secs), task.join())
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

/// One recipient's mailbox gone (the relay refuses it with 550, which ends the whole
/// transaction): the others still get every alert, one message each, and the refusal counts as
/// a failed email. It used to fail the whole mail, retried forever, so nobody got an alert.
#[tokio::test]
async fn a_refused_recipient_does_not_keep_the_alert_from_the_others() {
    let smtp = SmtpServer::start_with(0.0, "oncall@example.test");
    let metrics = Metrics::new().unwrap();
    let interval = Duration::from_secs(60);
    let mailer = Mailer::new(&smtp.settings("s3cret", interval)).unwrap();
    let (sender, task) = alerts::spawn(mailer, interval, metrics.clone());
    attempt(1).emit(&metrics, Some(&sender));
    let mails = smtp.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(
        mails[0].contains("To: security@example.test"),
        "{}",
        mails[0]
    );
    assert!(!mails[0].contains("oncall@example.test"), "{}", mails[0]);
    assert!(mails[0].contains("subject-1"), "{}", mails[0]);
    assert_eq!(emails(&metrics, "sent"), 1);
    assert_eq!(emails(&metrics, "failed"), 1, "the refused recipient");
    finish(sender, task, 30).await;
}

/// A recipient refused for a moment while the mail goes to each recipient apart (another's
/// mailbox being gone) is not dropped: the mail is sent again later, and it gets it (the one
/// that already had it gets it twice).
#[tokio::test]
async fn a_recipient_refused_for_a_moment_gets_the_alert_later() {
    // RCPTs of b: 1 in the mail to all (accepted), 2 in its own mail (451).
    let smtp = SmtpServer::start_refusing(0.0, "oncall@example.test", "b@example.test:2");
    let metrics = Metrics::new().unwrap();
    let interval = Duration::from_millis(500);
    let mut settings = smtp.settings("s3cret", interval);
    settings.to = vec![
        "security@example.test".into(),
        "b@example.test".into(),
        "oncall@example.test".into(),
    ];
    let mailer = Mailer::new(&settings).unwrap();
    let (sender, task) = alerts::spawn(mailer, interval, metrics.clone());
    attempt(1).emit(&metrics, Some(&sender));
    let deadline = Instant::now() + Duration::from_secs(20);
    let to_b = loop {
        let to_b = smtp
            .messages()
            .into_iter()
            .filter(|m| m.contains("To: b@example.test"))
            .count();
        if to_b > 0 || Instant::now() > deadline {
            break to_b;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(to_b, 1, "{:?}", smtp.messages());
    assert!(
        emails(&metrics, "failed") >= 2,
        "the 451, then oncall's 550"
    );
    finish(sender, task, 30).await;
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
    tokio::time::timeout(Duration::from_secs(20), task.join())
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

/// A runtime alerting to `smtp` that takes every face for an attack (liveness threshold 1.0),
/// changed by `tweak`, ready; with a client holding the admin key. Stop it with `stop`.
struct AlertingServer {
    addr: std::net::SocketAddr,
    client: reqwest::Client,
    admin_key: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), facekey_runtime::server::ServerError>>,
    data_dir: PathBuf,
}

impl AlertingServer {
    async fn start(
        smtp: &SmtpServer,
        tweak: impl FnOnce(&mut facekey_runtime::config::Config),
    ) -> Self {
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
        tweak(&mut config);
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
        Self {
            addr,
            client,
            admin_key: keys["admin"].clone(),
            stop,
            task,
            data_dir,
        }
    }

    /// `POST /v1/liveness` with the sample face (a spoof here), as request `request_id`.
    async fn spoof(&self, request_id: &str) {
        let image =
            std::fs::read(repo_root().join("runtime/testdata/faces/astronaut.png")).unwrap();
        let form = reqwest::multipart::Form::new().part(
            "image",
            reqwest::multipart::Part::bytes(image).file_name("a.png"),
        );
        let r = self
            .client
            .post(format!("http://{}/v1/liveness", self.addr))
            .header("x-request-id", request_id)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["faces"][0]["liveness"]["decision"], "reject", "{v}");
    }
}

#[tokio::test]
async fn a_spoof_seen_by_the_server_reaches_the_inbox() {
    let smtp = SmtpServer::start();
    let server = AlertingServer::start(&smtp, |_| {}).await;
    server.spoof("spoof-e2e-1").await;

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

    let _ = server.stop.send(());
    tokio::time::timeout(Duration::from_secs(20), server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(server.data_dir);
}

/// At exit, an alert waiting out the interval is mailed at once, although a request that
/// outlived the grace period still holds the service (and with it a way to queue alerts): the
/// flush is asked for, not waited for from the last sender.
#[tokio::test]
async fn an_alert_waiting_at_exit_is_mailed_though_a_request_outlives_the_grace_period() {
    use tokio::io::AsyncWriteExt;
    let smtp = SmtpServer::start();
    let server = AlertingServer::start(&smtp, |c| {
        c.alert_min_interval_secs = 3600;
        c.shutdown_timeout_secs = 1;
        // The slow upload below is not cut off for its pace.
        c.min_body_bytes_per_sec = 0;
    })
    .await;
    server.spoof("mailed-at-once").await;
    assert_eq!(smtp.wait_for(1, Duration::from_secs(15)).await.len(), 1);
    server.spoof("held-by-the-interval").await;

    // A client uploading slowly: its request is still in flight when the grace period ends.
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /v1/liveness HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n",
        server.admin_key
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let trickle = tokio::spawn(async move {
        while slow.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let _ = server.stop.send(());
    let mails = smtp.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(mails.len(), 2, "the alert held at exit was never mailed");
    assert!(
        mails[1].contains("request_id=held-by-the-interval"),
        "{}",
        mails[1]
    );
    assert!(
        !trickle.is_finished(),
        "the slow request ended early: the test did not hold a request past the grace period"
    );
    tokio::time::timeout(Duration::from_secs(20), server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    trickle.abort();
    let _ = std::fs::remove_dir_all(server.data_dir);
}

/// A flush sends what waits out the interval at once while senders are still alive, and events
/// queued after it are refused and counted as dropped, not silently lost.
#[tokio::test]
async fn a_flush_mails_what_waits_and_counts_later_events_as_dropped() {
    let smtp = SmtpServer::start();
    let metrics = Metrics::new().unwrap();
    let interval = Duration::from_secs(3600);
    let mailer = Mailer::new(&smtp.settings("s3cret", interval)).unwrap();
    let (sender, task) = alerts::spawn(mailer, interval, metrics.clone());
    attempt(1).emit(&metrics, Some(&sender));
    assert_eq!(smtp.wait_for(1, Duration::from_secs(10)).await.len(), 1);
    attempt(2).emit(&metrics, Some(&sender));
    attempt(3).emit(&metrics, Some(&sender));
    tokio::time::timeout(Duration::from_secs(20), task.flush(Duration::from_secs(15)))
        .await
        .unwrap()
        .unwrap();
    let mails = smtp.messages();
    assert_eq!(mails.len(), 2);
    assert!(
        mails[1].contains("2 spoof attempts detected"),
        "{}",
        mails[1]
    );
    attempt(4).emit(&metrics, Some(&sender));
    assert_eq!(emails(&metrics, "sent"), 2);
    assert_eq!(emails(&metrics, "dropped"), 1);
}

/// A flush that runs out of time says how many events were not mailed: the email in flight and
/// what waited behind it.
#[tokio::test]
async fn a_flush_out_of_time_names_the_events_not_mailed() {
    let smtp = SmtpServer::start_with_delay(5.0);
    let metrics = Metrics::new().unwrap();
    let interval = Duration::from_secs(3600);
    let mailer = Mailer::new(&smtp.settings("s3cret", interval)).unwrap();
    let (sender, task) = alerts::spawn(mailer, interval, metrics.clone());
    attempt(1).emit(&metrics, Some(&sender));
    tokio::time::sleep(Duration::from_millis(300)).await;
    attempt(2).emit(&metrics, Some(&sender));
    attempt(3).emit(&metrics, Some(&sender));
    let unmailed = task.flush(Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(
        unmailed,
        alerts::Unmailed {
            spoofs: 3,
            lockouts: 0
        }
    );
}

/// A plain SMTP relay on loopback that never answers the end of the first message's data; it
/// records every line each connection sends.
struct StallingRelay {
    addr: std::net::SocketAddr,
    lines: std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl StallingRelay {
    async fn start() -> Self {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lines: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stalled_once = Arc::new(AtomicBool::new(false));
        let (all, ok) = (lines.clone(), accepted.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let index = {
                    let mut all = all.lock().unwrap();
                    all.push(Vec::new());
                    all.len() - 1
                };
                let (all, ok, stalled_once) = (all.clone(), ok.clone(), stalled_once.clone());
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut read = tokio::io::BufReader::new(read);
                    let _ = write.write_all(b"220 relay.test ESMTP\r\n").await;
                    let (mut in_data, mut stalled) = (false, false);
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let text = line.trim_end().to_owned();
                        if in_data {
                            if text == "." {
                                in_data = false;
                                if stalled_once.swap(true, Ordering::SeqCst) {
                                    ok.fetch_add(1, Ordering::SeqCst);
                                    let _ = write.write_all(b"250 queued\r\n").await;
                                } else {
                                    stalled = true;
                                }
                            }
                            continue;
                        }
                        all.lock().unwrap()[index].push(text.clone());
                        if stalled {
                            continue;
                        }
                        let verb = text.get(..4).unwrap_or("").to_ascii_uppercase();
                        let reply: &[u8] = match verb.as_str() {
                            "EHLO" => b"250 relay.test\r\n",
                            "DATA" => {
                                in_data = true;
                                b"354 go ahead\r\n"
                            }
                            "QUIT" => b"221 bye\r\n",
                            _ => b"250 ok\r\n",
                        };
                        let _ = write.write_all(reply).await;
                        if verb == "QUIT" {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            lines,
            accepted,
        }
    }
}

/// An email cut off by its timeout leaves its connection: the next email opens its own and is
/// accepted, and nothing more is written on the stalled one (a pooled connection reused
/// mid-exchange would read the late reply as the answer to the next command).
#[tokio::test]
async fn an_email_cut_off_by_its_timeout_does_not_reuse_its_connection() {
    use std::sync::atomic::Ordering;
    let relay = StallingRelay::start().await;
    let settings = EmailSettings {
        smarthost: relay.addr.to_string(),
        tls: SmtpTls::None,
        username: None,
        password: None,
        ca_file: None,
        from: "facekey@example.test".into(),
        to: vec!["security@example.test".into()],
        min_interval: Duration::from_secs(1),
        instance: "test-instance".into(),
    };
    let mailer = Mailer::new(&settings)
        .unwrap()
        .with_send_timeout(Duration::from_secs(1));
    let mut batch = alerts::Batch::default();
    batch.push_spoof(attempt(1));
    let first = mailer.send(&batch).await.unwrap_err();
    assert!(
        first.to_string().contains("no answer within 1 s"),
        "{first}"
    );
    // The next email comes later, as emails do (at least the retry delay).
    tokio::time::sleep(Duration::from_millis(300)).await;
    mailer.send(&batch).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(relay.accepted.load(Ordering::SeqCst), 1);
    let lines = relay.lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 2, "one connection per email: {lines:?}");
    assert_eq!(
        lines[0].last().map(String::as_str),
        Some("DATA"),
        "a command went on the stalled connection: {lines:?}"
    );
}
