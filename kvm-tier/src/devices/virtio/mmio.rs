//! The virtio-mmio transport, version 2 (virtio 1.2, section 4.2).
//!
//! All values come from the guest: every register access is checked for
//! width and alignment, queue addresses are checked against guest memory
//! before the device is activated, and a driver that breaks the protocol
//! gets DEVICE_NEEDS_RESET or is ignored, never a VMM panic.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};

use super::{status, ActivateContext, VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1};
use crate::devices::{BusDevice, IrqLine};
use crate::memory::GuestMemoryMmap;

/// "virt" in little endian.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// Transport version (modern).
pub const MMIO_VERSION: u32 = 2;
/// Vendor id: "hull" in little endian.
pub const MMIO_VENDOR: u32 = 0x6c6c_7568;

/// Register offsets.
pub mod regs {
    #![allow(missing_docs)]
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// One virtio device behind an MMIO register window.
pub struct MmioTransport {
    mem: GuestMemoryMmap,
    device: Box<dyn VirtioDevice>,
    interrupt: Arc<VirtioInterrupt>,
    queues: Vec<Queue>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    activated: bool,
    config_generation: u32,
}

impl MmioTransport {
    /// Wraps `device`, raising `line` for its interrupts.
    pub fn new(mem: GuestMemoryMmap, device: Box<dyn VirtioDevice>, line: IrqLine) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .filter_map(|&max| match Queue::new(max) {
                Ok(q) => Some(q),
                Err(e) => {
                    tracing::error!(max, error = ?e, "device declares an invalid queue size");
                    None
                }
            })
            .collect();
        Self {
            mem,
            device,
            interrupt: Arc::new(VirtioInterrupt::new(line)),
            queues,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            activated: false,
            config_generation: 0,
        }
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the device was activated (DRIVER_OK accepted).
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn offered_features(&self) -> u64 {
        self.device.features() | VIRTIO_F_VERSION_1
    }

    /// Queue registers may only change while the driver sets up the device
    /// (before DRIVER_OK) and while the selected queue is not ready.
    fn queue_config_allowed(&mut self) -> bool {
        let set_up = self.status & status::FEATURES_OK != 0 && self.status & status::DRIVER_OK == 0;
        set_up && self.selected_queue().is_some_and(|q| !q.ready())
    }

    fn reset(&mut self) {
        if self.activated {
            self.device.reset();
        }
        self.activated = false;
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            q.reset();
        }
        self.interrupt.reset();
    }

    fn set_status(&mut self, new: u32) {
        if new == 0 {
            self.reset();
            return;
        }
        // The driver may only add bits (except through a reset).
        if new & self.status != self.status {
            tracing::warn!(
                old = self.status,
                new,
                "virtio driver cleared status bits; ignored"
            );
            return;
        }
        let added = new & !self.status;
        if added & status::FEATURES_OK != 0 {
            let ok = self.driver_features & !self.offered_features() == 0
                && self.driver_features & VIRTIO_F_VERSION_1 != 0;
            if !ok {
                tracing::warn!(
                    driver = self.driver_features,
                    "virtio driver accepted features the device does not offer"
                );
                // FEATURES_OK stays clear: the driver sees negotiation failed.
                self.status = new & !status::FEATURES_OK;
                return;
            }
        }
        if added & status::DRIVER_OK != 0 {
            if new & status::FEATURES_OK == 0 {
                self.status = new & !status::DRIVER_OK;
                return;
            }
            self.status = new;
            self.activate();
            return;
        }
        self.status = new;
    }

    fn activate(&mut self) {
        for (i, q) in self.queues.iter().enumerate() {
            if q.ready() && !q.is_valid(&self.mem) {
                tracing::warn!(queue = i, "virtio queue addresses are outside guest memory");
                self.status |= status::DEVICE_NEEDS_RESET;
                return;
            }
        }
        // The device gets its own copies; the transport keeps the
        // registers' view for reads and resets.
        let queues: Result<Vec<Queue>, _> = self
            .queues
            .iter()
            .map(|q| Queue::try_from(q.state()))
            .collect();
        let Ok(queues) = queues else {
            self.status |= status::DEVICE_NEEDS_RESET;
            return;
        };
        let ctx = ActivateContext {
            mem: self.mem.clone(),
            queues,
            acked_features: self.driver_features,
            interrupt: self.interrupt.clone(),
        };
        match self.device.activate(ctx) {
            Ok(()) => self.activated = true,
            Err(e) => {
                tracing::warn!(error = %e, "virtio device activation failed");
                self.status |= status::DEVICE_NEEDS_RESET;
            }
        }
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        match offset {
            regs::MAGIC => MMIO_MAGIC,
            regs::VERSION => MMIO_VERSION,
            regs::DEVICE_ID => self.device.device_type(),
            regs::VENDOR_ID => MMIO_VENDOR,
            regs::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            regs::QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| q.max_size().into()),
            regs::QUEUE_READY => self.selected_queue().map_or(0, |q| q.ready().into()),
            regs::INTERRUPT_STATUS => self.interrupt.status(),
            regs::STATUS => self.status,
            regs::CONFIG_GENERATION => self.config_generation,
            // No device has shared memory regions: a length (and base) of
            // all ones says "no such region" (virtio 1.2, 4.2.2). Zero
            // would describe an empty region at address 0, which drivers
            // (virtio-fs's DAX window) then try to reserve and fail.
            regs::SHM_LEN_LOW | regs::SHM_LEN_HIGH | regs::SHM_BASE_LOW | regs::SHM_BASE_HIGH => {
                u32::MAX
            }
            _ => {
                tracing::trace!(offset, "read of unknown or write-only virtio-mmio register");
                0
            }
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        let set_half = |old: u64, high: bool, v: u32| {
            if high {
                (old & 0xffff_ffff) | (u64::from(v) << 32)
            } else {
                (old & !0xffff_ffff) | u64::from(v)
            }
        };
        match offset {
            regs::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            regs::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            regs::DRIVER_FEATURES => {
                if self.status & status::FEATURES_OK != 0 || self.status & status::DRIVER == 0 {
                    tracing::warn!("driver features written outside negotiation; ignored");
                    return;
                }
                match self.driver_features_sel {
                    0 => self.driver_features = set_half(self.driver_features, false, v),
                    1 => self.driver_features = set_half(self.driver_features, true, v),
                    _ => {}
                }
            }
            regs::QUEUE_SEL => self.queue_sel = v,
            regs::SHM_SEL => {}
            regs::QUEUE_NUM => {
                if self.queue_config_allowed() {
                    if let (Some(q), Ok(size)) = (self.selected_queue(), u16::try_from(v)) {
                        // Queue::set_size refuses sizes that are zero, too
                        // large or not a power of two.
                        q.set_size(size);
                    }
                }
            }
            regs::QUEUE_READY => {
                let allowed =
                    self.status & status::FEATURES_OK != 0 && self.status & status::DRIVER_OK == 0;
                if let (true, Some(q)) = (allowed, self.selected_queue()) {
                    q.set_ready(v == 1);
                }
            }
            regs::QUEUE_DESC_LOW | regs::QUEUE_DESC_HIGH => {
                if self.queue_config_allowed() {
                    let high = offset == regs::QUEUE_DESC_HIGH;
                    if let Some(q) = self.selected_queue() {
                        q.set_desc_table_address((!high).then_some(v), high.then_some(v));
                    }
                }
            }
            regs::QUEUE_DRIVER_LOW | regs::QUEUE_DRIVER_HIGH => {
                if self.queue_config_allowed() {
                    let high = offset == regs::QUEUE_DRIVER_HIGH;
                    if let Some(q) = self.selected_queue() {
                        q.set_avail_ring_address((!high).then_some(v), high.then_some(v));
                    }
                }
            }
            regs::QUEUE_DEVICE_LOW | regs::QUEUE_DEVICE_HIGH => {
                if self.queue_config_allowed() {
                    let high = offset == regs::QUEUE_DEVICE_HIGH;
                    if let Some(q) = self.selected_queue() {
                        q.set_used_ring_address((!high).then_some(v), high.then_some(v));
                    }
                }
            }
            regs::QUEUE_NOTIFY => {
                if self.activated {
                    if let Ok(idx) = u16::try_from(v) {
                        if usize::from(idx) < self.queues.len() {
                            self.device.queue_notify(idx);
                        }
                    }
                }
            }
            regs::INTERRUPT_ACK => self.interrupt.ack(v),
            regs::STATUS => self.set_status(v),
            _ => tracing::trace!(
                offset,
                v,
                "write to unknown or read-only virtio-mmio register"
            ),
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= regs::CONFIG {
            self.device.read_config(offset - regs::CONFIG, data);
            return;
        }
        if data.len() != 4 || offset & 3 != 0 {
            tracing::warn!(
                offset,
                len = data.len(),
                "misaligned virtio-mmio register read"
            );
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= regs::CONFIG {
            self.device.write_config(offset - regs::CONFIG, data);
            self.config_generation = self.config_generation.wrapping_add(1);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            tracing::warn!(
                offset,
                len = data.len(),
                "virtio-mmio register write of wrong width"
            );
            return;
        };
        if offset & 3 != 0 {
            tracing::warn!(offset, "misaligned virtio-mmio register write");
            return;
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::{ActivateError, VirtioDevice};
    use crate::memory::create_guest_memory;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Dummy {
        activations: Arc<AtomicUsize>,
        notified: Arc<AtomicUsize>,
    }

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            42
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 16]
        }
        fn features(&self) -> u64 {
            VIRTIO_F_VERSION_1 | 0b101
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            super::super::read_config_bytes(&[1, 2, 3, 4], offset, data);
        }
        fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
        fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
            assert_eq!(ctx.queues.len(), 2);
            self.activations.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn queue_notify(&mut self, _index: u16) {
            self.notified.fetch_add(1, Ordering::SeqCst);
        }
        fn reset(&mut self) {}
    }

    struct T {
        t: MmioTransport,
        activations: Arc<AtomicUsize>,
        notified: Arc<AtomicUsize>,
    }

    fn transport() -> T {
        let activations = Arc::new(AtomicUsize::new(0));
        let notified = Arc::new(AtomicUsize::new(0));
        let dev = Dummy {
            activations: activations.clone(),
            notified: notified.clone(),
        };
        let mem = create_guest_memory(16 << 20).unwrap();
        T {
            t: MmioTransport::new(mem, Box::new(dev), IrqLine::new(5).unwrap()),
            activations,
            notified,
        }
    }

    fn r(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    fn negotiate(t: &mut MmioTransport) {
        w(t, regs::STATUS, status::ACKNOWLEDGE);
        w(t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(t, regs::DRIVER_FEATURES_SEL, 1);
        w(t, regs::DRIVER_FEATURES, 1);
        w(t, regs::DRIVER_FEATURES_SEL, 0);
        w(t, regs::DRIVER_FEATURES, 0b100);
        w(t, regs::STATUS, 0xb);
        assert_eq!(r(t, regs::STATUS), 0xb);
    }

    fn setup_queue(t: &mut MmioTransport, q: u32, base: u64) {
        w(t, regs::QUEUE_SEL, q);
        w(t, regs::QUEUE_NUM, 16);
        w(t, regs::QUEUE_DESC_LOW, base as u32);
        w(t, regs::QUEUE_DESC_HIGH, (base >> 32) as u32);
        w(t, regs::QUEUE_DRIVER_LOW, (base + 0x1000) as u32);
        w(t, regs::QUEUE_DRIVER_HIGH, 0);
        w(t, regs::QUEUE_DEVICE_LOW, (base + 0x2000) as u32);
        w(t, regs::QUEUE_DEVICE_HIGH, 0);
        w(t, regs::QUEUE_READY, 1);
    }

    #[test]
    fn identification_and_feature_pages() {
        let mut x = transport();
        let t = &mut x.t;
        assert_eq!(r(t, regs::MAGIC), MMIO_MAGIC);
        assert_eq!(r(t, regs::VERSION), 2);
        assert_eq!(r(t, regs::DEVICE_ID), 42);
        assert_eq!(r(t, regs::VENDOR_ID), MMIO_VENDOR);
        assert_eq!(r(t, regs::DEVICE_FEATURES), 0b101);
        w(t, regs::DEVICE_FEATURES_SEL, 1);
        assert_eq!(r(t, regs::DEVICE_FEATURES), 1);
        w(t, regs::DEVICE_FEATURES_SEL, 7);
        assert_eq!(r(t, regs::DEVICE_FEATURES), 0);
        // Config space, byte-wise and past its end.
        let mut b = [0u8; 2];
        t.read(regs::CONFIG + 2, &mut b);
        assert_eq!(b, [3, 4]);
        t.read(regs::CONFIG + 0x800, &mut b);
        assert_eq!(b, [0, 0]);
        // Misaligned or narrow register accesses are ignored.
        let mut one = [0xaau8; 1];
        t.read(regs::MAGIC, &mut one);
        assert_eq!(one, [0]);
        t.write(regs::STATUS, &[1]);
        assert_eq!(r(t, regs::STATUS), 0);
        w(t, regs::STATUS + 1, 1);
        assert_eq!(r(t, regs::STATUS), 0);
        // No shared memory regions: length and base read as all ones.
        for sel in [0, 1, 0xff] {
            w(t, regs::SHM_SEL, sel);
            for reg in [
                regs::SHM_LEN_LOW,
                regs::SHM_LEN_HIGH,
                regs::SHM_BASE_LOW,
                regs::SHM_BASE_HIGH,
            ] {
                assert_eq!(r(t, reg), u32::MAX);
            }
        }
    }

    #[test]
    fn unoffered_features_or_missing_version_1_fail_negotiation() {
        let mut x = transport();
        let t = &mut x.t;
        w(t, regs::STATUS, 3);
        w(t, regs::DRIVER_FEATURES, 0b010); // not offered
        w(t, regs::DRIVER_FEATURES_SEL, 1);
        w(t, regs::DRIVER_FEATURES, 1);
        w(t, regs::STATUS, 0xb);
        assert_eq!(r(t, regs::STATUS) & status::FEATURES_OK, 0);
        w(t, regs::STATUS, 0);
        w(t, regs::STATUS, 3);
        w(t, regs::DRIVER_FEATURES, 0b001); // no VERSION_1
        w(t, regs::STATUS, 0xb);
        assert_eq!(r(t, regs::STATUS) & status::FEATURES_OK, 0);
        // DRIVER_OK without FEATURES_OK does not activate.
        w(t, regs::STATUS, 7);
        assert!(!t.is_activated());
    }

    #[test]
    fn queue_setup_activation_and_notify() {
        let mut x = transport();
        {
            let t = &mut x.t;
            // Queue registers are refused before FEATURES_OK.
            w(t, regs::QUEUE_SEL, 0);
            w(t, regs::QUEUE_READY, 1);
            assert_eq!(r(t, regs::QUEUE_READY), 0);
            negotiate(t);
            assert_eq!(r(t, regs::QUEUE_NUM_MAX), 16);
            setup_queue(t, 0, 0x10000);
            setup_queue(t, 1, 0x20000);
            assert_eq!(r(t, regs::QUEUE_READY), 1);
            // A queue beyond the device's count reads as absent.
            w(t, regs::QUEUE_SEL, 9);
            assert_eq!(r(t, regs::QUEUE_NUM_MAX), 0);
            w(t, regs::QUEUE_NOTIFY, 0);
            w(t, regs::STATUS, 0xf);
            assert!(t.is_activated());
            assert_eq!(r(t, regs::STATUS), 0xf);
            w(t, regs::QUEUE_NOTIFY, 1);
            w(t, regs::QUEUE_NOTIFY, 2); // no such queue
            w(t, regs::QUEUE_NOTIFY, 0x10000);
        }
        assert_eq!(x.activations.load(Ordering::SeqCst), 1);
        assert_eq!(
            x.notified.load(Ordering::SeqCst),
            1,
            "only the valid notify reaches the device"
        );
        let t = &mut x.t;
        t.interrupt.signal(super::super::INT_USED_RING);
        assert_eq!(r(t, regs::INTERRUPT_STATUS), 1);
        w(t, regs::INTERRUPT_ACK, 1);
        assert_eq!(r(t, regs::INTERRUPT_STATUS), 0);
        // Reset clears everything.
        w(t, regs::STATUS, 0);
        assert!(!t.is_activated());
        w(t, regs::QUEUE_SEL, 0);
        assert_eq!(r(t, regs::QUEUE_READY), 0);
    }

    #[test]
    fn queues_outside_memory_need_reset() {
        let mut x = transport();
        let t = &mut x.t;
        negotiate(t);
        setup_queue(t, 0, 0x10000);
        setup_queue(t, 1, (16 << 20) - 0x1000); // used ring past the end
        w(t, regs::STATUS, 0xf);
        assert!(!t.is_activated());
        assert_ne!(r(t, regs::STATUS) & status::DEVICE_NEEDS_RESET, 0);
        assert_eq!(x.activations.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn invalid_queue_sizes_are_refused() {
        let mut x = transport();
        let t = &mut x.t;
        negotiate(t);
        w(t, regs::QUEUE_SEL, 0);
        for bad in [0u32, 3, 32, 0x1_0000] {
            w(t, regs::QUEUE_NUM, bad);
        }
        // The size stayed at its maximum: the queue is still valid.
        setup_queue(t, 0, 0x10000);
        setup_queue(t, 1, 0x20000);
        w(t, regs::STATUS, 0xf);
        assert!(t.is_activated());
    }
}
