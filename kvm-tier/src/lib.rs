//! hull-kvm: hull's micro-VM tier, a small KVM virtual machine monitor on
//! the rust-vmm crates.
//!
//! A [`VmConfig`] is validated, then [`Vm::start`] creates the VM (guest
//! memory backed by files a vhost-user backend can map, then the in-kernel
//! irqchip and PIT), loads the kernel (bzImage, ELF
//! `vmlinux` with or without PVH, or a flat 64-bit payload), places the
//! legacy devices on the port I/O bus and virtio-mmio devices in the MMIO
//! gap, and runs each vCPU on its own thread. [`Vm::wait`] returns the
//! guest's [`ExitReason`].
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod acpi;
pub mod boot;
pub mod config;
pub mod cpuid;
pub mod device_manager;
pub mod devices;
pub mod exit;
/// For the fuzz targets in `kvm-tier/fuzz/` and their corpus replay test only.
#[doc(hidden)]
pub mod fuzzing;
pub mod guest_image;
pub mod initramfs;
pub mod launch;
pub mod layout;
pub mod memory;
pub mod seccomp;
pub mod vcpu;
pub mod vm;

pub use config::{
    ConfigError, FsSandbox, KernelFormat, KernelKind, SerialInput, SerialOutput, VirtiofsOptions,
    VmConfig, VsockConfig, DEFAULT_CMDLINE,
};
pub use exit::{ExitReason, StopHandle};
pub use launch::{run_to_exit, FsShare, Launch, LaunchError, LaunchExit, LaunchOptions};
pub use seccomp::{SeccompLevel, ThreadKind};
pub use vm::{kvm_available, Vm, VmError};
