//! A `linux.seccomp` profile, compiled to BPF by libseccomp.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hull_runtime::fuzzing::seccomp(data);
});
