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

/// The modem control register's offset.
const MCR: u64 = 4;
/// MCR: Request To Send.
const MCR_RTS: u8 = 1 << 1;

/// COM1 on the port I/O bus.
///
/// Console input honours RTS as hardware flow control: bytes are queued
/// for the guest only while its driver asserts RTS. Linux raises RTS when
/// the port is opened, after `serial8250_startup` has drained the receive
/// register; input queued earlier (all of it at once from a file given as
/// `--serial-in`) would be eaten there and the guest would read a line
/// with its first bytes missing. A guest that polls the UART must raise
/// RTS (and DTR) like any terminal line.
pub struct SerialDevice {
    inner: Serial<IrqLine, NoEvents, Box<dyn Write + Send>>,
    rts: bool,
}

impl SerialDevice {
    /// A UART raising `irq` and writing to `out`.
    pub fn new(irq: IrqLine, out: Box<dyn Write + Send>) -> Self {
        Self {
            inner: Serial::new(irq, out),
            rts: false,
        }
    }

    /// Queues bytes for the guest to read (console input); returns how many
    /// were taken: none while the guest holds RTS down or the FIFO is full.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        if !self.rts {
            return 0;
        }
        self.inner.enqueue_raw_bytes(bytes).unwrap_or(0)
    }

    /// Whether the guest asserts RTS (is ready to receive).
    pub fn ready_for_input(&self) -> bool {
        self.rts
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
        if offset == MCR {
            self.rts = value & MCR_RTS != 0;
        }
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

    #[test]
    fn input_waits_for_rts_and_raises_the_rx_interrupt() {
        let irq = IrqLine::new(4).unwrap();
        let evt = irq.eventfd().try_clone().unwrap();
        let mut s = SerialDevice::new(irq, Box::new(io::sink()));
        // Linux's 8250 startup: RX interrupt enabled, receive register
        // drained, RTS still down: nothing may be queued yet.
        s.write(1, &[0x01]);
        assert_eq!(s.enqueue_input(b"hello"), 0);
        let mut b = [0u8];
        s.read(0, &mut b);
        // The port is opened: DTR | RTS | OUT2.
        s.write(MCR, &[0x0b]);
        assert!(s.ready_for_input());
        while evt.read().is_ok() {}
        assert_eq!(s.enqueue_input(b"hello"), 5);
        assert_eq!(evt.read().unwrap(), 1, "RX interrupt");
        let mut iir = [0u8];
        s.read(2, &mut iir);
        assert_eq!(iir[0] & 0x0f, 0x04, "received data available");
        let mut got = Vec::new();
        loop {
            let mut lsr = [0u8];
            s.read(5, &mut lsr);
            if lsr[0] & 1 == 0 {
                break;
            }
            s.read(0, &mut b);
            got.push(b[0]);
        }
        assert_eq!(got, b"hello");
        // Closed again: RTS down, input held back.
        s.write(MCR, &[0x08]);
        assert_eq!(s.enqueue_input(b"x"), 0);
    }
}
