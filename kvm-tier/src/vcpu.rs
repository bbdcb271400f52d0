//! vCPUs: their architectural set-up and the thread that runs each one.

use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::{kvm_lapic_state, kvm_msr_entry, kvm_xcrs, CpuId, Msrs};
use kvm_ioctls::{VcpuExit, VcpuFd};
use seccompiler::BpfProgram;
use thiserror::Error;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::boot::regs::{boot_fpu, boot_regs, setup_sregs, RegsError};
use crate::boot::BootEntry;
use crate::cpuid;
use crate::devices::Bus;
use crate::exit::{ExitReason, ExitSignal};
use crate::memory::GuestMemoryMmap;
use crate::seccomp::{self, ThreadKind};

/// vCPU set-up failures.
#[derive(Debug, Error)]
pub enum VcpuError {
    /// A KVM ioctl failed.
    #[error("vCPU {index}: {what}: {source}")]
    Kvm {
        /// The vCPU.
        index: u8,
        /// The operation.
        what: &'static str,
        /// The cause.
        source: kvm_ioctls::Error,
    },
    /// KVM accepted fewer MSRs than given.
    #[error("vCPU {index}: KVM set {set} of {wanted} boot MSRs")]
    Msrs {
        /// The vCPU.
        index: u8,
        /// How many were set.
        set: usize,
        /// How many were given.
        wanted: usize,
    },
    /// Building an MSR or CPUID list failed.
    #[error("vCPU {index}: building the {what} list")]
    Fam {
        /// The vCPU.
        index: u8,
        /// Which list.
        what: &'static str,
    },
    /// Writing the boot state into memory failed.
    #[error("vCPU {0}: {1}")]
    Regs(u8, RegsError),
    /// The thread could not be spawned.
    #[error("spawning the thread of vCPU {index}: {source}")]
    Spawn {
        /// The vCPU.
        index: u8,
        /// The cause.
        source: std::io::Error,
    },
    /// The kick signal handler could not be installed.
    #[error("installing the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
}

// MSR indices.
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_IA32_MISC_ENABLE_FAST_STRING: u64 = 1;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MTRR_ENABLE: u64 = 1 << 11;
const MTRR_MEM_TYPE_WB: u64 = 6;

// LAPIC local vector table registers and delivery modes.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// The MSR values every vCPU boots with.
pub fn boot_msr_entries() -> Vec<kvm_msr_entry> {
    let e = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        e(MSR_IA32_SYSENTER_CS, 0),
        e(MSR_IA32_SYSENTER_ESP, 0),
        e(MSR_IA32_SYSENTER_EIP, 0),
        e(MSR_STAR, 0),
        e(MSR_CSTAR, 0),
        e(MSR_KERNEL_GS_BASE, 0),
        e(MSR_SYSCALL_MASK, 0),
        e(MSR_LSTAR, 0),
        e(MSR_IA32_TSC, 0),
        e(MSR_IA32_MISC_ENABLE, MSR_IA32_MISC_ENABLE_FAST_STRING),
        e(MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_MEM_TYPE_WB),
    ]
}

fn lapic_reg(lapic: &kvm_lapic_state, off: usize) -> u32 {
    let b = |i: usize| lapic.regs[off + i] as u8;
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, off: usize, v: u32) {
    for (i, byte) in v.to_le_bytes().iter().enumerate() {
        lapic.regs[off + i] = *byte as _;
    }
}

fn with_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// Routes LINT0 to ExtINT (the PIC) and LINT1 to NMI, as firmware does.
pub fn setup_lapic_lints(lapic: &mut kvm_lapic_state) {
    let l0 = lapic_reg(lapic, APIC_LVT0);
    set_lapic_reg(lapic, APIC_LVT0, with_delivery_mode(l0, APIC_MODE_EXTINT));
    let l1 = lapic_reg(lapic, APIC_LVT1);
    set_lapic_reg(lapic, APIC_LVT1, with_delivery_mode(l1, APIC_MODE_NMI));
}

/// One vCPU before its thread starts.
pub struct Vcpu {
    fd: VcpuFd,
    index: u8,
}

impl Vcpu {
    /// Wraps a created vCPU.
    pub fn new(fd: VcpuFd, index: u8) -> Self {
        Self { fd, index }
    }

    fn kvm<T>(&self, what: &'static str, r: Result<T, kvm_ioctls::Error>) -> Result<T, VcpuError> {
        r.map_err(|source| VcpuError::Kvm {
            index: self.index,
            what,
            source,
        })
    }

    /// Sets CPUID, MSRs, FPU, LAPIC; the boot vCPU (`boot` given) also gets
    /// the entry registers, segments and page tables.
    pub fn configure(
        &self,
        supported: &CpuId,
        count: u8,
        mem: &GuestMemoryMmap,
        boot: Option<&BootEntry>,
    ) -> Result<(), VcpuError> {
        let mut cpuid = supported.clone();
        cpuid::filter(&mut cpuid, self.index, count);
        self.kvm("KVM_SET_CPUID2", self.fd.set_cpuid2(&cpuid))?;
        self.set_xcr0(cpuid::xcr0(&cpuid));

        let entries = boot_msr_entries();
        let msrs = Msrs::from_entries(&entries).map_err(|_| VcpuError::Fam {
            index: self.index,
            what: "MSR",
        })?;
        let set = self.kvm("KVM_SET_MSRS", self.fd.set_msrs(&msrs))?;
        if set != entries.len() {
            return Err(VcpuError::Msrs {
                index: self.index,
                set,
                wanted: entries.len(),
            });
        }

        self.kvm("KVM_SET_FPU", self.fd.set_fpu(&boot_fpu()))?;
        let mut lapic = self.kvm("KVM_GET_LAPIC", self.fd.get_lapic())?;
        setup_lapic_lints(&mut lapic);
        self.kvm("KVM_SET_LAPIC", self.fd.set_lapic(&lapic))?;

        if let Some(entry) = boot {
            let mut sregs = self.kvm("KVM_GET_SREGS", self.fd.get_sregs())?;
            setup_sregs(mem, entry.mode, &mut sregs).map_err(|e| VcpuError::Regs(self.index, e))?;
            self.kvm("KVM_SET_SREGS", self.fd.set_sregs(&sregs))?;
            self.kvm("KVM_SET_REGS", self.fd.set_regs(&boot_regs(entry)))?;
        }
        Ok(())
    }

    /// Enables the XSAVE components the CPUID offers in XCR0 from the start
    /// (KVM's reset value is x87 only), before the guest's own `XSETBV`.
    ///
    /// KVM derives CPUID 0xD.0 EBX (the XSAVE area size for the enabled
    /// components) and the XCR0 it loads on every VM entry from what it
    /// knows of the guest's XCR0. Where the guest's `XSETBV` does not exit
    /// to KVM (under QEMU TCG's SVM emulation, which lacks the XSETBV
    /// intercept: nested hosts), KVM would keep x87 only: Linux then sees
    /// EBX 576 for XCR0 0x207 and warns "XSAVE consistency problem", and
    /// AVX state would be disabled again on each VM entry. Linux enables
    /// exactly the offered components, so presetting them changes nothing
    /// where the exit works. A refusal (an older or unusual KVM) is logged.
    fn set_xcr0(&self, value: u64) {
        let mut xcrs = kvm_xcrs {
            nr_xcrs: 1,
            ..Default::default()
        };
        xcrs.xcrs[0].xcr = 0;
        xcrs.xcrs[0].value = value;
        if let Err(e) = self.fd.set_xcrs(&xcrs) {
            tracing::warn!(vcpu = self.index, xcr0 = format_args!("{value:#x}"), error = %e, "KVM_SET_XCRS refused");
        }
    }

    /// Starts the vCPU's thread.
    pub fn spawn(
        self,
        pio: Arc<Bus>,
        mmio: Arc<Bus>,
        exit: Arc<ExitSignal>,
        filter: Option<BpfProgram>,
    ) -> Result<VcpuHandle, VcpuError> {
        install_kick_handler()?;
        let index = self.index;
        let thread = std::thread::Builder::new()
            .name(format!("hull-vcpu{index}"))
            .spawn(move || {
                if let Some(f) = &filter {
                    // Fail closed: no guest code runs on an unconfined vCPU.
                    if let Err(e) = seccomp::install(ThreadKind::Vcpu, f) {
                        exit.request(ExitReason::VcpuError(format!("vCPU {index}: {e}")));
                        return;
                    }
                }
                self.run(&pio, &mmio, &exit)
            })
            .map_err(|source| VcpuError::Spawn { index, source })?;
        Ok(VcpuHandle {
            thread: Some(thread),
            index,
        })
    }

    fn run(mut self, pio: &Bus, mmio: &Bus, exit: &ExitSignal) {
        while !exit.is_set() {
            if let Some(reason) = self.run_once(pio, mmio) {
                exit.request(reason);
            }
        }
        match (self.fd.get_regs(), self.fd.get_sregs()) {
            (Ok(r), Ok(s)) => tracing::debug!(
                vcpu = self.index,
                rip = format_args!("{:#x}", r.rip),
                rsp = format_args!("{:#x}", r.rsp),
                cr0 = format_args!("{:#x}", s.cr0),
                cr3 = format_args!("{:#x}", s.cr3),
                efer = format_args!("{:#x}", s.efer),
                "vCPU thread ends"
            ),
            _ => tracing::debug!(vcpu = self.index, "vCPU thread ends"),
        }
    }

    /// Runs the guest until one exit and handles it; returns a reason when
    /// the VM must end.
    fn run_once(&mut self, pio: &Bus, mmio: &Bus) -> Option<ExitReason> {
        let index = self.index;
        match self.fd.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                if !pio.write(u64::from(port), data) {
                    tracing::trace!(vcpu = index, port, "write to unmapped port");
                }
                None
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                pio.read(u64::from(port), data);
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !mmio.read(addr, data) {
                    tracing::trace!(vcpu = index, addr, "read from unmapped MMIO");
                }
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if !mmio.write(addr, data) {
                    tracing::trace!(vcpu = index, addr, "write to unmapped MMIO");
                }
                None
            }
            Ok(VcpuExit::Hlt) => Some(ExitReason::Halted),
            Ok(VcpuExit::Shutdown) => Some(ExitReason::Shutdown),
            Ok(VcpuExit::SystemEvent(ty, _)) => Some(ExitReason::SystemEvent(ty)),
            Ok(VcpuExit::InternalError) => {
                // The suberror tells emulation failures from other internal errors.
                let sub = internal_suberror(&mut self.fd);
                Some(ExitReason::VcpuError(format!(
                    "vCPU {index}: KVM internal error, suberror {sub} (emulation failure?)"
                )))
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(ExitReason::VcpuError(format!(
                "vCPU {index}: VM entry failed, hardware reason {reason:#x} on host CPU {cpu}"
            ))),
            Ok(VcpuExit::Intr) => None,
            Ok(other) => Some(ExitReason::VcpuError(format!(
                "vCPU {index}: unhandled exit {other:?}"
            ))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.fd.set_kvm_immediate_exit(0);
                None
            }
            Err(e) => Some(ExitReason::VcpuError(format!("vCPU {index}: KVM_RUN: {e}"))),
        }
    }
}

fn internal_suberror(fd: &mut VcpuFd) -> u32 {
    let run = fd.get_kvm_run();
    // SAFETY: KVM filled the `internal` member of the exit union for
    // KVM_EXIT_INTERNAL_ERROR, the exit just handled; it is plain data.
    unsafe { run.__bindgen_anon_1.internal.suberror }
}

/// The signal used to kick a vCPU out of KVM_RUN.
fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn install_kick_handler() -> Result<(), VcpuError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(kick_signal(), kick_handler).map_err(VcpuError::Signal);
    });
    result
}

/// A running vCPU thread.
#[derive(Debug)]
pub struct VcpuHandle {
    thread: Option<JoinHandle<()>>,
    index: u8,
}

impl VcpuHandle {
    /// Kicks the vCPU out of KVM_RUN until its thread ends, then joins it.
    /// The caller must have set the exit signal first.
    pub fn stop_and_join(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        while !thread.is_finished() {
            if let Err(e) = thread.kill(kick_signal()) {
                tracing::warn!(vcpu = self.index, error = %e, "kicking vCPU failed");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if thread.join().is_err() {
            tracing::error!(vcpu = self.index, "vCPU thread panicked");
        }
    }
}
