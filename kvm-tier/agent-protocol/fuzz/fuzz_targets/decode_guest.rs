//! Bytes from a possibly malicious guest, through the host's decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hull_agent_protocol::frame::fuzz_one_guest_stream(data);
});
