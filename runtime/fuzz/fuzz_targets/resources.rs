//! `hull update --resources FILE`: parsed, normalized and validated.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hull_runtime::fuzzing::resources(data);
});
