//! The boot-timer port: the guest writes a magic byte when its init starts;
//! the VMM records the time elapsed since `Vm::start`.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::BusDevice;
use crate::layout::ports::BOOT_TIMER_MAGIC;

/// Records the first magic write.
#[derive(Debug)]
pub struct BootTimer {
    start: Instant,
    hit: Arc<OnceLock<Duration>>,
}

impl BootTimer {
    /// A timer counting from `start`; the result lands in `hit`.
    pub fn new(start: Instant, hit: Arc<OnceLock<Duration>>) -> Self {
        Self { start, hit }
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && data.first() == Some(&BOOT_TIMER_MAGIC) {
            let elapsed = self.start.elapsed();
            if self.hit.set(elapsed).is_ok() {
                tracing::info!(
                    "guest boot time: {} us since Vm::start",
                    elapsed.as_micros()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_first_magic_write_only() {
        let hit = Arc::new(OnceLock::new());
        let mut t = BootTimer::new(Instant::now(), hit.clone());
        t.write(0, &[1]);
        assert!(hit.get().is_none());
        t.write(0, &[BOOT_TIMER_MAGIC]);
        let first = *hit.get().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        t.write(0, &[BOOT_TIMER_MAGIC]);
        assert_eq!(*hit.get().unwrap(), first);
    }
}
