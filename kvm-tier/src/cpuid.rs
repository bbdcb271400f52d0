//! The CPUID a vCPU sees: what KVM supports, filtered per vCPU.
//!
//! Like Firecracker and Cloud Hypervisor, hull keeps KVM's leaf 0xD (the
//! XSAVE components KVM and the host support) but drops what the micro-VM
//! does not offer: AMX, whose tile data is a dynamic feature that needs a
//! permission request (`ARCH_REQ_XCOMP_GUEST_PERM`) hull does not make,
//! and every performance-monitoring feature (the machine has no PMU).

use kvm_bindings::{kvm_enable_cap, CpuId, KVM_CAP_PMU_CAPABILITY, KVM_PMU_CAP_DISABLE};
use kvm_ioctls::{Cap, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VmFd};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_EXT_FEATURES: u32 = 0x7;
const LEAF_PMU: u32 = 0xa;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_XSAVE: u32 = 0xd;
const LEAF_AMX_TILE: u32 = 0x1d;
const LEAF_AMX_TMUL: u32 = 0x1e;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_AMD_EXT_FEATURES: u32 = 0x8000_0001;
const LEAF_AMD_PERFMON_V2: u32 = 0x8000_0022;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
/// Leaf 7.0 EDX: AMX-BF16, AMX-TILE, AMX-INT8.
const EDX7_AMX: u32 = (1 << 22) | (1 << 24) | (1 << 25);
/// Leaf 0x8000_0001 ECX: core, northbridge and last-level-cache perf
/// counter extensions (AMD).
const ECX_AMD_PERFCTR: u32 = (1 << 23) | (1 << 24) | (1 << 28);
/// XSAVE components: x87 (always enabled), AMX tile config and data.
const XFEATURE_FP: u64 = 1 << 0;
const XFEATURE_XTILE: u64 = (1 << 17) | (1 << 18);
/// Size of the XSAVE legacy area plus header.
const XSAVE_LEGACY_AND_HEADER: u32 = 512 + 64;

/// The XCR0 value enabling every XSAVE component `cpuid` offers (leaf
/// 0xD.0 EAX | EDX << 32, and x87, which XCR0 always has). A Linux guest
/// enables exactly these (the components it knows; hull offers no others).
pub fn xcr0(cpuid: &CpuId) -> u64 {
    cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == LEAF_XSAVE && e.index == 0)
        .map_or(XFEATURE_FP, |e| {
            u64::from(e.eax) | (u64::from(e.edx) << 32) | XFEATURE_FP
        })
}

/// Drops XSAVE components hull does not offer (AMX) from leaf 0xD and
/// recomputes the size of the XSAVE area for all offered components
/// (0xD.0 ECX). EBX (size for the current XCR0) is KVM's to compute.
fn normalise_xsave(cpuid: &mut CpuId) {
    let mut offered = None;
    let mut max_size = XSAVE_LEGACY_AND_HEADER;
    for e in cpuid.as_mut_slice() {
        if e.function != LEAF_XSAVE {
            continue;
        }
        match e.index {
            0 => {
                let mask = (u64::from(e.eax) | (u64::from(e.edx) << 32)) & !XFEATURE_XTILE;
                e.eax = mask as u32;
                e.edx = (mask >> 32) as u32;
                offered = Some(mask);
            }
            1 => {}
            i if i < 64 && XFEATURE_XTILE & (1 << i) != 0 => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            _ => {}
        }
    }
    let Some(offered) = offered else { return };
    for e in cpuid.as_slice() {
        // Subleaves 2..63 of user components (ECX bit 0 clear): EAX size,
        // EBX offset in the standard format.
        if e.function == LEAF_XSAVE
            && (2..64).contains(&e.index)
            && offered & (1 << e.index) != 0
            && e.ecx & 1 == 0
        {
            max_size = max_size.max(e.ebx.saturating_add(e.eax));
        }
    }
    for e in cpuid.as_mut_slice() {
        if e.function == LEAF_XSAVE && e.index == 0 {
            e.ecx = max_size;
        }
    }
}

/// The legacy performance-counter MSRs a guest probes without asking
/// CPUID: AMD K7 (family 6 and later: event selects 0xc0010000-3,
/// counters 0xc0010004-7) and Intel P6 (0xc1-0xc2 counters, 0x186-0x187
/// event selects). `(first MSR, count)`.
pub const LEGACY_PERF_MSRS: [(u32, u32); 3] = [(0xc001_0000, 8), (0xc1, 2), (0x186, 2)];

/// The micro-VM has no PMU. Where KVM allows it, the VM's vPMU is
/// disabled (`KVM_PMU_CAP_DISABLE`, before any vCPU exists), and
/// ([`filter_legacy_perf_msrs`]) the legacy counter MSRs are filtered so
/// the guest's accesses fault (#GP)
/// like on a CPU without them. Without the filter KVM answers reads of a
/// disabled PMU's counters with 0 and drops writes, but logs each non-zero
/// write (`Unhandled WRMSR(0xc0010007) = 0xffff` from Linux's AMD PMU
/// probe, `check_hw_exists`); with it, the probe's first read faults and
/// Linux settles for software events, as before, quietly.
pub fn hide_pmu(vm: &VmFd) {
    if vm.check_extension_raw(u64::from(KVM_CAP_PMU_CAPABILITY)) as u32 & KVM_PMU_CAP_DISABLE != 0 {
        let cap = kvm_enable_cap {
            cap: KVM_CAP_PMU_CAPABILITY,
            args: [u64::from(KVM_PMU_CAP_DISABLE), 0, 0, 0],
            ..Default::default()
        };
        if let Err(e) = vm.enable_cap(&cap) {
            tracing::debug!(error = %e, "KVM_PMU_CAP_DISABLE refused");
        }
    }
}

/// The MSR filter half of [`hide_pmu`]: the legacy perf counter MSRs fault. The ioctl
/// waits for an SRCU grace period (14 ms on the development host, more than the rest of
/// `Vm::start`), so `Vm::start` runs it on a thread while it writes the kernel.
pub fn filter_legacy_perf_msrs(vm: &VmFd) {
    if !vm.check_extension(Cap::X86MsrFilter) {
        tracing::debug!("no KVM MSR filter: legacy perf counter MSRs stay readable");
        return;
    }
    // A clear bit denies the MSR; one byte covers up to 8 MSRs.
    let deny = [0u8; 1];
    let ranges: Vec<MsrFilterRange<'_>> = LEGACY_PERF_MSRS
        .iter()
        .map(|&(base, msr_count)| MsrFilterRange {
            flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
            base,
            msr_count,
            bitmap: &deny,
        })
        .collect();
    if let Err(e) = vm.set_msr_filter(MsrFilterDefaultAction::ALLOW, &ranges) {
        tracing::warn!(error = %e, "KVM_X86_SET_MSR_FILTER refused");
    }
}

/// Adjusts KVM's supported CPUID for vCPU `index` of `count`:
/// APIC ids, logical processor count, the hypervisor bit, the x2APIC ids of
/// the topology leaves; hides the PMU (no perf counters in the micro-VM)
/// and AMX (see the module documentation).
pub fn filter(cpuid: &mut CpuId, index: u8, count: u8) {
    normalise_xsave(cpuid);
    for e in cpuid.as_mut_slice() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(index) << 24) | (u32::from(count) << 16);
                e.ecx |= ECX_HYPERVISOR;
                if count > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_EXT_FEATURES if e.index == 0 => e.edx &= !EDX7_AMX,
            LEAF_AMD_EXT_FEATURES => e.ecx &= !ECX_AMD_PERFCTR,
            LEAF_PMU | LEAF_AMX_TILE | LEAF_AMX_TMUL | LEAF_AMD_PERFMON_V2 => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
                e.edx = u32::from(index);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn sets_apic_id_and_hypervisor_bit() {
        let mut c = CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xffff_ffff,
                edx: EDX_HTT,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xa,
                eax: 7,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                ..Default::default()
            },
        ])
        .unwrap();
        filter(&mut c, 3, 4);
        let e = c.as_slice();
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_eq!(e[1].eax, 0);
        assert_eq!(e[2].edx, 3);
        filter(&mut c, 0, 1);
        assert_eq!(c.as_slice()[0].edx & EDX_HTT, 0);
    }

    fn leaf(function: u32, index: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        }
    }

    #[test]
    fn xsave_leaf_keeps_kvm_components_but_drops_amx() {
        // x87 | SSE | AVX | PKRU (0x207) and AMX tile config/data (17, 18).
        let mut c = CpuId::from_entries(&[
            leaf(0xd, 0, 0x6_0207, 0x240, 0x2b00, 0),
            leaf(0xd, 1, 0x1f, 0, 0, 0),
            leaf(0xd, 2, 0x100, 0x240, 0, 0),
            leaf(0xd, 9, 0x8, 0xa80, 0, 0),
            leaf(0xd, 17, 0x40, 0xac0, 0x2, 0),
            leaf(0xd, 18, 0x2000, 0xb00, 0x6, 0),
            leaf(7, 0, 0, 0, 0, EDX7_AMX | 1),
            leaf(0x1d, 0, 1, 0, 0, 0),
            leaf(0x8000_0001, 0, 0, 0, ECX_AMD_PERFCTR | 1, 0),
            leaf(0x8000_0022, 0, 7, 4, 0, 0),
        ])
        .unwrap();
        filter(&mut c, 0, 1);
        let e = c.as_slice();
        assert_eq!(e[0].eax, 0x207, "AMX dropped from XCR0's components");
        assert_eq!(e[0].ebx, 0x240, "EBX left to KVM");
        assert_eq!(e[0].ecx, 0xa88, "max size: PKRU at 0xa80 + 8");
        assert_eq!(e[1].eax, 0x1f);
        assert_eq!((e[4].eax, e[4].ebx, e[5].eax, e[5].ebx), (0, 0, 0, 0));
        assert_eq!(e[6].edx, 1, "AMX feature bits cleared");
        assert_eq!(e[7].eax, 0);
        assert_eq!(e[8].ecx, 1, "no perf counter extensions");
        assert_eq!(e[9].eax, 0, "no PerfMonV2");
        assert_eq!(xcr0(&c), 0x207);
        assert_eq!(xcr0(&CpuId::new(0).unwrap()), 1, "x87 at least");
    }
}
