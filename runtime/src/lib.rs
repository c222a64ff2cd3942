//! FaceKey runtime: the face verification inference server as a library, so tests and benches
//! drive the same code the `facekey-runtime` binary serves.

pub mod vision;
