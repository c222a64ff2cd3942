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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use axum::http::Method;
use prometheus::IntCounter;
use serde::Serialize;

use crate::decision::Decision;

/// Records a store write that was committed after its request ended (the client went away, or
/// the request timed out): the request's own event says 499 or 503 and cannot name what the
/// write stored, so the write's task records a follow-up with its status and ids. Set by the
/// access-control middleware around each audited handler, read by
/// [`crate::enrolments::Enrolments`] when a write starts.
#[derive(Clone)]
pub struct OnCommit(pub std::sync::Arc<dyn Fn(axum::http::StatusCode, AuditDetail) + Send + Sync>);

tokio::task_local! {
    /// The current request's [`OnCommit`] while its handler runs (`None`: not audited).
    pub static ON_COMMIT: Option<OnCommit>;
}

/// The reason a follow-up event ([`OnCommit`]) carries.
pub const COMMITTED_AFTER_REQUEST: &str = "committed_after_request_ended";

/// The task [`detached`] started ended without an answer (it panicked).
#[derive(Debug, thiserror::Error)]
#[error("the detached task ended without an answer")]
pub struct Abandoned;

/// Runs `work` (a write that must not be lost with its request) on a task of its own and waits
/// for its answer. The caller's future may be dropped at any await (a request timeout, a client
/// that went away, an HTTP/2 reset), but `work` still runs to its end; if the caller is gone by
/// then, what `committed` says it stored (`None`: nothing) is audited as a follow-up through the
/// request's [`OnCommit`], since the request's own event could not name it.
pub async fn detached<T, F>(
    work: F,
    committed: impl FnOnce(&T) -> Option<(axum::http::StatusCode, AuditDetail)> + Send + 'static,
) -> Result<T, Abandoned>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let on_commit = ON_COMMIT.try_with(Clone::clone).ok().flatten();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        // The caller gone (its receiver dropped): the work's own follow-up event.
        if let Err(value) = tx.send(work.await)
            && let Some(hook) = on_commit
            && let Some((status, detail)) = committed(&value)
        {
            (hook.0)(status, detail);
        }
    });
    rx.await.map_err(|_| Abandoned)
}

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
    File(Mutex<Box<dyn Write + Send>>, PathBuf),
}

/// Where audit events go, and the instance (pod) every event names.
pub struct Audit {
    sink: Sink,
    instance: String,
    /// Counts events that could not be written (`facekey_audit_write_failures_total`).
    failures: Option<IntCounter>,
    /// A write failed, maybe part-way through its line: the next one starts on a new line, so
    /// the torn line does not swallow the next event.
    torn: AtomicBool,
}

/// An event as written: the event and the instance that wrote it, so a trail gathered from
/// several replicas (a file per pod, or stdout without the collector's pod labels) says which
/// one answered.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    event: &'a AuditEvent,
    instance: &'a str,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Longest subject, face or session id an audit event records, in characters. Ids a request's
/// body or path named are recorded even when the request is refused (unknown subject, missing
/// image, no key at all), so a client could otherwise make one event as long as its whole body
/// or URL.
pub const MAX_ID_CHARS: usize = 256;

/// An id as an audit event records it: cut to [`MAX_ID_CHARS`] characters.
pub fn bounded_id(id: &str) -> String {
    id.chars().take(MAX_ID_CHARS).collect()
}

/// An id a request's body named, as an audit event records it: trimmed, cut to
/// [`MAX_ID_CHARS`] characters ([`bounded_id`]), `None` when absent or blank.
pub fn body_id(id: Option<&str>) -> Option<String> {
    let id = id?.trim();
    (!id.is_empty()).then(|| bounded_id(id))
}

/// What a handler knows for the audit event that the middleware does not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditDetail {
    /// The subject acted on (verify names it in the body; recorded for refused verifications
    /// too, so the trail shows which account a refused attempt aimed at).
    pub subject: Option<String>,
    /// The challenge-liveness session used (a verify with `session`) or acted on (opening or
    /// concluding one).
    pub session: Option<String>,
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
    /// Subjects a rejected identification counted a failed attempt against (the face matched
    /// them but was rejected, e.g. as a spoof), as a failed verification of each would be.
    pub failed_attempts: Vec<String>,
    /// Subjects this request's failed attempt locked: the request (its key, client and id) that
    /// caused a lock, for the security team.
    pub locked: Vec<String>,
}

impl AuditDetail {
    /// The detail naming only `subject`.
    pub fn subject(id: &str) -> Self {
        Self {
            subject: Some(id.to_owned()),
            ..Self::default()
        }
    }

    /// The detail of a request whose body named `subject` and `session` (see [`body_id`]),
    /// known before the handler can fail.
    pub fn named(subject: Option<&str>, session: Option<&str>) -> Self {
        Self {
            subject: body_id(subject),
            session: body_id(session),
            ..Self::default()
        }
    }

    /// Fill in the subject and session of `named` where this detail has none: the handler's own
    /// detail wins, what the body named completes it.
    pub fn complete(&mut self, named: Self) {
        if self.subject.is_none() {
            self.subject = named.subject;
        }
        if self.session.is_none() {
            self.session = named.session;
        }
    }
}

/// One audit event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditEvent {
    /// RFC 3339 time, milliseconds, UTC.
    pub time: String,
    /// `subject.create`, `subject.rename`, `subject.delete`, `subject.unlock`, `face.enrol`,
    /// `face.delete`, `verify`, `identify`, `liveness`, `session.open`, `session.read`,
    /// `session.close`, `session.frames`, or `auth.denied` for a refused request on any route.
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
    /// The challenge-liveness session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
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
    /// Subjects a rejected identification counted a failed attempt against (the face matched
    /// them but was rejected): identify's share of the lockout, for the security team.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_attempts: Vec<String>,
    /// Subjects this request's failed attempt locked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub locked: Vec<String>,
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
            session: None,
            decision: None,
            reasons: Vec::new(),
            candidates: Vec::new(),
            withheld_locked: Vec::new(),
            failed_attempts: Vec::new(),
            locked: Vec::new(),
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
            if d.session.is_some() {
                self.session = d.session.clone();
            }
            self.decision = d.decision;
            self.reasons = d.reasons.clone();
            self.candidates = d.candidates.clone();
            self.withheld_locked = d.withheld_locked.clone();
            self.failed_attempts = d.failed_attempts.clone();
            self.locked = d.locked.clone();
        }
        self
    }
}

/// The audited action of a route, or `None` for routes whose successful calls are not audited
/// (health, metrics, documents, the score MLP, who-am-I).
pub fn action(method: &Method, route: &str) -> Option<&'static str> {
    // HEAD runs the GET handler (the same read), so it is audited as that read.
    let method = if *method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    Some(match (method, route) {
        ("POST", "/v1/subjects") => "subject.create",
        ("PATCH", "/v1/subjects/{id}") => "subject.rename",
        ("DELETE", "/v1/subjects/{id}") => "subject.delete",
        ("GET", "/v1/subjects") | ("GET", "/v1/subjects/{id}") => "subject.read",
        ("POST", "/v1/subjects/{id}/faces") => "face.enrol",
        ("DELETE", "/v1/subjects/{id}/faces/{face_id}") => "face.delete",
        ("DELETE", "/v1/subjects/{id}/lockout") => "subject.unlock",
        ("POST", "/v1/verify") => "verify",
        ("POST", "/v1/identify") => "identify",
        ("POST", "/v1/liveness") => "liveness",
        ("POST", "/v1/liveness/sessions") => "session.open",
        ("GET", "/v1/liveness/sessions/{id}") => "session.read",
        ("DELETE", "/v1/liveness/sessions/{id}") => "session.close",
        ("POST", "/v1/liveness/sessions/{id}/frames") => SESSION_FRAMES,
        _ => return None,
    })
}

/// The action of a frames call, written only when it concludes its session or is refused.
pub const SESSION_FRAMES: &str = "session.frames";

/// Whether an admitted request's event is written, given its answer: always, except a frames
/// call that neither concluded its session (the handler's detail then carries the verdict) nor
/// was refused; the calls in between would only repeat the session.
pub fn is_recorded(action: &str, success: bool, detail: Option<&AuditDetail>) -> bool {
    !(action == SESSION_FRAMES && success && detail.is_none_or(|d| d.decision.is_none()))
}

/// The action of refused requests.
pub const DENIED: &str = "auth.denied";

impl Audit {
    /// Open the sink `setting` names: `stdout`, `off`, or a file path (appended to, created
    /// owner-readable only); every event names `instance`.
    pub fn open(setting: &str, instance: &str) -> Result<Self, AuditError> {
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
                Sink::File(Mutex::new(Box::new(file)), path)
            }
        };
        Ok(Self {
            sink,
            instance: instance.to_owned(),
            failures: None,
            torn: AtomicBool::new(false),
        })
    }

    /// Count the events that could not be written in `counter`.
    pub fn count_failures_in(mut self, counter: IntCounter) -> Self {
        self.failures = Some(counter);
        self
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
        let line = Line {
            event,
            instance: &self.instance,
        };
        let mut line = match serde_json::to_vec(&line) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "audit event not serialisable");
                return;
            }
        };
        line.push(b'\n');
        if self.torn.load(Ordering::Relaxed) {
            line.insert(0, b'\n');
        }
        let result = match &self.sink {
            Sink::Off => Ok(()),
            Sink::Stdout => std::io::stdout().lock().write_all(&line),
            Sink::File(file, _) => match file.lock() {
                Ok(mut f) => f.write_all(&line),
                Err(poisoned) => poisoned.into_inner().write_all(&line),
            },
        };
        self.torn.store(result.is_err(), Ordering::Relaxed);
        if let Err(e) = result {
            if let Some(failures) = &self.failures {
                failures.inc();
            }
            tracing::error!(error = %e, sink = %self.describe(), "audit event not written");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A writer that takes `room` bytes in all, then refuses every write (a full disk), and
    /// takes writes again once `room` is raised.
    #[derive(Clone, Default)]
    struct Disk(std::sync::Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut d = self.0.lock().unwrap();
            let left = d.1.saturating_sub(d.0.len());
            if left == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
            }
            let n = buf.len().min(left);
            d.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A write that fails part-way (the disk fills) is counted, and the next event, once there
    /// is room again, starts on a line of its own: the trail stays one JSON event per line
    /// apart from the torn one.
    #[test]
    fn a_failed_write_is_counted_and_the_next_event_starts_a_new_line() {
        let disk = Disk::default();
        disk.0.lock().unwrap().1 = 1 << 20;
        let failures = IntCounter::new("f", "f").unwrap();
        let audit = Audit {
            sink: Sink::File(Mutex::new(Box::new(disk.clone())), PathBuf::from("mem")),
            instance: "pod-1".into(),
            failures: None,
            torn: AtomicBool::new(false),
        }
        .count_failures_in(failures.clone());
        let event = |status| AuditEvent::new("verify", &Method::POST, "/v1/verify", status);
        audit.record(&event(200));
        let first = disk.0.lock().unwrap().0.len();
        disk.0.lock().unwrap().1 = first + 10;
        audit.record(&event(201));
        assert_eq!(failures.get(), 1, "the torn write is counted");
        audit.record(&event(202));
        assert_eq!(failures.get(), 2, "a refused write is counted");
        disk.0.lock().unwrap().1 = 1 << 20;
        audit.record(&event(203));
        assert_eq!(failures.get(), 2);
        let text = String::from_utf8(disk.0.lock().unwrap().0.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[1].len(), 10, "the torn line");
        let last: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(last["status"], 203);
    }

    #[test]
    fn file_sink_appends_one_json_line_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::open(path.to_str().unwrap(), "pod-1").unwrap();
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
        // Every event names the instance that wrote it.
        assert!(lines.iter().all(|l| l["instance"] == "pod-1"), "{lines:?}");
        assert!(Audit::open("/nonexistent-dir/x/audit.log", "pod-1").is_err());
    }

    #[test]
    fn body_ids_are_trimmed_bounded_and_complete_the_handlers_detail() {
        assert_eq!(body_id(None), None);
        assert_eq!(body_id(Some("  ")), None);
        assert_eq!(body_id(Some(" s1 ")).as_deref(), Some("s1"));
        let long = "é".repeat(MAX_ID_CHARS + 10);
        assert_eq!(
            body_id(Some(&long)).map(|s| s.chars().count()),
            Some(MAX_ID_CHARS)
        );
        // The handler's subject wins; the body's session fills the gap.
        let mut detail = AuditDetail {
            subject: Some("handler".into()),
            ..AuditDetail::default()
        };
        detail.complete(AuditDetail::named(Some("body"), Some("sess")));
        assert_eq!(
            (detail.subject.as_deref(), detail.session.as_deref()),
            (Some("handler"), Some("sess"))
        );
        let e = AuditEvent::new("verify", &Method::POST, "/v1/verify", 429).detail(Some(&detail));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            (&v["subject"], &v["session"]),
            (&"handler".into(), &"sess".into())
        );
        assert!(v.get("failed_attempts").is_none(), "{v}");
    }

    #[test]
    fn frames_calls_are_written_when_they_conclude_or_are_refused() {
        let verdict = AuditDetail {
            decision: Some(Decision::Reject),
            ..AuditDetail::default()
        };
        assert!(!is_recorded(SESSION_FRAMES, true, None));
        assert!(!is_recorded(
            SESSION_FRAMES,
            true,
            Some(&AuditDetail::default())
        ));
        assert!(is_recorded(SESSION_FRAMES, true, Some(&verdict)));
        assert!(is_recorded(SESSION_FRAMES, false, None));
        assert!(is_recorded("verify", true, None));
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
