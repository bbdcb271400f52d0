//! The debug-exit port: a byte written to it ends the VM with that code.
//! Tiny guests and tests use it to report a result.

use std::sync::Arc;

use super::BusDevice;
use crate::exit::{ExitReason, ExitSignal};

/// Ends the VM with the written byte as its exit code.
#[derive(Debug)]
pub struct DebugExit(Arc<ExitSignal>);

impl DebugExit {
    /// A port that requests exits on `exit`.
    pub fn new(exit: Arc<ExitSignal>) -> Self {
        Self(exit)
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let Some(&code) = data.first() {
            self.0.request(ExitReason::DebugExit(code));
        }
    }
}
