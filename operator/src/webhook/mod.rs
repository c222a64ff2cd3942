//! The mutating admission webhook injecting the FaceKey runtime as a native sidecar into
//! application pods annotated `facekey.dev/inject: <FaceKeyDeployment name>`.
//!
//! - [`inject`]: the decision and its JSON patch (pure);
//! - [`review`]: AdmissionReview v1 in and out (pure but for the lookup);
//! - [`certs`]: the private CA and serving certificate, issued and rotated (pure);
//! - [`server`]: the HTTPS server with a certificate swapped in place on rotation;
//! - [`events`]: Events about pods that did not get their sidecar;
//! - [`manage`]: the certificate Secret and the configuration's `caBundle`, kept current;
//! - [`sidecars`]: the count of injected and outdated pods in `status.sidecar`.

pub mod certs;
pub mod events;
pub mod inject;
pub mod manage;
pub mod review;
pub mod server;
pub mod sidecars;

pub use inject::{Decision, InjectOptions, NotInjectedReason, OPT_OUT_ANNOTATION};
