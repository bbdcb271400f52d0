//! A bundle's config.json: parsed, validated, checked and sized for the VM tier.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hull_runtime::fuzzing::config(data);
});
