//! `hull-boot-timer`: run as a guest's first program, writes the boot-timer byte (123) to
//! hull-vmm's boot-timer port (0x440), so hull-vmm reports `Vm::start` → guest userspace.
//! (Debian's cloud kernel has no `/dev/port`, so a shell cannot do it.) Needs root in the
//! guest; on any other VMM the write goes nowhere.

use std::process::ExitCode;

const BOOT_TIMER_PORT: u16 = 0x440;
const BOOT_TIMER_MAGIC: u8 = 123;

fn main() -> ExitCode {
    // SAFETY: ioperm only changes this process's I/O permission bitmap.
    if unsafe { libc::ioperm(u64::from(BOOT_TIMER_PORT), 1, 1) } != 0 {
        eprintln!(
            "hull-boot-timer: ioperm(0x{BOOT_TIMER_PORT:x}): {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::FAILURE;
    }
    // SAFETY: a one-byte port write the line above permitted; it has no memory effects.
    unsafe {
        std::arch::asm!("out dx, al", in("dx") BOOT_TIMER_PORT, in("al") BOOT_TIMER_MAGIC, options(nomem, nostack));
    }
    ExitCode::SUCCESS
}
