//! Global descriptor table entries and their KVM segment form.

use kvm_bindings::kvm_segment;

/// Builds a GDT entry from its flags (access byte in bits 0-7, flags nibble
/// in bits 12-15), base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

fn base(entry: u64) -> u64 {
    ((entry & 0xff00_0000_0000_0000) >> 32)
        | ((entry & 0x0000_00ff_0000_0000) >> 16)
        | ((entry & 0x0000_0000_ffff_0000) >> 16)
}

fn limit(entry: u64) -> u32 {
    let raw = (((entry & 0x000f_0000_0000_0000) >> 32) | (entry & 0x0000_0000_0000_ffff)) as u32;
    // With 4 KiB granularity the limit counts pages.
    if (entry >> 55) & 1 == 1 {
        (raw << 12) | 0xfff
    } else {
        raw
    }
}

/// The KVM segment register value for GDT entry `entry` at index `index`.
pub fn kvm_segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let unusable = if (entry >> 47) & 1 == 0 { 1 } else { 0 };
    kvm_segment {
        base: base(entry),
        limit: limit(entry),
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: ((entry >> 55) & 1) as u8,
        avl: ((entry >> 52) & 1) as u8,
        unusable,
        padding: 0,
    }
}

/// The flat 64-bit code segment (present, ring 0, execute/read, L).
pub const CODE64: u64 = gdt_entry(0xa09b, 0, 0xfffff);
/// The flat 32-bit code segment (present, ring 0, execute/read, D, 4 KiB granularity).
pub const CODE32: u64 = gdt_entry(0xc09b, 0, 0xfffff);
/// The flat data segment (present, read/write, D/B, 4 KiB granularity).
pub const DATA: u64 = gdt_entry(0xc093, 0, 0xfffff);
/// A busy 64-bit TSS placeholder.
pub const TSS: u64 = gdt_entry(0x808b, 0, 0xfffff);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_architecture() {
        assert_eq!(CODE64, 0x00af_9b00_0000_ffff);
        assert_eq!(CODE32, 0x00cf_9b00_0000_ffff);
        assert_eq!(DATA, 0x00cf_9300_0000_ffff);
        let cs = kvm_segment_from_gdt(CODE64, 1);
        assert_eq!(
            (cs.selector, cs.l, cs.db, cs.g, cs.present, cs.s),
            (8, 1, 0, 1, 1, 1)
        );
        assert_eq!(cs.limit, 0xffff_ffff);
        assert_eq!(cs.type_, 0xb);
        let ds = kvm_segment_from_gdt(DATA, 2);
        assert_eq!((ds.selector, ds.db, ds.type_), (16, 1, 3));
        let b = gdt_entry(0x93, 0x1234_5678, 0xabcde);
        assert_eq!(base(b), 0x1234_5678);
        assert_eq!(limit(b), 0xabcde);
        assert_eq!(kvm_segment_from_gdt(0, 0).unusable, 1);
    }
}
