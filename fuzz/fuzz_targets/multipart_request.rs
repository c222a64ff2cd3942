//! Multipart uploads through the real application (auth, body limits, the image extractor, the
//! handlers' field checks): the first byte picks the endpoint, the rest is the body.
#![no_main]

use facekey_fuzz::{BOUNDARY, app, check_answer};
use libfuzzer_sys::fuzz_target;

const PATHS: &[&str] = &[
    "/v1/verify",
    "/v1/identify",
    "/v1/liveness",
    "/v1/subjects/x/faces",
    "/v1/liveness/sessions/x/frames",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let path = PATHS[usize::from(pick) % PATHS.len()];
    let (status, answer) = app().call(
        "POST",
        path,
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        body.to_vec(),
    );
    check_answer(status, &answer);
});
