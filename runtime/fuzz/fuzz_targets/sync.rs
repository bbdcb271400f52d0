//! Frames on the parent/init sync socket (first byte: 0 = to init, 1 = from init).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hull_runtime::fuzzing::sync(data);
});
