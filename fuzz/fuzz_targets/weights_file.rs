//! The fusion weights file: any text is refused with an error or gives weights whose forward
//! pass on valid features is a probability in [0, 1] (or NaN, which must then be rejected, never
//! accepted), without a panic.
#![no_main]

use facekey_runtime::decision::Decision;
use facekey_runtime::fusion::FusionMlp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mlp) = FusionMlp::from_json_str(text, "fuzz") else {
        return;
    };
    for x in [
        [1.0, 0.5, -1.0],
        [0.0, 0.0, 0.0],
        [1.0, 1.0, 1.0],
        [0.5, 0.0, -1.0],
    ] {
        let p = mlp.forward(&x).probability;
        assert!(p.is_nan() || (0.0..=1.0).contains(&p), "probability {p}");
        if p.is_nan() {
            let t = mlp.recommended_threshold().unwrap_or(0.5);
            assert_eq!(Decision::at_least(p, t), Decision::Reject);
        }
    }
});
