//! The operator's errors: one typed error per reconcile stage, and the crate's [`Error`] around
//! them. Every failure has exactly one [`Error::category`], decided here: the `kind` label of
//! `facekey_operator_reconcile_errors_total` and the reason of the Warning Event.

use crate::validate::InvalidSpec;

/// An object lacks a field the API server always sets (name, namespace, uid).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} is missing {field}")]
pub struct MissingField {
    /// Kind of the incomplete object.
    pub kind: &'static str,
    /// The missing field.
    pub field: &'static str,
}

/// Reading an object (or a list) from the API server failed.
#[derive(Debug, thiserror::Error)]
#[error("reading {what} failed: {source}")]
pub struct ReadError {
    /// What was being read, e.g. `Deployment ns/name`.
    pub what: String,
    /// The API error.
    #[source]
    pub source: Box<kube::Error>,
}

impl ReadError {
    /// For `map_err`: wrap a kube error from reading `what`.
    pub fn of(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| Self {
            what,
            source: Box::new(source),
        }
    }
}

/// Observe stage: the resource's identity, the optional CRDs and the live Deployment.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The FaceKeyDeployment lacks its name, namespace or uid.
    #[error(transparent)]
    MissingField(#[from] MissingField),
    /// CRD discovery or reading the live Deployment failed.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Scan gate stage: finding or producing a scan report for `spec.image`.
#[derive(Debug, thiserror::Error)]
pub enum ScanGateError {
    /// Listing reports, reading the Job or its pods failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Creating or deleting a scan Job failed.
    #[error("scan Job {name}: {source}")]
    Job {
        /// Name of the Job.
        name: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The scan Job object could not be computed.
    #[error(transparent)]
    Desired(#[from] DesiredError),
}

/// Desired-state stage (pure): the objects the resource should own.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    /// The spec is invalid (checked again, so `render` refuses it too).
    #[error(transparent)]
    InvalidSpec(#[from] InvalidSpec),
    /// The FaceKeyDeployment has no name.
    #[error(transparent)]
    MissingField(#[from] MissingField),
    /// An object could not be serialised to JSON.
    #[error("serialising {what}: {source}")]
    Serialize {
        /// What was being serialised.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

/// Apply stage: server-side apply of every desired object.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Listing the existing children (the ownership check's inventory) failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The API server refused an apply.
    #[error("applying {kind} {name} failed: {source}")]
    Patch {
        /// Kind of the child.
        kind: &'static str,
        /// Name of the child.
        name: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The API server refused to create a generated object (other than "already exists").
    #[error("creating {kind} {name} failed: {source}")]
    Create {
        /// Kind of the object.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// No random bytes for a generated template key.
    #[error("generating the template key for Secret {name} failed: {source}")]
    KeyGeneration {
        /// The Secret's name.
        name: String,
        /// The operating system's error.
        #[source]
        source: getrandom::Error,
    },
    /// Objects the operator would apply exist without this resource as their controller owner:
    /// they are left alone (not taken over); everything else was applied.
    #[error(
        "{} exist{} and {} not owned by this FaceKeyDeployment (no controller ownerReference to \
         it; for a retained claim or Cluster, not its labels): not taken over; delete or rename {}",
        objects.join(", "),
        if objects.len() == 1 { "s" } else { "" },
        if objects.len() == 1 { "is" } else { "are" },
        if objects.len() == 1 { "it" } else { "them" }
    )]
    NotOwned {
        /// `Kind namespace/name` of each.
        objects: Vec<String>,
    },
    /// Objects with a child's name still controlled by a deleted FaceKeyDeployment of this name
    /// (deleted and created again, its children not yet removed by the garbage collector): not
    /// taken over; retried with backoff until they are gone.
    #[error(
        "{} still belong{} to a deleted FaceKeyDeployment of this name; waiting for the garbage \
         collector to remove {} (a claim goes once the pods using it are gone)",
        objects.join(", "),
        if objects.len() == 1 { "s" } else { "" },
        if objects.len() == 1 { "it" } else { "them" }
    )]
    AwaitingDeletion {
        /// `Kind namespace/name` of each.
        objects: Vec<String>,
    },
    /// The applied Deployment the server returned could not be read back.
    #[error("serialising {what}: {source}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

/// Prune stage: owned objects no longer desired, finished scan Jobs of other images.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// Listing a child kind or the scan Jobs failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Deleting a child that is no longer desired failed.
    #[error("pruning {kind} {name} failed: {source}")]
    Delete {
        /// Kind of the child.
        kind: &'static str,
        /// Name of the child.
        name: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Deleting a finished scan Job failed.
    #[error("scan Job {name}: {source}")]
    ScanJob {
        /// Name of the Job.
        name: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
}

/// Status stage: writing the FaceKeyDeployment status failed.
#[derive(Debug, thiserror::Error)]
#[error("patching status of {name} failed: {source}")]
pub struct StatusError {
    /// Name of the FaceKeyDeployment.
    pub name: String,
    /// The API error.
    #[source]
    pub source: Box<kube::Error>,
}

/// Errors of reconciliation (one variant per stage), rendering and the process around them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Observe stage.
    #[error(transparent)]
    Observe(#[from] ObserveError),
    /// Validate stage: the spec breaks rules the CRD schema could not express or enforce.
    #[error(transparent)]
    InvalidSpec(#[from] InvalidSpec),
    /// Scan gate stage.
    #[error(transparent)]
    ScanGate(#[from] ScanGateError),
    /// Desired-state stage.
    #[error(transparent)]
    Desired(#[from] DesiredError),
    /// Apply stage.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Prune stage.
    #[error(transparent)]
    Prune(#[from] PruneError),
    /// Status stage.
    #[error(transparent)]
    Status(#[from] StatusError),

    /// A read outside reconcile, e.g. the client configuration.
    #[error(transparent)]
    Read(#[from] ReadError),

    /// `render` found no FaceKeyDeployment in its input.
    #[error("no FaceKeyDeployment in the input (found: {found})")]
    NoResource {
        /// The documents found instead (`kind name`, comma-separated), or `nothing`.
        found: String,
    },

    /// A value could not be (de)serialised while rendering objects.
    #[error("serialising {what}: {source}")]
    Serialize {
        /// What was being serialised.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// YAML input or output of `render` failed.
    #[error("YAML {what}: {source}")]
    Yaml {
        /// Which document.
        what: String,
        /// The YAML error.
        #[source]
        source: serde_yaml::Error,
    },

    /// Reading or writing a local file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The operator's metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[source] prometheus::Error),

    /// Leader election through the Lease failed.
    #[error("leader election: {source}")]
    Lease {
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A Lease call did not answer within its timeout.
    #[error("leader election: the Lease {call} did not answer within {after:?}")]
    LeaseTimeout {
        /// `get`, `create` or `replace`.
        call: &'static str,
        /// The per-call timeout.
        after: std::time::Duration,
    },
    /// This replica lost the leader Lease: the reconcile stopped before writing.
    #[error("this replica no longer holds the leader Lease; stopped before writing")]
    NotLeader,
    /// A reconcile did not finish within `reconcile::RECONCILE_TIMEOUT`: an API call got no
    /// answer. Retried with backoff.
    #[error(
        "the reconcile did not finish within {after:?}: an API call got no answer; abandoned and retried"
    )]
    Timeout {
        /// The reconcile timeout.
        after: std::time::Duration,
    },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

const INVALID_SPEC: &str = "InvalidSpec";
const MISSING_FIELD: &str = "MissingField";
const READ_FAILED: &str = "ReadFailed";
const SERIALIZE_FAILED: &str = "SerializeFailed";
const SCAN_JOB_FAILED: &str = "ScanJobFailed";
/// Category (and `Conflict` reason) of [`ApplyError::NotOwned`].
pub const OBJECT_NOT_OWNED: &str = "ObjectNotOwned";

impl ObserveError {
    /// See [`Error::category`].
    pub fn category(&self) -> &'static str {
        match self {
            ObserveError::MissingField(_) => MISSING_FIELD,
            ObserveError::Read(_) => READ_FAILED,
        }
    }
}

impl ScanGateError {
    /// See [`Error::category`].
    pub fn category(&self) -> &'static str {
        match self {
            ScanGateError::Read(_) => READ_FAILED,
            ScanGateError::Job { .. } => SCAN_JOB_FAILED,
            ScanGateError::Desired(e) => e.category(),
        }
    }
}

impl DesiredError {
    /// See [`Error::category`].
    pub fn category(&self) -> &'static str {
        match self {
            DesiredError::InvalidSpec(_) => INVALID_SPEC,
            DesiredError::MissingField(_) => MISSING_FIELD,
            DesiredError::Serialize { .. } => SERIALIZE_FAILED,
        }
    }
}

impl ApplyError {
    /// See [`Error::category`].
    pub fn category(&self) -> &'static str {
        match self {
            ApplyError::Patch { source, .. } if is_conflict(source) => "ApplyConflict",
            ApplyError::Patch { .. }
            | ApplyError::Create { .. }
            | ApplyError::KeyGeneration { .. } => "ApplyFailed",
            ApplyError::Decode { .. } => SERIALIZE_FAILED,
            ApplyError::NotOwned { .. } => OBJECT_NOT_OWNED,
            ApplyError::AwaitingDeletion { .. } => "AwaitingDeletion",
            ApplyError::Read(_) => READ_FAILED,
        }
    }
}

impl PruneError {
    /// See [`Error::category`].
    pub fn category(&self) -> &'static str {
        match self {
            PruneError::Read(_) => READ_FAILED,
            PruneError::Delete { .. } => "PruneFailed",
            PruneError::ScanJob { .. } => SCAN_JOB_FAILED,
        }
    }
}

impl StatusError {
    /// See [`Error::category`].
    pub fn category(&self) -> &'static str {
        if is_conflict(&self.source) {
            "StatusConflict"
        } else {
            "StatusFailed"
        }
    }
}

impl Error {
    /// Short PascalCase category: the `kind` metric label and the Warning Event reason.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Observe(e) => e.category(),
            Error::InvalidSpec(_) => INVALID_SPEC,
            Error::ScanGate(e) => e.category(),
            Error::Desired(e) => e.category(),
            Error::Apply(e) => e.category(),
            Error::Prune(e) => e.category(),
            Error::Status(e) => e.category(),
            Error::Read(_) => READ_FAILED,
            Error::NoResource { .. } => "NoResource",
            Error::Serialize { .. } => SERIALIZE_FAILED,
            Error::Yaml { .. } => "YamlInvalid",
            Error::Io { .. } => "IoFailed",
            Error::Metrics(_) => "MetricsFailed",
            Error::Lease { .. } | Error::LeaseTimeout { .. } => "LeaseFailed",
            Error::NotLeader => "NotLeader",
            Error::Timeout { .. } => "Timeout",
        }
    }

    /// Whether retrying cannot help until the resource changes (no requeue): an invalid spec or
    /// name, a resource without name/namespace/uid, an object the operator cannot serialise.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Error::InvalidSpec(_)
                | Error::Desired(_)
                | Error::Observe(ObserveError::MissingField(_))
        )
    }

    /// Whether the API server refused the request itself: a write answered 400, 403, 404, 405,
    /// 413, 415 or 422, or a read of any reconcile stage (the observe stage's, the scan gate's
    /// reports, Jobs and pods, the apply stage's inventory of children, the pruner's lists)
    /// answered the same but 404, e.g. a 403 of a missing RBAC rule. The same request fails
    /// again, so it is retried only at the steady interval, not in a fast backoff loop, and the
    /// status says `Stalled`. 409 (conflict), 429 and 5xx are transient, and so is a 404 on a
    /// read: a list of a kind whose CRD went away since discovery, which the next discovery sees.
    pub fn is_refused(&self) -> bool {
        match self {
            Error::Apply(ApplyError::Patch { source, .. } | ApplyError::Create { source, .. })
            | Error::Prune(
                PruneError::Delete { source, .. } | PruneError::ScanJob { source, .. },
            )
            | Error::ScanGate(ScanGateError::Job { source, .. })
            | Error::Status(StatusError { source, .. }) => is_refusal(source),
            Error::Observe(ObserveError::Read(read))
            | Error::ScanGate(ScanGateError::Read(read))
            | Error::Apply(ApplyError::Read(read))
            | Error::Prune(PruneError::Read(read)) => read.is_refused(),
            // Only a human resolves it (the Warning Event and `Conflict` say so).
            Error::Apply(ApplyError::NotOwned { .. }) => true,
            _ => false,
        }
    }
}

impl ReadError {
    /// Whether the API server refused the read itself ([`is_refusal`] but 404: a kind no
    /// longer served is seen by the next capability discovery, so a 404 read is retried soon).
    pub fn is_refused(&self) -> bool {
        is_refusal(&self.source) && !is_not_found(&self.source)
    }
}

/// Whether the API server refused a request itself (400, 403, 404, 405, 413, 415, 422): sending
/// it again fails again (for a read, 404 aside: [`ReadError::is_refused`]). See
/// [`Error::is_refused`].
pub fn is_refusal(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if matches!(s.code, 400 | 403 | 404 | 405 | 413 | 415 | 422))
}

/// Whether a kube error is an HTTP 409 Conflict.
pub fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

/// Whether a kube error is an HTTP 404 Not Found.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::validate::Problem;

    fn api_error(code: u16) -> Box<kube::Error> {
        Box::new(kube::Error::Api(Box::new(
            kube::core::Status::failure("test", "Test").with_code(code),
        )))
    }

    /// The category strings are the metric labels and Event reasons users alert on: pinned.
    #[test]
    fn every_stage_error_keeps_its_category() {
        let invalid = || InvalidSpec {
            problems: vec![Problem::EmptyImage],
        };
        let read = || ReadError {
            what: "x".into(),
            source: api_error(500),
        };
        let missing = || MissingField {
            kind: "FaceKeyDeployment",
            field: "metadata.uid",
        };
        let serde = || serde_json::from_str::<u8>("x").unwrap_err();
        let cases: Vec<(Error, &str)> = vec![
            (ObserveError::from(missing()).into(), "MissingField"),
            (ObserveError::from(read()).into(), "ReadFailed"),
            (invalid().into(), "InvalidSpec"),
            (DesiredError::from(invalid()).into(), "InvalidSpec"),
            (DesiredError::from(missing()).into(), "MissingField"),
            (
                DesiredError::Serialize {
                    what: "x".into(),
                    source: serde(),
                }
                .into(),
                "SerializeFailed",
            ),
            (ScanGateError::from(read()).into(), "ReadFailed"),
            (
                ScanGateError::Job {
                    name: "j".into(),
                    source: api_error(500),
                }
                .into(),
                "ScanJobFailed",
            ),
            (
                ApplyError::Patch {
                    kind: "Deployment",
                    name: "fk".into(),
                    source: api_error(409),
                }
                .into(),
                "ApplyConflict",
            ),
            (
                ApplyError::Patch {
                    kind: "Deployment",
                    name: "fk".into(),
                    source: api_error(500),
                }
                .into(),
                "ApplyFailed",
            ),
            (
                ApplyError::Create {
                    kind: "Secret",
                    name: "fk-template-key".into(),
                    source: api_error(403),
                }
                .into(),
                "ApplyFailed",
            ),
            (
                ApplyError::Decode {
                    what: "applied Deployment".into(),
                    source: serde(),
                }
                .into(),
                "SerializeFailed",
            ),
            (PruneError::from(read()).into(), "ReadFailed"),
            (
                PruneError::Delete {
                    kind: "Service",
                    name: "fk".into(),
                    source: api_error(500),
                }
                .into(),
                "PruneFailed",
            ),
            (
                PruneError::ScanJob {
                    name: "j".into(),
                    source: api_error(500),
                }
                .into(),
                "ScanJobFailed",
            ),
            (
                StatusError {
                    name: "fk".into(),
                    source: api_error(409),
                }
                .into(),
                "StatusConflict",
            ),
            (
                StatusError {
                    name: "fk".into(),
                    source: api_error(500),
                }
                .into(),
                "StatusFailed",
            ),
        ];
        for (err, category) in cases {
            assert_eq!(err.category(), category, "{err}");
            let permanent = matches!(category, "InvalidSpec" | "MissingField" | "SerializeFailed")
                && !matches!(err, Error::Apply(_));
            assert_eq!(err.is_permanent(), permanent, "{err}");
            // The only 403 of the cases: refused; 409 and 500 are transient.
            let refused = matches!(err, Error::Apply(ApplyError::Create { .. }));
            assert_eq!(err.is_refused(), refused, "{err}");
        }
    }

    /// A read the API server refuses (a 403 of a missing RBAC rule: `list` on
    /// vulnerabilityreports, servicemonitors, jobs) is refused in every reconcile stage, as in
    /// the observe stage: retried at the steady interval and reported `Stalled`, not retried in
    /// backoff with `Reconciling` True for ever. 404 (a kind whose CRD went away), 429 and 5xx
    /// are transient.
    #[test]
    fn a_refused_read_is_refused_in_every_stage() {
        let read = |code| ReadError {
            what: "x".into(),
            source: api_error(code),
        };
        let in_every_stage = |code: u16| -> Vec<Error> {
            vec![
                ObserveError::from(read(code)).into(),
                ScanGateError::from(read(code)).into(),
                ApplyError::from(read(code)).into(),
                PruneError::from(read(code)).into(),
            ]
        };
        for code in [400, 403, 405, 422] {
            for err in in_every_stage(code) {
                assert!(err.is_refused(), "{code}: {err:?}");
                assert_eq!(err.category(), "ReadFailed", "{err:?}");
                assert!(!err.is_permanent(), "{err:?}");
            }
        }
        for code in [404, 409, 429, 500, 503] {
            for err in in_every_stage(code) {
                assert!(!err.is_refused(), "{code}: {err:?}");
            }
        }
    }

    #[test]
    fn stage_errors_keep_their_source() {
        use std::error::Error as _;
        let err = Error::from(ApplyError::Patch {
            kind: "Service",
            name: "fk".into(),
            source: api_error(500),
        });
        assert!(err.to_string().starts_with("applying Service fk failed: "));
        let source = err.source().map(ToString::to_string);
        assert!(source.is_some_and(|s| s.contains("test")), "{err:?}");
    }
}
