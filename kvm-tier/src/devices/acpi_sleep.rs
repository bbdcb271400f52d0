//! The hardware-reduced ACPI sleep registers (FADT `SLEEP_CONTROL_REG` and
//! `SLEEP_STATUS_REG`, one byte each on consecutive ports): a guest entering
//! S5 (the DSDT's `\_S5_` sleep type, e.g. on `poweroff`) ends the VM with
//! [`ExitReason::PowerOff`].
//!
//! ACPICA's `acpi_hw_extended_sleep` first writes `WAK_STS` to the status
//! register, then `SLP_TYP << 2 | SLP_EN` to the control register, then
//! polls the status register for `WAK_STS`. Only a control write with
//! `SLP_EN` and the S5 type ends the VM; other sleep states are not
//! supported (the DSDT offers none) and are ignored.

use std::sync::Arc;

use super::BusDevice;
use crate::exit::{ExitReason, ExitSignal};

/// The sleep type the DSDT's `\_S5_` package gives for S5.
pub const S5_SLEEP_TYPE: u8 = 5;
/// `SLP_TYP` field of the sleep control register (bits 2-4).
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0b111 << SLP_TYP_SHIFT;
/// `SLP_EN` bit of the sleep control register.
const SLP_EN: u8 = 1 << 5;
/// Offset of the control register; the status register is at 1.
const CONTROL: u64 = 0;

/// The two sleep registers.
#[derive(Debug)]
pub struct AcpiSleep(Arc<ExitSignal>);

impl AcpiSleep {
    /// Registers that request [`ExitReason::PowerOff`] on `exit`.
    pub fn new(exit: Arc<ExitSignal>) -> Self {
        Self(exit)
    }
}

impl BusDevice for AcpiSleep {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Never awake again: WAK_STS stays clear (the VM ends first).
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        if offset != CONTROL || v & SLP_EN == 0 {
            return;
        }
        let typ = (v & SLP_TYP_MASK) >> SLP_TYP_SHIFT;
        if typ == S5_SLEEP_TYPE {
            self.0.request(ExitReason::PowerOff);
        } else {
            tracing::warn!(
                sleep_type = typ,
                "guest asked for an unsupported sleep state"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_with_slp_en_powers_off() {
        let exit = Arc::new(ExitSignal::new());
        let mut d = AcpiSleep::new(exit.clone());
        // ACPICA clears WAK_STS first: no exit.
        d.write(1, &[0x80]);
        // S5 type without SLP_EN, SLP_EN on the status port, S3: no exit.
        d.write(0, &[S5_SLEEP_TYPE << 2]);
        d.write(1, &[S5_SLEEP_TYPE << 2 | SLP_EN]);
        d.write(0, &[3 << 2 | SLP_EN]);
        d.write(0, &[]);
        assert!(!exit.is_set());
        let mut b = [0xffu8];
        d.read(1, &mut b);
        assert_eq!(b[0], 0);
        d.write(0, &[S5_SLEEP_TYPE << 2 | SLP_EN]);
        assert_eq!(exit.reason(), Some(ExitReason::PowerOff));
    }
}
