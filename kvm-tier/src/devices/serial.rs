//! The 16550 UART on COM1 (`vm-superio`), its output sent to a sink.

use std::fs::File;
use std::io::{self, Write};

use vm_superio::serial::NoEvents;
use vm_superio::Serial;

use super::{BusDevice, IrqLine};
use crate::config::SerialOutput;

/// Opens the configured output.
pub fn open_output(out: &SerialOutput) -> io::Result<Box<dyn Write + Send>> {
    Ok(match out {
        SerialOutput::Sink => Box::new(io::sink()),
        SerialOutput::Stdout => Box::new(io::stdout()),
        SerialOutput::File(p) => Box::new(File::create(p)?),
    })
}

/// COM1 on the port I/O bus.
pub struct SerialDevice {
    inner: Serial<IrqLine, NoEvents, Box<dyn Write + Send>>,
}

impl SerialDevice {
    /// A UART raising `irq` and writing to `out`.
    pub fn new(irq: IrqLine, out: Box<dyn Write + Send>) -> Self {
        Self {
            inner: Serial::new(irq, out),
        }
    }

    /// Queues bytes for the guest to read (console input).
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        self.inner.enqueue_raw_bytes(bytes).unwrap_or(0)
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Registers are one byte wide; wider accesses read the register
        // into the low byte.
        data.fill(0);
        if let (Some(first), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.inner.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (Some(&value), Ok(off)) = (data.first(), u8::try_from(offset)) else {
            return;
        };
        if let Err(e) = self.inner.write(off, value) {
            tracing::warn!(error = %e, "serial write failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn transmits_to_output() {
        let out = Shared::default();
        let mut s = SerialDevice::new(IrqLine::new(4).unwrap(), Box::new(out.clone()));
        for b in b"hi" {
            s.write(0, &[*b]);
        }
        // Line status: transmitter empty.
        let mut lsr = [0u8];
        s.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
        // Out-of-range offsets are ignored, not a panic.
        s.write(1 << 40, &[1]);
        s.write(0, &[]);
        assert_eq!(&*out.0.lock().unwrap(), b"hi");
    }
}
