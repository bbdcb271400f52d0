//! `hull vps`: partitions a hoster sells as virtual private servers — long-lived system
//! containers (systemd as PID 1) with their own disk image, id range, limits and console,
//! each kept by a small monitor process. Built on `hull_runtime`'s library API.

pub mod disk;
pub mod idshift;
