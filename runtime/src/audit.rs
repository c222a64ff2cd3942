//! The audit trail: one JSON object per line for every enrolment, deletion, rename,
//! verification, identification, liveness check and refused request, written to its own sink
//! (stdout or an append-only file) for a SIEM. Events name keys by id and subjects by id; they
//! never hold images, templates, embeddings or keys. Handlers add what only they know (the
//! subject of a verify body, the decision) as an [`AuditDetail`] response extension; the
//! access-control middleware writes the event.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use axum::http::Method;
use serde::Serialize;

use crate::decision::Decision;

/// Why the audit sink could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditError {
    /// The file.
    path: String,
    /// The I/O error.
    #[source]
    source: std::io::Error,
}

enum Sink {
    Off,
    Stdout,
    File(Mutex<std::fs::File>, PathBuf),
}

/// Where audit events go.
pub struct Audit {
    sink: Sink,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// What a handler knows for the audit event that the middleware does not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditDetail {
    /// The subject acted on (verify names it in the body).
    pub subject: Option<String>,
    /// The face (template) acted on.
    pub face: Option<String>,
    /// The decision of a verification or identification.
    pub decision: Option<Decision>,
    /// Why it was rejected.
    pub reasons: Vec<String>,
    /// Subjects an identification accepted.
    pub candidates: Vec<String>,
    /// Subjects an identification matched but withheld from its answer because they are locked.
    pub withheld_locked: Vec<String>,
}

/// One audit event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditEvent {
    /// RFC 3339 time, milliseconds, UTC.
    pub time: String,
    /// `subject.create`, `subject.rename`, `subject.delete`, `face.enrol`, `face.delete`,
    /// `verify`, `identify`, `liveness`, or `auth.denied` for a refused request on any route.
    pub action: &'static str,
    /// HTTP method.
    pub method: String,
    /// Matched route pattern.
    pub route: String,
    /// HTTP status answered.
    pub status: u16,
    /// The key's id, when a key was recognised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The face.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub face: Option<String>,
    /// The decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// Rejection reasons.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Accepted identification candidates (subject ids).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
    /// Subjects an identification matched but withheld because they are locked (an attempt on
    /// a locked account through identify, for the security team).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub withheld_locked: Vec<String>,
    /// The error code of a refused or failed request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// The request id (`x-request-id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The client's address as the server saw it (the last proxy's, behind one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

impl AuditEvent {
    /// A new event at the current time.
    pub fn new(action: &'static str, method: &Method, route: &str, status: u16) -> Self {
        Self {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            action,
            method: method.as_str().to_owned(),
            route: route.to_owned(),
            status,
            key_id: None,
            subject: None,
            face: None,
            decision: None,
            reasons: Vec::new(),
            candidates: Vec::new(),
            withheld_locked: Vec::new(),
            error: None,
            request_id: None,
            client: None,
        }
    }

    /// Fill in the client's address.
    pub fn client(mut self, addr: Option<SocketAddr>) -> Self {
        self.client = addr.map(|a| a.to_string());
        self
    }

    /// Merge a handler's detail (it wins over what the path said).
    pub fn detail(mut self, detail: Option<&AuditDetail>) -> Self {
        if let Some(d) = detail {
            if d.subject.is_some() {
                self.subject = d.subject.clone();
            }
            if d.face.is_some() {
                self.face = d.face.clone();
            }
            self.decision = d.decision;
            self.reasons = d.reasons.clone();
            self.candidates = d.candidates.clone();
            self.withheld_locked = d.withheld_locked.clone();
        }
        self
    }
}

/// The audited action of a route, or `None` for routes whose successful calls are not audited
/// (health, metrics, documents, the score MLP, who-am-I).
pub fn action(method: &Method, route: &str) -> Option<&'static str> {
    Some(match (method.as_str(), route) {
        ("POST", "/v1/subjects") => "subject.create",
        ("PATCH", "/v1/subjects/{id}") => "subject.rename",
        ("DELETE", "/v1/subjects/{id}") => "subject.delete",
        ("GET", "/v1/subjects") | ("GET", "/v1/subjects/{id}") => "subject.read",
        ("POST", "/v1/subjects/{id}/faces") => "face.enrol",
        ("DELETE", "/v1/subjects/{id}/faces/{face_id}") => "face.delete",
        ("POST", "/v1/verify") => "verify",
        ("POST", "/v1/identify") => "identify",
        ("POST", "/v1/liveness") => "liveness",
        _ => return None,
    })
}

/// The action of refused requests.
pub const DENIED: &str = "auth.denied";

impl Audit {
    /// Open the sink `setting` names: `stdout`, `off`, or a file path (appended to, created
    /// owner-readable only).
    pub fn open(setting: &str) -> Result<Self, AuditError> {
        let sink = match setting.trim() {
            "off" => Sink::Off,
            "stdout" | "" => Sink::Stdout,
            path => {
                let path = PathBuf::from(path);
                let mut options = std::fs::OpenOptions::new();
                options.create(true).append(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                let file = options.open(&path).map_err(|source| AuditError {
                    path: path.display().to_string(),
                    source,
                })?;
                Sink::File(Mutex::new(file), path)
            }
        };
        Ok(Self { sink })
    }

    /// Where events go, for the start-up log.
    pub fn describe(&self) -> String {
        match &self.sink {
            Sink::Off => "off".into(),
            Sink::Stdout => "stdout".into(),
            Sink::File(_, p) => p.display().to_string(),
        }
    }

    /// Whether events are written anywhere (`off` writes none, so callers need not build them).
    pub fn enabled(&self) -> bool {
        !matches!(self.sink, Sink::Off)
    }

    /// Write one event as a JSON line. A failed write is logged, never fails the request.
    pub fn record(&self, event: &AuditEvent) {
        if !self.enabled() {
            return;
        }
        let mut line = match serde_json::to_vec(event) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "audit event not serialisable");
                return;
            }
        };
        line.push(b'\n');
        let result = match &self.sink {
            Sink::Off => Ok(()),
            Sink::Stdout => std::io::stdout().lock().write_all(&line),
            Sink::File(file, _) => match file.lock() {
                Ok(mut f) => f.write_all(&line),
                Err(poisoned) => poisoned.into_inner().write_all(&line),
            },
        };
        if let Err(e) = result {
            tracing::error!(error = %e, sink = %self.describe(), "audit event not written");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn file_sink_appends_one_json_line_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::open(path.to_str().unwrap()).unwrap();
        let detail = AuditDetail {
            subject: Some("s1".into()),
            decision: Some(Decision::Reject),
            reasons: vec!["no_match".into()],
            ..AuditDetail::default()
        };
        let mut e = AuditEvent::new("verify", &Method::POST, "/v1/verify", 200)
            .client(Some(SocketAddr::from(([127, 0, 0, 1], 4000))))
            .detail(Some(&detail));
        e.key_id = Some("app".into());
        audit.record(&e);
        audit.record(&AuditEvent::new(DENIED, &Method::GET, "/v1/subjects", 401));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["subject"], "s1");
        assert_eq!(lines[0]["decision"], "reject");
        assert_eq!(lines[0]["reasons"][0], "no_match");
        assert_eq!(lines[0]["key_id"], "app");
        assert_eq!(lines[0]["client"], "127.0.0.1:4000");
        assert_eq!(lines[1]["action"], DENIED);
        assert!(lines[1].get("key_id").is_none());
        assert!(Audit::open("/nonexistent-dir/x/audit.log").is_err());
    }

    #[test]
    fn actions_cover_the_audited_routes() {
        assert_eq!(action(&Method::POST, "/v1/verify"), Some("verify"));
        assert_eq!(
            action(&Method::DELETE, "/v1/subjects/{id}/faces/{face_id}"),
            Some("face.delete")
        );
        assert_eq!(action(&Method::POST, "/v1/score"), None);
        assert_eq!(action(&Method::GET, "/healthz"), None);
    }
}
