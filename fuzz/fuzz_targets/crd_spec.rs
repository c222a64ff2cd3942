//! The FaceKeyDeployment spec as the operator receives it: any JSON that deserialises into the
//! spec is validated (the operator's twin of the CRD's CEL rules) without a panic, and the
//! resource name check takes any string.
#![no_main]

use facekey_crds::FaceKeyDeploymentSpec;
use facekey_operator::validate::{validate, validate_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(name) = std::str::from_utf8(data) {
        let _ = validate_name(name);
    }
    if let Ok(spec) = serde_json::from_slice::<FaceKeyDeploymentSpec>(data) {
        let _ = validate(&spec);
    }
});
