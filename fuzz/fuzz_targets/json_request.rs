//! JSON request bodies through the real application: the first byte picks the endpoint and
//! method, the rest is the body (deep, huge, wrong types, out-of-range numbers, base64 images).
#![no_main]

use facekey_fuzz::{app, check_answer};
use libfuzzer_sys::fuzz_target;

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/score"),
    ("POST", "/v1/subjects"),
    ("PATCH", "/v1/subjects/x"),
    ("POST", "/v1/verify"),
    ("POST", "/v1/identify"),
    ("POST", "/v1/liveness"),
    ("POST", "/v1/liveness/sessions"),
    ("POST", "/v1/liveness/sessions/x/frames"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (method, path) = ROUTES[usize::from(pick) % ROUTES.len()];
    let (status, answer) = app().call(method, path, "application/json", body.to_vec());
    check_answer(status, &answer);
});
