//! Base64 images as JSON requests carry them (`data:` prefix, either alphabet, lenient padding):
//! decoding any text is bytes within the limit or an API error, and those bytes then decode as
//! an image or fail cleanly.
#![no_main]

use facekey_runtime::api::image_input::decode_base64_image;
use facekey_runtime::vision::decode::{DecodeLimits, decode_image};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(bytes) = decode_base64_image(text, LIMIT) {
        assert!(bytes.len() <= LIMIT);
        let _ = decode_image(&bytes, &DecodeLimits::default());
    }
});
