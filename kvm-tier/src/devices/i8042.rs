//! A minimal i8042 controller: enough for `reboot=k` (the CPU-reset
//! command 0xfe on the command port) to end the VM.

use std::sync::Arc;

use vm_superio::{I8042Device, Trigger};

use super::BusDevice;
use crate::exit::{ExitReason, ExitSignal};

/// Turns the reset command into a VM exit.
#[derive(Debug)]
pub struct ResetTrigger(Arc<ExitSignal>);

impl Trigger for ResetTrigger {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.request(ExitReason::Reset);
        Ok(())
    }
}

/// The i8042 on ports 0x60-0x64 (one range of 5 ports; data at offset 0,
/// command/status at offset 4).
#[derive(Debug)]
pub struct I8042 {
    inner: I8042Device<ResetTrigger>,
}

impl I8042 {
    /// A controller that ends the VM on reset.
    pub fn new(exit: Arc<ExitSignal>) -> Self {
        Self {
            inner: I8042Device::new(ResetTrigger(exit)),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Some(first), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.inner.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(&v), Ok(off)) = (data.first(), u8::try_from(offset)) {
            // The trigger is infallible.
            let _ = self.inner.write(off, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_requests_exit() {
        let exit = Arc::new(ExitSignal::new());
        let mut d = I8042::new(exit.clone());
        d.write(0, &[0xfe]);
        assert!(!exit.is_set(), "0xfe on the data port is no reset");
        d.write(4, &[0xfe]);
        assert_eq!(exit.reason(), Some(ExitReason::Reset));
    }
}
