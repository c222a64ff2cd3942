//! The operator's error type. Every variant has a [`Error::category`] that becomes the metric label
//! of `facekey_operator_reconcile_errors_total` and the reason of the Warning Event.

use crate::validate::InvalidSpec;

/// Errors of reconciliation, rendering and leader election.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The FaceKeyDeployment spec breaks rules the CRD schema could not express or enforce.
    #[error(transparent)]
    InvalidSpec(#[from] InvalidSpec),

    /// `render` found no FaceKeyDeployment in its input.
    #[error("no FaceKeyDeployment in the input (found: {found})")]
    NoResource {
        /// The documents found instead (`kind name`, comma-separated), or `nothing`.
        found: String,
    },

    /// The object lacks a field the API server always sets (name, namespace, uid).
    #[error("{kind} is missing {field}")]
    MissingField {
        /// Kind of the incomplete object.
        kind: &'static str,
        /// The missing field.
        field: &'static str,
    },

    /// Server-side apply of a child object failed.
    #[error("applying {kind} {name} failed: {source}")]
    Apply {
        /// Kind of the child.
        kind: String,
        /// Name of the child.
        name: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },

    /// Deleting a child that is no longer desired failed.
    #[error("pruning {kind} {name} failed: {source}")]
    Prune {
        /// Kind of the child.
        kind: String,
        /// Name of the child.
        name: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },

    /// Reading an object (or a list) from the API server failed.
    #[error("reading {what} failed: {source}")]
    Read {
        /// What was being read, e.g. `Deployment ns/name`.
        what: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },

    /// Writing the FaceKeyDeployment status failed.
    #[error("patching status of {name} failed: {source}")]
    Status {
        /// Name of the FaceKeyDeployment.
        name: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },

    /// Creating or deleting a scan Job failed.
    #[error("scan Job {name}: {source}")]
    ScanJob {
        /// Name of the Job.
        name: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },

    /// A scan report or summary could not be parsed.
    #[error("scan report {what}: {source}")]
    Report {
        /// Which report.
        what: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },

    /// A value could not be (de)serialised while computing or rendering objects.
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
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Short PascalCase category: the `kind` metric label and the Warning Event reason.
    pub fn category(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::NoResource { .. } => "NoResource",
            Error::MissingField { .. } => "MissingField",
            Error::Apply { source, .. } if is_conflict(source) => "ApplyConflict",
            Error::Apply { .. } => "ApplyFailed",
            Error::Prune { .. } => "PruneFailed",
            Error::Read { .. } => "ReadFailed",
            Error::Status { source, .. } if is_conflict(source) => "StatusConflict",
            Error::Status { .. } => "StatusFailed",
            Error::ScanJob { .. } => "ScanJobFailed",
            Error::Report { .. } => "ReportInvalid",
            Error::Serialize { .. } => "SerializeFailed",
            Error::Yaml { .. } => "YamlInvalid",
            Error::Io { .. } => "IoFailed",
            Error::Metrics(_) => "MetricsFailed",
            Error::Lease { .. } => "LeaseFailed",
        }
    }

    /// Whether retrying cannot help until the spec changes (no fast requeue).
    pub fn is_permanent(&self) -> bool {
        matches!(self, Error::InvalidSpec(_))
    }
}

/// Whether a kube error is an HTTP 409 Conflict.
pub fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

/// Whether a kube error is an HTTP 404 Not Found.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}
