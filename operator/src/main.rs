//! `facekey-operator`: reconciles FaceKeyDeployment resources into scanned, monitored runtime pods.

fn main() {}
