//! The pvpanic device (ACPI `QEMU0001`, Linux `pvpanic-mmio`, which takes
//! an I/O port or MMIO resource): one byte register. Reading it returns the
//! events the device supports; the guest kernel writes `PVPANIC_PANICKED`
//! from its panic notifier (before `panic=` reboots) and
//! `PVPANIC_CRASH_LOADED` when a crash kernel takes over.
//!
//! A panic ends the VM with [`ExitReason::Panic`]; a crash-kernel load is
//! only logged (the guest goes on into its kdump kernel, as with QEMU).

use std::sync::Arc;

use super::BusDevice;
use crate::exit::{ExitReason, ExitSignal};

/// `_HID` of the pvpanic device.
pub const PVPANIC_HID: &str = "QEMU0001";
/// The guest panicked.
pub const PVPANIC_PANICKED: u8 = 1 << 0;
/// The guest loaded a crash kernel and runs it.
pub const PVPANIC_CRASH_LOADED: u8 = 1 << 1;

/// The pvpanic register.
#[derive(Debug)]
pub struct PvPanic(Arc<ExitSignal>);

impl PvPanic {
    /// A device that requests [`ExitReason::Panic`] on `exit`.
    pub fn new(exit: Arc<ExitSignal>) -> Self {
        Self(exit)
    }
}

impl BusDevice for PvPanic {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == 0 {
            if let Some(b) = data.first_mut() {
                *b = PVPANIC_PANICKED | PVPANIC_CRASH_LOADED;
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (0, Some(&v)) = (offset, data.first()) else {
            return;
        };
        if v & PVPANIC_PANICKED != 0 {
            tracing::warn!("guest kernel panicked (pvpanic)");
            self.0.request(ExitReason::Panic);
        } else if v & PVPANIC_CRASH_LOADED != 0 {
            tracing::warn!("guest kernel crashed into its crash kernel (pvpanic)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_capabilities_and_ends_on_panic() {
        let exit = Arc::new(ExitSignal::new());
        let mut d = PvPanic::new(exit.clone());
        let mut b = [0u8; 1];
        d.read(0, &mut b);
        assert_eq!(b[0], 3);
        d.write(0, &[PVPANIC_CRASH_LOADED]);
        d.write(0, &[0]);
        d.write(0, &[]);
        assert!(!exit.is_set());
        d.write(0, &[PVPANIC_PANICKED]);
        assert_eq!(exit.reason(), Some(ExitReason::Panic));
    }
}
