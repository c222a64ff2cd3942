//! `facekey-operator`: reconciles `FaceKeyDeployment` resources into scanned, scaled and monitored
//! FaceKey runtime pods.
//!
//! The crate separates pure logic from I/O so most of it is testable without an API server:
//! - [`desired`], [`decode`], [`validate`], [`policy_floor`], [`conditions`], [`status`], [`scan`] and
//!   [`leader::decide`] are pure functions of their inputs (no client);
//! - [`reconcile`], [`scan_gate`], [`apply`], [`capabilities`] and [`leader`] talk to the API
//!   server through a [`kube::Client`] (a real one, or `kube-fake-client` in tests);
//! - [`controller`], [`server`] and [`metrics`] are the process glue of `facekey-operator run`;
//! - [`error`] holds one error type per reconcile stage and the category of every failure;
//!   [`events`] one struct per internal event, emitting its log line, metric and Event together.

#![forbid(unsafe_code)]

pub mod apply;
pub mod capabilities;
pub mod client;
pub mod conditions;
pub mod controller;
pub mod decode;
pub mod desired;
pub mod error;
pub mod events;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod policy_floor;
pub mod reconcile;
pub mod render;
pub mod scan;
pub mod scan_gate;
pub mod server;
pub mod status;
pub mod validate;
pub mod watching;
pub mod webhook;

pub use error::{Error, Result};

/// Field manager used for every server-side apply, so ownership of fields is attributable.
pub const FIELD_MANAGER: &str = "facekey-operator";
/// Name reported in Events and used as the `app.kubernetes.io/managed-by` label value.
pub const CONTROLLER_NAME: &str = "facekey-operator";
