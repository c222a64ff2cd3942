//! FaceKey runtime: the face verification inference server as a library, so tests and benches
//! drive the same code the `facekey-runtime` binary serves.

pub mod admission;
pub mod alerts;
pub mod api;
pub mod audit;
pub mod auth;
pub mod baseline;
pub mod body_budget;
pub mod challenge;
pub mod config;
pub mod decision;
pub mod early_health;
pub mod engine;
pub mod enrolments;
pub mod fusion;
pub mod http_server;
pub mod lockout;
pub mod lockout_file;
pub mod memory_check;
pub mod metrics;
pub mod private_file;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod verifier;
pub mod vision;
