//! Bytes from the host, through the agent's decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hull_agent_protocol::frame::fuzz_one_host_stream(data);
});
