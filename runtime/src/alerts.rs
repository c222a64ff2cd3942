//! Spoofing alerts. A [`SpoofAttempt`] is one internal event that emits, together, the log line,
//! the `facekey_spoof_detected_total` increment and (when SMTP is configured) an email, so logs,
//! metrics and mail never disagree. Emails go out from a background task, throttled to at most
//! one per interval (later attempts are summarised in the next one), so a flood of attacks
//! neither floods an inbox nor slows verification.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// Attempts queued for email before new ones are dropped (and counted as dropped).
const QUEUE_CAPACITY: usize = 1024;
/// Longest time one email may take end to end, so a stalled server cannot wedge alerting.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts listed one by one in an email; the rest are counted.
const MAX_LISTED: usize = 20;

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
    /// The request id, to find the request in logs.
    pub request_id: Option<String>,
}

impl SpoofAttempt {
    /// Emit the event: a warning log line, the spoof counter, and an email when alerting is on.
    pub fn emit(self, metrics: &Metrics, alerts: Option<&AlertSender>) {
        tracing::warn!(
            route = self.route,
            subject = self.subject.as_deref().unwrap_or("-"),
            liveness = self.liveness,
            threshold = self.threshold,
            request_id = self.request_id.as_deref().unwrap_or("-"),
            "spoof attempt detected"
        );
        metrics.spoofs_detected.inc();
        if let Some(alerts) = alerts {
            alerts.send(self, metrics);
        }
    }
}

/// Subject line and plain-text body summarising a batch of attempts.
pub fn compose(instance: &str, attempts: &[SpoofAttempt]) -> (String, String) {
    let subject = if attempts.len() == 1 {
        format!("[FaceKey] spoof attempt detected on {instance}")
    } else {
        format!(
            "[FaceKey] {} spoof attempts detected on {instance}",
            attempts.len()
        )
    };
    let mut body = format!(
        "FaceKey's liveness check rejected {} face(s) as presentation attacks on {instance}.\n\n",
        attempts.len()
    );
    for a in attempts.iter().take(MAX_LISTED) {
        body.push_str(&format!(
            "- {} {} subject={} liveness={:.3} (threshold {:.3}) request_id={}\n",
            humantime::format_rfc3339_seconds(a.at),
            a.route,
            a.subject.as_deref().unwrap_or("-"),
            a.liveness,
            a.threshold,
            a.request_id.as_deref().unwrap_or("-"),
        ));
    }
    if attempts.len() > MAX_LISTED {
        body.push_str(&format!("- … and {} more\n", attempts.len() - MAX_LISTED));
    }
    body.push_str(
        "\nLook the request ids up in the runtime's logs. This mail is throttled: further \
attempts within the alert interval are summarised in the next one.\n",
    );
    (subject, body)
}

/// Handle for queueing attempts to the email task; cheap to clone.
#[derive(Clone, Debug)]
pub struct AlertSender {
    tx: mpsc::Sender<SpoofAttempt>,
}

impl AlertSender {
    fn send(&self, attempt: SpoofAttempt, metrics: &Metrics) {
        if self.tx.try_send(attempt).is_err() {
            metrics.alert_emails.with_label_values(&["dropped"]).inc();
        }
    }
}

/// A ready-to-use mailer: transport and addresses, validated at start-up.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    smarthost: String,
    instance: String,
}

fn parse_mailbox(field: &str, value: &str) -> Result<Mailbox, AlertError> {
    value
        .trim()
        .parse()
        .map_err(|e| AlertError::Config(format!("{field} {value:?} is not an email address: {e}")))
}

impl Mailer {
    /// Validate the settings and build the SMTP transport (no connection is made yet). Must be
    /// called inside the Tokio runtime: the connection pool lives there.
    pub fn new(settings: &EmailSettings) -> Result<Self, AlertError> {
        let (host, port) = settings
            .smarthost
            .rsplit_once(':')
            .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_string(), p)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| {
                AlertError::Config(format!(
                    "smarthost {:?} must be host:port",
                    settings.smarthost
                ))
            })?;
        let from = parse_mailbox("alert sender", &settings.from)?;
        if settings.to.is_empty() {
            return Err(AlertError::Config("no alert recipients".into()));
        }
        let to = settings
            .to
            .iter()
            .map(|t| parse_mailbox("alert recipient", t))
            .collect::<Result<Vec<_>, _>>()?;

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
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(20)));
        match (&settings.username, &settings.password) {
            (Some(user), Some(pass)) => {
                builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(AlertError::Config(
                    "SMTP username and password must be set together".into(),
                ));
            }
            (None, None) => {}
        }
        Ok(Self {
            transport: builder.build(),
            from,
            to,
            smarthost: settings.smarthost.clone(),
            instance: settings.instance.clone(),
        })
    }

    /// Send one email summarising `attempts`.
    pub async fn send(&self, attempts: &[SpoofAttempt]) -> Result<(), AlertError> {
        let (subject, body) = compose(&self.instance, attempts);
        let err = |source: Box<dyn std::error::Error + Send + Sync>| AlertError::Send {
            smarthost: self.smarthost.clone(),
            source,
        };
        let mut message = Message::builder().from(self.from.clone()).subject(subject);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| err(Box::new(e)))?;
        match tokio::time::timeout(SEND_TIMEOUT, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(err(Box::new(e))),
            Err(_) => Err(err(format!(
                "no answer within {} s",
                SEND_TIMEOUT.as_secs()
            )
            .into())),
        }
    }
}

/// Start the email task. It sends the first attempt at once, then at most one email per
/// `min_interval`, each summarising what arrived meanwhile. It flushes and ends when every
/// [`AlertSender`] is dropped.
pub fn spawn(
    mailer: Mailer,
    min_interval: Duration,
    metrics: Metrics,
) -> (AlertSender, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<SpoofAttempt>(QUEUE_CAPACITY);
    let task = tokio::spawn(async move {
        let mut last_sent: Option<tokio::time::Instant> = None;
        let mut pending: Vec<SpoofAttempt> = Vec::new();
        let mut open = true;
        while open || !pending.is_empty() {
            let due = last_sent.map(|t| t + min_interval);
            // Send when something is pending and the interval has passed, or at once when the
            // service is shutting down (no sender left).
            let ready = !pending.is_empty()
                && (!open || due.is_none_or(|d| d <= tokio::time::Instant::now()));
            if ready {
                let batch = std::mem::take(&mut pending);
                match mailer.send(&batch).await {
                    Ok(()) => {
                        metrics.alert_emails.with_label_values(&["sent"]).inc();
                        tracing::info!(attempts = batch.len(), "spoof alert email sent");
                    }
                    Err(e) => {
                        metrics.alert_emails.with_label_values(&["failed"]).inc();
                        tracing::error!(error = %e, attempts = batch.len(), "spoof alert email failed");
                    }
                }
                last_sent = Some(tokio::time::Instant::now());
                continue;
            }
            tokio::select! {
                msg = rx.recv(), if open => match msg {
                    Some(a) => pending.push(a),
                    None => open = false,
                },
                () = async {
                    match due {
                        Some(d) if !pending.is_empty() => tokio::time::sleep_until(d).await,
                        _ => std::future::pending::<()>().await,
                    }
                } => {}
            }
        }
    });
    (AlertSender { tx }, task)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn attempt(i: usize) -> SpoofAttempt {
        SpoofAttempt {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            route: "/v1/verify",
            subject: Some(format!("subject-{i}")),
            liveness: 0.1,
            threshold: 0.5,
            request_id: Some(format!("req-{i}")),
        }
    }

    #[test]
    fn compose_single_and_many() {
        let (subject, body) = compose("facekey-0", &[attempt(1)]);
        assert_eq!(subject, "[FaceKey] spoof attempt detected on facekey-0");
        assert!(
            body.contains("subject=subject-1 liveness=0.100 (threshold 0.500) request_id=req-1")
        );
        assert!(body.contains("2027-01-15T08:00:00Z"), "{body}");

        let many: Vec<_> = (0..25).map(attempt).collect();
        let (subject, body) = compose("facekey-0", &many);
        assert!(subject.starts_with("[FaceKey] 25 spoof attempts"));
        assert_eq!(body.matches("request_id=").count(), MAX_LISTED);
        assert!(body.contains("and 5 more"));
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
