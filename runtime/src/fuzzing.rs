//! The code each fuzz target in `runtime/fuzz/` runs on one input. It exists for those
//! targets and for `tests/fuzz_corpus.rs`, which replays their corpora on stable, so that
//! both exercise the same paths; it is not an API.
//!
//! Every function follows what the runtime does with such bytes from an untrusted source,
//! and returns the first error as text (a "clear Err"): a panic is the only failure.

use std::path::Path;

use oci_spec::runtime::{LinuxResources, LinuxSeccomp, Process};

/// `config.json`: parsed as `load_bundle` does, validated as `create` does (less the
/// rootfs stat), then the VM tier's checks and sizing.
pub fn config(data: &[u8]) -> Result<(), String> {
    let spec = hull_specs::parse_config(data, Path::new("config.json")).map_err(text)?;
    hull_specs::validate_spec(&spec).map_err(text)?;
    hull_specs::vm::check_vm_supported(&spec).map_err(text)?;
    for host_cpus in [1, 64] {
        hull_specs::vm::vm_size(&spec, host_cpus).map_err(text)?;
    }
    Ok(())
}

/// `hull exec --process FILE`: parsed as the CLI does, checked as [`crate::exec`] does.
pub fn process(data: &[u8]) -> Result<(), String> {
    let process: Process = hull_specs::parse_json_naming_field(data)?;
    crate::exec::validate_process(&process).map_err(text)
}

/// `linux.seccomp`: a profile compiled to BPF by libseccomp (no filter is loaded).
pub fn seccomp(data: &[u8]) -> Result<(), String> {
    let profile: LinuxSeccomp = hull_specs::parse_json_naming_field(data)?;
    let filter = crate::seccomp::compile(&profile).map_err(text)?;
    let compiled = filter.to_compiled();
    serde_json::to_vec(&compiled).map_err(text)?;
    Ok(())
}

/// `hull update --resources FILE`: parsed as the CLI does, normalized and validated as
/// `Cgroup::update` does before it looks at the host.
pub fn resources(data: &[u8]) -> Result<(), String> {
    let res: LinuxResources = hull_specs::parse_json_naming_field(data)?;
    let res = crate::cgroups::normalize_resources(&res);
    hull_specs::validate_resources(&res).map_err(text)
}

/// The parent/init conversation: the first byte picks which side's messages the rest is
/// decoded as (init reads [`ToInit`](hull_inside::sync::ToInit), the parent reads
/// [`FromInit`](hull_inside::sync::FromInit)); frames are decoded until one fails, as
/// `recv` would on the socket.
pub fn sync(data: &[u8]) -> Result<(), String> {
    use hull_inside::sync::{decode, FromInit, ToInit};
    let Some((&which, mut rest)) = data.split_first() else {
        return Err("empty input".into());
    };
    loop {
        let r = if which & 1 == 0 {
            decode::<ToInit>(&mut rest).map(drop)
        } else {
            decode::<FromInit>(&mut rest).map(drop)
        };
        r.map_err(text)?;
    }
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}
