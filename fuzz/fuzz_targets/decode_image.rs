//! Image decoding under the runtime's limits: any bytes give an image within the limits or an
//! error, never a panic, a hang or an allocation beyond the pixel limit.
#![no_main]

use facekey_runtime::vision::decode::{DecodeLimits, decode_image};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits::default();
    if let Ok(img) = decode_image(data, &limits) {
        assert!(img.width() <= limits.max_dimension && img.height() <= limits.max_dimension);
        assert!(u64::from(img.width()) * u64::from(img.height()) <= limits.max_pixels);
    }
});
