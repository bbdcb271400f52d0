//! `hull exec --process FILE`: the process.json parsed and validated.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hull_runtime::fuzzing::process(data);
});
