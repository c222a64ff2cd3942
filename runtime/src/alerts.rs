//! Security alerts. A [`SpoofAttempt`] (a presentation attack) and a [`SubjectLockout`] (a subject
//! locked after repeated failed verifications) are each one internal event that emits, together,
//! the log line, its counter and (when SMTP is configured) an email, so logs, metrics and mail
//! never disagree. Emails go out from a background task, throttled to at most one per interval
//! (later events are summarised in the next one), so a flood of attacks neither floods an inbox
//! nor slows verification. Each kind has its own queue, so a spoof flood cannot crowd lockouts
//! out, and every event that is not listed in a mail is still counted in it or in
//! `facekey_alert_emails_total{result="dropped"}`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// Events of one kind queued for email before new ones are dropped (and counted as dropped).
const QUEUE_CAPACITY: usize = 1024;
/// Longest time one email may take end to end (connection included), so a stalled server
/// cannot wedge alerting; [`Mailer::with_send_timeout`] changes it.
pub const SEND_TIMEOUT: Duration =
    Duration::from_secs(facekey_settings::defaults::ALERT_SEND_TIMEOUT_SECS);
/// Events of one kind listed one by one in an email; the rest are counted.
const MAX_LISTED: usize = 20;
/// Distinct targets (route, subject, key) of the spoof attempts past [`MAX_LISTED`] named in an
/// email with their counts, the most attempted first, so a flood of cheap attempts cannot hide
/// the one aimed at a subject.
const MAX_TALLIED: usize = 50;
/// Distinct targets counted between two emails (the rest only in the total): enough that
/// decoys must outnumber the named ones in attempts, not only in targets, to push a subject
/// out of the email (a few hundred KiB at most).
const MAX_TRACKED: usize = 4096;
/// Locked subjects past [`MAX_LISTED`] still named (by id) in an email.
const MAX_LOCKOUTS_NAMED: usize = 500;

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required; fails if the server lacks it).
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No encryption: only for a trusted relay on the same host or network.
    None,
}

/// Email alerting settings, from the runtime configuration.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// `host:port` of the SMTP server (Alertmanager calls this the smarthost).
    pub smarthost: String,
    /// Connection security.
    pub tls: SmtpTls,
    /// SMTP AUTH user name, if the server needs one.
    pub username: Option<String>,
    /// SMTP AUTH password.
    pub password: Option<String>,
    /// Extra PEM root certificate to trust (a private CA or a test server's self-signed cert).
    pub ca_file: Option<PathBuf>,
    /// Sender address.
    pub from: String,
    /// Recipient addresses.
    pub to: Vec<String>,
    /// Least time between two alert emails.
    pub min_interval: Duration,
    /// Name of this service instance in the subject line.
    pub instance: String,
}

/// Why alerting could not be set up or a mail not be sent.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// A setting is missing or malformed.
    #[error("email alerts: {0}")]
    Config(String),
    /// The CA file could not be read or parsed.
    #[error("email alerts: cannot use CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Building or sending the message failed.
    #[error("email alert to {smarthost} failed: {source}")]
    Send {
        /// The SMTP server.
        smarthost: String,
        /// The SMTP or message error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// One detected presentation attack.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoofAttempt {
    /// When it was detected.
    pub at: SystemTime,
    /// The endpoint that saw it (`/v1/verify`, `/v1/liveness`).
    pub route: &'static str,
    /// The claimed subject, for verification.
    pub subject: Option<String>,
    /// The fused liveness score (higher is more live).
    pub liveness: f64,
    /// The liveness threshold it fell below.
    pub threshold: f64,
    /// The request id, to find the request in logs (a client may have chosen it: the audit
    /// trail has the request by id with its key and client address).
    pub request_id: Option<String>,
    /// The id of the API key that sent it (`None` on an open runtime).
    pub key_id: Option<String>,
}

impl SpoofAttempt {
    /// Emit the event: a warning log line, the spoof counter, and an email when alerting is on.
    pub fn emit(self, metrics: &Metrics, alerts: Option<&AlertSender>) {
        // On the security target with every other security event, so a log filter or a SIEM
        // routing by target (`FACEKEY_LOG=error,facekey::security=info`) keeps it.
        tracing::warn!(
            target: "facekey::security",
            route = self.route,
            subject = self.subject.as_deref().unwrap_or("-"),
            liveness = self.liveness,
            threshold = self.threshold,
            request_id = self.request_id.as_deref().unwrap_or("-"),
            key_id = self.key_id.as_deref().unwrap_or("-"),
            "spoof attempt detected"
        );
        metrics.spoofs_detected.inc();
        if let Some(alerts) = alerts {
            alerts.send_spoof(self, metrics);
        }
    }
}

/// One subject locked after repeated failed verifications (see [`crate::lockout`]). It names the
/// subject id only: never an image, a template or a key.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectLockout {
    /// When the lock was placed.
    pub at: SystemTime,
    /// The locked subject's id.
    pub subject: String,
    /// Failed verifications counted within the window (the configured threshold).
    pub failures: u32,
    /// The window they were counted in.
    pub window: Duration,
    /// How long the subject stays locked.
    pub locked_for: Duration,
}

impl SubjectLockout {
    /// Emit the event: a warning on the `facekey::security` log target, the lockout counter, and
    /// an email when alerting is on.
    pub fn emit(self, metrics: &Metrics, alerts: Option<&AlertSender>) {
        tracing::warn!(
            target: "facekey::security",
            subject = %self.subject,
            failures = self.failures,
            window_secs = self.window.as_secs(),
            lock_secs = self.locked_for.as_secs(),
            "subject locked after failed verifications"
        );
        metrics.subject_lockouts.inc();
        if let Some(alerts) = alerts {
            alerts.send_lockout(self, metrics);
        }
    }
}

/// Where a spoof attempt was aimed: route, claimed subject, API key.
type Target = (&'static str, Option<String>, Option<String>);

/// The events one email summarises: at most [`MAX_LISTED`] of each kind kept in full; spoof
/// attempts past them counted per target (up to [`MAX_TRACKED`] targets, of which the email
/// names the [`MAX_TALLIED`] most attempted), locked subjects past them named by id (up to
/// [`MAX_LOCKOUTS_NAMED`]), the rest counted, so a flood between two mails costs bounded
/// memory, is still reported, and cannot hide an attempt on a subject behind cheap ones or
/// decoys.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    spoofs: Vec<SpoofAttempt>,
    tallied: std::collections::BTreeMap<Target, usize>,
    more_spoofs: usize,
    lockouts: Vec<SubjectLockout>,
    locked_past: Vec<String>,
    more_lockouts: usize,
}

impl Batch {
    /// Add a spoof attempt.
    pub fn push_spoof(&mut self, attempt: SpoofAttempt) {
        if self.spoofs.len() < MAX_LISTED {
            self.spoofs.push(attempt);
            return;
        }
        self.tally((attempt.route, attempt.subject, attempt.key_id), 1);
    }

    /// Count `n` attempts at `target`: per target while fewer than [`MAX_TRACKED`] targets are
    /// counted, else only in the total.
    fn tally(&mut self, target: Target, n: usize) {
        if let Some(m) = self.tallied.get_mut(&target) {
            *m += n;
        } else if self.tallied.len() < MAX_TRACKED {
            self.tallied.insert(target, n);
        } else {
            self.more_spoofs += n;
        }
    }

    /// Add the events of `later` after this batch's, within the same bounds.
    pub fn absorb(&mut self, later: Batch) {
        for a in later.spoofs {
            self.push_spoof(a);
        }
        for (target, n) in later.tallied {
            self.tally(target, n);
        }
        self.more_spoofs += later.more_spoofs;
        for l in later.lockouts {
            self.push_lockout(l);
        }
        for subject in later.locked_past {
            self.name_lockout(subject);
        }
        self.more_lockouts += later.more_lockouts;
    }

    /// Add a lockout.
    pub fn push_lockout(&mut self, lockout: SubjectLockout) {
        if self.lockouts.len() < MAX_LISTED {
            self.lockouts.push(lockout);
        } else {
            self.name_lockout(lockout.subject);
        }
    }

    /// A lockout past the listed ones: named by its subject while there is room, else counted.
    fn name_lockout(&mut self, subject: String) {
        if self.locked_past.len() < MAX_LOCKOUTS_NAMED {
            self.locked_past.push(subject);
        } else {
            self.more_lockouts += 1;
        }
    }

    /// Spoof attempts in the batch, listed, tallied or only counted.
    pub fn spoof_count(&self) -> usize {
        self.spoofs.len() + self.tallied.values().sum::<usize>() + self.more_spoofs
    }

    /// Lockouts in the batch, listed, named or only counted.
    pub fn lockout_count(&self) -> usize {
        self.lockouts.len() + self.locked_past.len() + self.more_lockouts
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.spoof_count() == 0 && self.lockout_count() == 0
    }
}

/// Longest wait before sending a failed email again.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

/// The wait before attempt `failures + 1` of an email that failed `failures` times: the minimum
/// interval doubled per failure, at most [`MAX_RETRY_DELAY`] (or the interval, if longer).
pub fn retry_delay(min_interval: Duration, failures: u32) -> Duration {
    let base = min_interval.max(Duration::from_millis(100));
    base.saturating_mul(1u32 << failures.min(16))
        .min(MAX_RETRY_DELAY.max(min_interval))
}

/// `by` after `now`, or as far as the clock goes: an interval too long to add (a
/// [`spawn`] caller's, not the configuration's, which is bounded) waits decades, never panics.
fn later(now: tokio::time::Instant, by: Duration) -> tokio::time::Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    now.checked_add(by)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

/// Subject line and plain-text body summarising a batch of events.
pub fn compose(instance: &str, batch: &Batch) -> (String, String) {
    let (spoofs, lockouts) = (batch.spoof_count(), batch.lockout_count());
    let locked = match (lockouts, batch.lockouts.first()) {
        (1, Some(l)) => format!("subject {} locked", l.subject),
        _ => format!("{lockouts} subjects locked"),
    };
    let spoofed = if spoofs == 1 {
        "spoof attempt detected".to_owned()
    } else {
        format!("{spoofs} spoof attempts detected")
    };
    let subject = match (lockouts, spoofs) {
        (0, _) => format!("[FaceKey] {spoofed} on {instance}"),
        (_, 0) => format!("[FaceKey] {locked} after failed verifications on {instance}"),
        _ => format!("[FaceKey] {locked} and {spoofed} on {instance}"),
    };
    let mut body = String::new();
    if lockouts > 0 {
        body.push_str(&format!(
            "FaceKey locked {lockouts} subject(s) on {instance} after repeated failed \
             verifications: their verifications are refused (429 subject_locked) until the lock \
             expires.\n\n"
        ));
        for l in &batch.lockouts {
            body.push_str(&format!(
                "- {} subject={} locked: {} failed verifications within {} s; locked for {} s, \
                 until {}\n",
                humantime::format_rfc3339_seconds(l.at),
                l.subject,
                l.failures,
                l.window.as_secs(),
                l.locked_for.as_secs(),
                humantime::format_rfc3339_seconds(l.at + l.locked_for),
            ));
        }
        if !batch.locked_past.is_empty() {
            body.push_str(&format!(
                "- also locked: subject={}\n",
                batch.locked_past.join(", subject=")
            ));
        }
        if batch.more_lockouts > 0 {
            body.push_str(&format!("- … and {} more\n", batch.more_lockouts));
        }
        body.push('\n');
    }
    if spoofs > 0 {
        body.push_str(&format!(
            "FaceKey's liveness check rejected {spoofs} face(s) as presentation attacks on \
             {instance}.\n\n"
        ));
        for a in &batch.spoofs {
            body.push_str(&format!(
                "- {} {} subject={} key={} liveness={:.3} (threshold {:.3}) request_id={}\n",
                humantime::format_rfc3339_seconds(a.at),
                a.route,
                a.subject.as_deref().unwrap_or("-"),
                a.key_id.as_deref().unwrap_or("-"),
                a.liveness,
                a.threshold,
                a.request_id.as_deref().unwrap_or("-"),
            ));
        }
        if !batch.tallied.is_empty() {
            body.push_str("Further attempts by target, the most attempted first:\n");
            // Stable: targets with as many attempts keep their order.
            let mut targets: Vec<(&Target, &usize)> = batch.tallied.iter().collect();
            targets.sort_by(|a, b| b.1.cmp(a.1));
            for ((route, subject, key), n) in targets.iter().take(MAX_TALLIED) {
                body.push_str(&format!(
                    "- {n} x {route} subject={} key={}\n",
                    subject.as_deref().unwrap_or("-"),
                    key.as_deref().unwrap_or("-"),
                ));
            }
            let rest = &targets[targets.len().min(MAX_TALLIED)..];
            if !rest.is_empty() {
                body.push_str(&format!(
                    "- … and {} more at {} other target(s)\n",
                    rest.iter().map(|(_, n)| **n).sum::<usize>(),
                    rest.len()
                ));
            }
        }
        if batch.more_spoofs > 0 {
            body.push_str(&format!("- … and {} more\n", batch.more_spoofs));
        }
        body.push_str(
            "\nLook the request ids up in the runtime's logs or audit trail (a client may choose \
             its request id; the audit trail records each request's key and client address).",
        );
    }
    body.push_str(
        " This mail is throttled: further events within the alert interval are summarised in the \
         next one.\n",
    );
    (subject, body)
}

/// Handle for queueing events to the email task; cheap to clone.
#[derive(Clone, Debug)]
pub struct AlertSender {
    spoofs: mpsc::Sender<SpoofAttempt>,
    lockouts: mpsc::Sender<SubjectLockout>,
}

impl AlertSender {
    fn send_spoof(&self, attempt: SpoofAttempt, metrics: &Metrics) {
        if self.spoofs.try_send(attempt).is_err() {
            metrics.alert_emails.with_label_values(&["dropped"]).inc();
        }
    }

    fn send_lockout(&self, lockout: SubjectLockout, metrics: &Metrics) {
        if let Err(e) = self.lockouts.try_send(lockout) {
            metrics.alert_emails.with_label_values(&["dropped"]).inc();
            let subject = match &e {
                mpsc::error::TrySendError::Full(l) | mpsc::error::TrySendError::Closed(l) => {
                    l.subject.as_str()
                }
            };
            tracing::warn!(
                target: "facekey::security",
                subject,
                "lockout alert not queued for email (queue full or closed); the lockout itself \
                 is logged and counted"
            );
        }
    }
}

/// How often the relay is checked (connect, TLS, login) while no email is sent, so a broken
/// mail set-up is known before the first attack needs it.
pub const CHECK_EVERY: Duration = Duration::from_secs(600);

/// A ready-to-use mailer: transport and addresses, validated at start-up.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    smarthost: String,
    instance: String,
    send_timeout: Duration,
}

fn parse_mailbox(field: &str, value: &str) -> Result<Mailbox, AlertError> {
    value
        .trim()
        .parse()
        .map_err(|e| AlertError::Config(format!("{field} {value:?} is not an email address: {e}")))
}

/// What [`EmailSettings`] name, checked without reading a file or opening a connection.
struct Checked {
    host: String,
    port: u16,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl EmailSettings {
    /// Check the settings as [`Mailer::new`] does, short of reading the CA file: the smarthost
    /// is `host:port`, the addresses parse, user name and password come together.
    pub fn check(&self) -> Result<(), AlertError> {
        self.checked().map(|_| ())
    }

    fn checked(&self) -> Result<Checked, AlertError> {
        let (host, port) = self
            .smarthost
            .rsplit_once(':')
            .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_string(), p)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| {
                AlertError::Config(format!("smarthost {:?} must be host:port", self.smarthost))
            })?;
        let from = parse_mailbox("alert sender", &self.from)?;
        if self.to.is_empty() {
            return Err(AlertError::Config("no alert recipients".into()));
        }
        let to = self
            .to
            .iter()
            .map(|t| parse_mailbox("alert recipient", t))
            .collect::<Result<Vec<_>, _>>()?;
        if self.username.is_some() != self.password.is_some() {
            return Err(AlertError::Config(
                "SMTP username and password must be set together".into(),
            ));
        }
        Ok(Checked {
            host,
            port,
            from,
            to,
        })
    }
}

impl Mailer {
    /// Validate the settings and build the SMTP transport (no connection is made yet). Must be
    /// called inside the Tokio runtime: the connection pool lives there.
    pub fn new(settings: &EmailSettings) -> Result<Self, AlertError> {
        let Checked {
            host,
            port,
            from,
            to,
        } = settings.checked()?;

        let tls_params = || -> Result<TlsParameters, AlertError> {
            let mut builder = TlsParameters::builder(host.clone());
            if let Some(path) = &settings.ca_file {
                let pem = std::fs::read(path).map_err(|e| AlertError::CaFile {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let cert = Certificate::from_pem(&pem).map_err(|e| AlertError::CaFile {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                builder = builder.add_root_certificate(cert);
            }
            builder
                .build_rustls()
                .map_err(|e| AlertError::Config(format!("TLS set-up: {e}")))
        };
        let tls = match settings.tls {
            SmtpTls::Starttls => Tls::Required(tls_params()?),
            SmtpTls::Tls => Tls::Wrapper(tls_params()?),
            SmtpTls::None => Tls::None,
        };
        // Built without lettre's connection pool (its `pool` feature is off): one email per
        // interval gains nothing from a kept connection, and a send cut off by the timeout would
        // go back to the pool mid-exchange, its replies read out of step by the next one. Each
        // email (and each check) opens its own connection and closes it.
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(20)));
        if let (Some(user), Some(pass)) = (&settings.username, &settings.password) {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            to,
            smarthost: settings.smarthost.clone(),
            instance: settings.instance.clone(),
            send_timeout: SEND_TIMEOUT,
        })
    }

    /// The same mailer, each email (or check) given at most `timeout` end to end instead of
    /// [`SEND_TIMEOUT`].
    #[must_use]
    pub fn with_send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// The error of a failed exchange with the relay.
    fn failed(&self, source: Box<dyn std::error::Error + Send + Sync>) -> AlertError {
        AlertError::Send {
            smarthost: self.smarthost.clone(),
            source,
        }
    }

    /// `exchange` with the relay, given at most the send timeout, its error as [`AlertError`].
    /// A cut-off exchange drops its connection (there is no pool to return it to).
    async fn within_timeout<T>(
        &self,
        exchange: impl Future<Output = Result<T, lettre::transport::smtp::Error>>,
    ) -> Result<T, AlertError> {
        match tokio::time::timeout(self.send_timeout, exchange).await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => Err(self.failed(Box::new(e))),
            Err(_) => Err(self
                .failed(format!("no answer within {} s", self.send_timeout.as_secs_f64()).into())),
        }
    }

    /// Connect to the relay, start TLS and log in (as a send would), then leave: whether the
    /// alert emails could go out now.
    pub async fn check(&self) -> Result<(), AlertError> {
        if self
            .within_timeout(self.transport.test_connection())
            .await?
        {
            Ok(())
        } else {
            Err(self.failed("the connection did not stay open".into()))
        }
    }

    /// The relay, `host:port`.
    pub fn smarthost(&self) -> &str {
        &self.smarthost
    }

    /// Send one email summarising `batch` to every recipient: the number of recipients the
    /// relay refused for good. One message to all of them first; when the relay refuses a
    /// mailbox ([`refuses_a_mailbox`]: one is enough, as the relay ends the transaction at its
    /// first refused recipient) and there are several recipients, one message to each, so one
    /// bad address does not keep every alert from the others. `Err` when nobody got it.
    pub async fn send(&self, batch: &Batch) -> Result<usize, AlertError> {
        let (subject, body) = compose(&self.instance, batch);
        let message = |to: &[Mailbox]| -> Result<Message, AlertError> {
            let mut message = Message::builder()
                .from(self.from.clone())
                .subject(subject.clone());
            for one in to {
                message = message.to(one.clone());
            }
            message
                .header(ContentType::TEXT_PLAIN)
                .body(body.clone())
                .map_err(|e| self.failed(Box::new(e)))
        };
        match tokio::time::timeout(self.send_timeout, self.transport.send(message(&self.to)?)).await
        {
            Ok(Ok(_)) => return Ok(0),
            Ok(Err(e)) if refuses_a_mailbox(&e) && self.to.len() > 1 => {
                tracing::warn!(
                    error = %e,
                    "alert email refused for good; sending it to each recipient apart"
                );
            }
            Ok(Err(e)) => return Err(self.failed(Box::new(e))),
            Err(_) => {
                return Err(self.failed(
                    format!("no answer within {} s", self.send_timeout.as_secs_f64()).into(),
                ));
            }
        }
        let mut refused = Vec::new();
        for to in &self.to {
            let one = message(std::slice::from_ref(to))?;
            match tokio::time::timeout(self.send_timeout, self.transport.send(one)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.is_permanent() => {
                    tracing::error!(
                        target: "facekey::security",
                        recipient = %to,
                        error = %e,
                        "alert email refused for one recipient"
                    );
                    refused.push(self.failed(Box::new(e)));
                }
                // A temporary refusal or no answer: the whole mail is sent again later (the
                // recipients that got it get it twice, rather than one never).
                Ok(Err(e)) => return Err(self.failed(Box::new(e))),
                Err(_) => {
                    return Err(self.failed(
                        format!("no answer within {} s", self.send_timeout.as_secs_f64()).into(),
                    ));
                }
            }
        }
        if refused.len() == self.to.len() {
            return Err(refused
                .pop()
                .unwrap_or_else(|| self.failed("no recipient".into())));
        }
        Ok(refused.len())
    }
}

/// Whether the relay refused a mail for good over a recipient's mailbox (550 unavailable, 551
/// not local, 553 name not allowed, the codes of a refused `RCPT TO`), which ends the whole
/// transaction: worth sending to each recipient apart. Other permanent refusals (535 login,
/// 552 size) would refuse every recipient alike.
fn refuses_a_mailbox(e: &lettre::transport::smtp::Error) -> bool {
    e.is_permanent()
        && e.status()
            .is_some_and(|c| matches!(c.to_string().as_str(), "550" | "551" | "553"))
}

/// Check the relay at once and every [`CHECK_EVERY`], into `reachable`; a failure is
/// logged when the state changes, so a wrong password or CA is known before an attack needs the
/// mail. Runs until aborted.
async fn check_relay(mailer: Mailer, reachable: impl Fn(bool)) {
    let mut was_up: Option<bool> = None;
    loop {
        let result = mailer.check().await;
        let up = result.is_ok();
        reachable(up);
        match (&result, was_up) {
            (Err(e), None | Some(true)) => tracing::error!(
                error = %e,
                "alert email relay check failed: spoof and lockout emails cannot go out"
            ),
            (Ok(()), Some(false)) => tracing::info!("alert email relay reachable again"),
            _ => {}
        }
        was_up = Some(up);
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

/// The email task's two queues (lockouts apart, so a spoof flood cannot crowd them out), read
/// as one: each event goes into a batch as it is taken.
struct Inbox {
    spoofs: mpsc::Receiver<SpoofAttempt>,
    lockouts: mpsc::Receiver<SubjectLockout>,
    spoofs_open: bool,
    lockouts_open: bool,
}

impl Inbox {
    /// Whether a sender is left (events may still come).
    fn is_open(&self) -> bool {
        self.spoofs_open || self.lockouts_open
    }

    /// Take the next event into `batch` (or note a queue closed). Pending forever once both are
    /// closed: callers select it beside what else they wait for, only while [`Self::is_open`].
    async fn take_into(&mut self, batch: &mut Batch) {
        tokio::select! {
            msg = self.spoofs.recv(), if self.spoofs_open => match msg {
                Some(a) => batch.push_spoof(a),
                None => self.spoofs_open = false,
            },
            msg = self.lockouts.recv(), if self.lockouts_open => match msg {
                Some(l) => batch.push_lockout(l),
                None => self.lockouts_open = false,
            },
            else => std::future::pending::<()>().await,
        }
    }

    /// Refuse further events (a sender's `try_send` fails from now on, counted as dropped) and
    /// take those already queued into `batch`.
    fn close_into(&mut self, batch: &mut Batch) {
        self.spoofs.close();
        self.lockouts.close();
        while let Ok(a) = self.spoofs.try_recv() {
            batch.push_spoof(a);
        }
        while let Ok(l) = self.lockouts.try_recv() {
            batch.push_lockout(l);
        }
        self.spoofs_open = false;
        self.lockouts_open = false;
    }
}

/// Events the email task holds and has not mailed (for the exit warning).
#[derive(Debug, Default)]
struct Held {
    spoofs: AtomicUsize,
    lockouts: AtomicUsize,
}

impl Held {
    fn set(&self, batches: &[&Batch]) {
        let spoofs = batches.iter().map(|b| b.spoof_count()).sum();
        let lockouts = batches.iter().map(|b| b.lockout_count()).sum();
        self.spoofs.store(spoofs, Ordering::Relaxed);
        self.lockouts.store(lockouts, Ordering::Relaxed);
    }
}

/// Events the email task did not mail before it ended or its flush ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{spoofs} spoof attempt(s) and {lockouts} lockout(s) were not mailed")]
pub struct Unmailed {
    /// Spoof attempts not mailed.
    pub spoofs: usize,
    /// Lockouts not mailed.
    pub lockouts: usize,
}

/// The running email task: [`Self::flush`] ends it at exit.
#[derive(Debug)]
pub struct AlertTask {
    handle: JoinHandle<()>,
    closing: watch::Sender<bool>,
    held: Arc<Held>,
}

impl AlertTask {
    /// Stop taking events, send what is held at once (one attempt, after an email in flight),
    /// and end; wait at most `budget`. Senders may still be alive (a request outliving the
    /// grace period holds one): their later events are counted as dropped. `Err` names the
    /// events not mailed: the relay failed, the budget ran out, or the task had failed.
    pub async fn flush(mut self, budget: Duration) -> Result<(), Unmailed> {
        let _ = self.closing.send(true);
        let finished = match tokio::time::timeout(budget, &mut self.handle).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the alert email task failed");
                false
            }
            Err(_) => {
                self.handle.abort();
                false
            }
        };
        let unmailed = Unmailed {
            spoofs: self.held.spoofs.load(Ordering::Relaxed),
            lockouts: self.held.lockouts.load(Ordering::Relaxed),
        };
        if finished && unmailed.spoofs == 0 && unmailed.lockouts == 0 {
            Ok(())
        } else {
            Err(unmailed)
        }
    }

    /// Wait for the task to end by itself (every [`AlertSender`] dropped and what was held
    /// sent once).
    pub async fn join(self) -> Result<(), tokio::task::JoinError> {
        self.handle.await
    }
}

/// Resolves once [`AlertTask::flush`] has asked the task to end; never if the handle was
/// dropped without asking (the task then ends when every sender is gone).
async fn flush_asked(closing: &mut watch::Receiver<bool>) {
    if closing.wait_for(|asked| *asked).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Stops the relay check when the email task ends, however it ends; if it fails (a panic), the
/// relay is reported unreachable, since no email can go out any more.
struct TaskGuard<F: Fn(bool)> {
    checker: JoinHandle<()>,
    reachable: F,
}

impl<F: Fn(bool)> Drop for TaskGuard<F> {
    fn drop(&mut self) {
        self.checker.abort();
        if std::thread::panicking() {
            (self.reachable)(false);
        }
    }
}

/// Start the email task. It sends the first event at once, then at most one email per
/// `min_interval`, each summarising what arrived meanwhile (spoof attempts and lockouts alike).
/// An email that fails (relay down, a temporary refusal, a wrong password) keeps its events: they
/// are sent again, with what arrived since, after [`retry_delay`] (the interval doubling per
/// failure, at most [`MAX_RETRY_DELAY`]), within the batch's bounds. It flushes (one attempt)
/// and ends when every [`AlertSender`] is dropped or [`AlertTask::flush`] is called.
pub fn spawn(mailer: Mailer, min_interval: Duration, metrics: Metrics) -> (AlertSender, AlertTask) {
    // Every result's series exists at 0 from the start: an alert on increase() sees the first
    // failure (a series born at 1 shows none).
    for result in ["sent", "failed", "dropped"] {
        metrics.alert_emails.with_label_values(&[result]);
    }
    let (spoof_tx, spoofs) = mpsc::channel::<SpoofAttempt>(QUEUE_CAPACITY);
    let (lockout_tx, lockouts) = mpsc::channel::<SubjectLockout>(QUEUE_CAPACITY);
    let mut inbox = Inbox {
        spoofs,
        lockouts,
        spoofs_open: true,
        lockouts_open: true,
    };
    let (closing, mut close_rx) = watch::channel(false);
    let held = Arc::new(Held::default());
    // The series appears with the first result (a check or an email), not at 0 before any:
    // until then nothing is known about the relay.
    let gauge = metrics.alert_smtp_reachable.clone();
    let smarthost = mailer.smarthost().to_owned();
    let reachable = move |up: bool| {
        gauge
            .with_label_values(&[smarthost.as_str()])
            .set(i64::from(up));
    };
    let checker = tokio::spawn(check_relay(mailer.clone(), reachable.clone()));
    let task_held = held.clone();
    let handle = tokio::spawn(async move {
        let held = task_held;
        let _guard = TaskGuard {
            checker,
            reachable: reachable.clone(),
        };
        // Whether a flush was asked for (and the inbox closed for it).
        let mut closed = false;
        // When the next email may go: after the interval since the last one, or the retry delay
        // after a failure.
        let mut due: Option<tokio::time::Instant> = None;
        let mut failures: u32 = 0;
        let mut pending = Batch::default();
        loop {
            held.set(&[&pending]);
            let open = inbox.is_open();
            if !open && pending.is_empty() {
                break;
            }
            // Send when something is pending and the interval has passed, or at once when the
            // service is shutting down (no sender left, or a flush asked for).
            let ready = !pending.is_empty()
                && (!open || due.is_none_or(|d| d <= tokio::time::Instant::now()));
            if ready {
                let batch = std::mem::take(&mut pending);
                let (spoofs, lockouts) = (batch.spoof_count(), batch.lockout_count());
                held.set(&[&batch]);
                // Events keep being taken off the queues while the mail is sent (up to the send
                // timeout with a slow relay): they wait in the next batch, bounded as any
                // batch, instead of filling the queues until new ones are dropped.
                let result = {
                    let send = mailer.send(&batch);
                    tokio::pin!(send);
                    loop {
                        tokio::select! {
                            r = &mut send => break r,
                            () = inbox.take_into(&mut pending), if inbox.is_open() => {}
                            () = flush_asked(&mut close_rx), if !closed => {
                                closed = true;
                                inbox.close_into(&mut pending);
                            }
                        }
                        held.set(&[&batch, &pending]);
                    }
                };
                let now = tokio::time::Instant::now();
                match result {
                    Ok(refused) => {
                        reachable(true);
                        metrics.alert_emails.with_label_values(&["sent"]).inc();
                        // A recipient refused for good is not tried again (the others got
                        // the mail); each refusal counts as a failed email.
                        metrics
                            .alert_emails
                            .with_label_values(&["failed"])
                            .inc_by(refused as u64);
                        tracing::info!(spoofs, lockouts, "alert email sent");
                        failures = 0;
                        due = Some(later(now, min_interval));
                    }
                    Err(e) if inbox.is_open() => {
                        reachable(false);
                        metrics.alert_emails.with_label_values(&["failed"]).inc();
                        failures = failures.saturating_add(1);
                        let delay = retry_delay(min_interval, failures);
                        tracing::error!(
                            error = %e,
                            spoofs,
                            lockouts,
                            retry_in_secs = delay.as_secs_f64(),
                            "alert email failed; its events are kept and sent again"
                        );
                        // The failed batch first, then what arrived while it was sent.
                        let arrived = std::mem::replace(&mut pending, batch);
                        pending.absorb(arrived);
                        due = Some(later(now, delay));
                    }
                    Err(e) => {
                        reachable(false);
                        metrics.alert_emails.with_label_values(&["failed"]).inc();
                        tracing::error!(
                            error = %e,
                            spoofs,
                            lockouts,
                            "alert email failed while shutting down; its events are not mailed"
                        );
                        // Still held: the flush reports them as not mailed.
                        let mut lost = batch;
                        lost.absorb(std::mem::take(&mut pending));
                        held.set(&[&lost]);
                        return;
                    }
                }
                continue;
            }
            // Wake when an email becomes due (only with something pending) or an event comes.
            let wake = due.filter(|_| !pending.is_empty());
            tokio::select! {
                () = inbox.take_into(&mut pending), if open => {}
                () = flush_asked(&mut close_rx), if !closed => {
                    closed = true;
                    inbox.close_into(&mut pending);
                }
                () = async {
                    match wake {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
        }
        held.set(&[]);
    });
    (
        AlertSender {
            spoofs: spoof_tx,
            lockouts: lockout_tx,
        },
        AlertTask {
            handle,
            closing,
            held,
        },
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Records the target of every event.
    struct Targets(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Targets {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            self.0
                .lock()
                .unwrap()
                .push(event.metadata().target().to_owned());
        }
    }

    /// The spoof event's log line is on `facekey::security` with every other security event,
    /// so a filter or a SIEM routing by target keeps it (it was on the module's target).
    #[test]
    fn the_spoof_line_is_a_security_event() {
        use tracing_subscriber::layer::SubscriberExt;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Targets(seen.clone()));
        let metrics = Metrics::new().unwrap();
        tracing::subscriber::with_default(subscriber, || {
            SpoofAttempt {
                at: SystemTime::now(),
                route: "/v1/verify",
                subject: Some("s".into()),
                liveness: 0.1,
                threshold: 0.5,
                request_id: None,
                key_id: Some("k".into()),
            }
            .emit(&metrics, None);
        });
        assert_eq!(*seen.lock().unwrap(), vec!["facekey::security".to_owned()]);
    }

    /// The email task's guard stops the relay check however the task ends, and reports the
    /// relay unreachable only when the task failed (no email can go out any more).
    #[tokio::test]
    async fn a_failed_email_task_reports_no_relay_and_stops_its_check() {
        for fails in [false, true] {
            let reported = Arc::new(std::sync::Mutex::new(Vec::new()));
            let checker = tokio::spawn(std::future::pending::<()>());
            let check = checker.abort_handle();
            let seen = reported.clone();
            let task = tokio::spawn(async move {
                let _guard = TaskGuard {
                    checker,
                    reachable: move |up| seen.lock().unwrap().push(up),
                };
                assert!(!fails, "the email task failed");
            });
            assert_eq!(task.await.is_err(), fails);
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            assert!(check.is_finished(), "the relay check outlived the task");
            let expected = if fails { vec![false] } else { vec![] };
            assert_eq!(*reported.lock().unwrap(), expected);
        }
    }

    fn attempt(i: usize) -> SpoofAttempt {
        SpoofAttempt {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            route: "/v1/verify",
            subject: Some(format!("subject-{i}")),
            liveness: 0.1,
            threshold: 0.5,
            request_id: Some(format!("req-{i}")),
            key_id: Some("app".to_owned()),
        }
    }

    fn lockout(i: usize) -> SubjectLockout {
        SubjectLockout {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            subject: format!("subject-{i}"),
            failures: 5,
            window: Duration::from_secs(900),
            locked_for: Duration::from_secs(600),
        }
    }

    fn batch(spoofs: usize, lockouts: usize) -> Batch {
        let mut b = Batch::default();
        (1..=spoofs).for_each(|i| b.push_spoof(attempt(i)));
        (1..=lockouts).for_each(|i| b.push_lockout(lockout(i)));
        b
    }

    #[test]
    fn retries_back_off_from_the_interval_to_the_cap() {
        let m = Duration::from_secs(60);
        assert_eq!(retry_delay(m, 1), Duration::from_secs(120));
        assert_eq!(retry_delay(m, 2), Duration::from_secs(240));
        assert_eq!(retry_delay(m, 4), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(m, 40), MAX_RETRY_DELAY);
        // An interval longer than the cap is kept; a zero interval still waits a little.
        let long = Duration::from_secs(3600);
        assert_eq!(retry_delay(long, 3), long);
        assert_eq!(retry_delay(Duration::ZERO, 1), Duration::from_millis(200));
    }

    /// The next email's time never overflows (`now + interval` panicked on a huge interval).
    #[test]
    fn the_next_email_time_does_not_overflow() {
        let now = tokio::time::Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(60)),
            now + Duration::from_secs(60)
        );
        assert!(later(now, Duration::MAX) > now + Duration::from_secs(365 * 24 * 3600));
        assert!(later(now, Duration::from_secs(u64::MAX)) > now);
    }

    #[test]
    fn compose_single_and_many() {
        let (subject, body) = compose("facekey-0", &batch(1, 0));
        assert_eq!(subject, "[FaceKey] spoof attempt detected on facekey-0");
        assert!(body.contains(
            "subject=subject-1 key=app liveness=0.100 (threshold 0.500) request_id=req-1"
        ));
        assert!(body.contains("2027-01-15T08:00:00Z"), "{body}");

        let many = batch(25, 0);
        assert_eq!(
            many.spoofs.len(),
            MAX_LISTED,
            "only the listed ones are kept"
        );
        let (subject, body) = compose("facekey-0", &many);
        assert!(subject.starts_with("[FaceKey] 25 spoof attempts"));
        assert_eq!(body.matches("request_id=").count(), MAX_LISTED);
        assert!(
            body.contains("subject=subject-1 key=app liveness="),
            "{body}"
        );
        // Past the listed ones, each target is named with its count.
        assert!(
            body.contains("- 1 x /v1/verify subject=subject-25 key=app"),
            "{body}"
        );
        assert!(!body.contains("more"), "{body}");
    }

    #[test]
    fn a_flood_of_cheap_attempts_does_not_hide_the_targeted_one() {
        let mut b = Batch::default();
        for i in 0..300 {
            b.push_spoof(SpoofAttempt {
                route: "/v1/liveness",
                subject: None,
                request_id: Some(format!("noise-{i}")),
                ..attempt(0)
            });
        }
        for _ in 0..3 {
            b.push_spoof(SpoofAttempt {
                subject: Some("victim".to_owned()),
                key_id: Some("attacker".to_owned()),
                ..attempt(0)
            });
        }
        // Many distinct targets past the tally's bound are still counted.
        for i in 0..(MAX_TALLIED + 5) {
            b.push_spoof(SpoofAttempt {
                subject: Some(format!("other-{i}")),
                ..attempt(0)
            });
        }
        assert_eq!(b.spoof_count(), 300 + 3 + MAX_TALLIED + 5);
        let (subject, body) = compose("facekey-0", &b);
        assert!(subject.contains(&format!("{} spoof attempts", b.spoof_count())));
        assert!(
            body.contains("- 280 x /v1/liveness subject=- key=app"),
            "{body}"
        );
        assert!(
            body.contains("- 3 x /v1/verify subject=victim key=attacker"),
            "{body}"
        );
        assert!(body.contains("and 7 more at 7 other target(s)"), "{body}");
    }

    /// Decoys cannot push the attacked subject out of the email: 70 decoy targets with one
    /// attempt each, then three at the victim, name the victim (the tally used to keep the
    /// first 50 targets it met); 20 locked decoys, then the victim, name the victim too (the
    /// lockouts past the 20 listed used to be a number).
    #[test]
    fn decoys_do_not_hide_the_attacked_subject() {
        let mut b = Batch::default();
        for i in 0..(MAX_LISTED + 70) {
            b.push_spoof(SpoofAttempt {
                subject: Some(format!("decoy-{i}")),
                ..attempt(0)
            });
        }
        for _ in 0..3 {
            b.push_spoof(SpoofAttempt {
                subject: Some("victim".to_owned()),
                ..attempt(0)
            });
        }
        for i in 0..MAX_LISTED {
            b.push_lockout(SubjectLockout {
                subject: format!("decoy-{i}"),
                ..lockout(0)
            });
        }
        b.push_lockout(SubjectLockout {
            subject: "victim".to_owned(),
            ..lockout(0)
        });
        assert_eq!(b.spoof_count(), MAX_LISTED + 73);
        assert_eq!(b.lockout_count(), MAX_LISTED + 1);
        let (_, body) = compose("facekey-0", &b);
        let spoofs = body.split("rejected").nth(1).unwrap();
        assert!(spoofs.contains("- 3 x /v1/verify subject=victim"), "{body}");
        assert!(body.contains("- also locked: subject=victim"), "{body}");
    }

    #[test]
    fn a_batch_absorbs_a_later_one_within_its_bounds() {
        let mut first = batch(15, 1);
        let mut later = batch(0, 0);
        for i in 100..200 {
            later.push_spoof(attempt(i));
        }
        later.push_lockout(lockout(7));
        first.absorb(later);
        assert_eq!((first.spoof_count(), first.lockout_count()), (115, 2));
        assert_eq!(first.spoofs.len(), MAX_LISTED);
        // The failed batch's own events stay first.
        assert_eq!(first.spoofs[0].subject.as_deref(), Some("subject-1"));
    }

    #[test]
    fn compose_lockouts_name_the_subject_and_why() {
        let (subject, body) = compose("facekey-0", &batch(0, 1));
        assert_eq!(
            subject,
            "[FaceKey] subject subject-1 locked after failed verifications on facekey-0"
        );
        assert!(
            body.contains(
                "subject=subject-1 locked: 5 failed verifications within 900 s; locked for 600 s, \
                 until 2027-01-15T08:10:00Z"
            ),
            "{body}"
        );
        assert!(body.contains("429 subject_locked"), "{body}");
        assert!(!body.contains("liveness check"), "{body}");

        // A spoof flood does not hide lockouts: each kind has its own list and count.
        let (subject, body) = compose("facekey-0", &batch(30, 22));
        assert_eq!(
            subject,
            "[FaceKey] 22 subjects locked and 30 spoof attempts detected on facekey-0"
        );
        assert_eq!(
            body.matches(" failed verifications within ").count(),
            MAX_LISTED
        );
        // The two past the listed ones are named.
        let also = body
            .lines()
            .find(|l| l.starts_with("- also locked: "))
            .unwrap_or_else(|| panic!("{body}"));
        assert_eq!(also.matches("subject=").count(), 2, "{body}");
        // The 10 spoofs past the listed ones are named by target.
        assert!(
            body.contains("- 1 x /v1/verify subject=subject-30 key=app\n"),
            "{body}"
        );
    }

    fn settings() -> EmailSettings {
        EmailSettings {
            smarthost: "mail.example.com:587".into(),
            tls: SmtpTls::Starttls,
            username: None,
            password: None,
            ca_file: None,
            from: "FaceKey <facekey@example.com>".into(),
            to: vec!["security@example.com".into()],
            min_interval: Duration::from_secs(60),
            instance: "test".into(),
        }
    }

    #[tokio::test]
    async fn settings_are_validated() {
        assert!(Mailer::new(&settings()).is_ok());
        let mut s = settings();
        s.smarthost = "mail.example.com".into();
        assert!(
            Mailer::new(&s)
                .err()
                .unwrap()
                .to_string()
                .contains("host:port")
        );
        let mut s = settings();
        s.to = vec!["not an address".into()];
        assert!(
            Mailer::new(&s)
                .err()
                .unwrap()
                .to_string()
                .contains("not an email address")
        );
        let mut s = settings();
        s.to.clear();
        assert!(Mailer::new(&s).is_err());
        let mut s = settings();
        s.username = Some("u".into());
        assert!(
            Mailer::new(&s)
                .err()
                .unwrap()
                .to_string()
                .contains("together")
        );
        let mut s = settings();
        s.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(
            Mailer::new(&s)
                .err()
                .unwrap()
                .to_string()
                .contains("/nonexistent/ca.pem")
        );
    }
}
