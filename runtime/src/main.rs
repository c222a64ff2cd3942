//! `facekey-runtime` binary entry point.
fn main() {}
