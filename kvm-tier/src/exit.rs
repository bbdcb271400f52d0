//! Why a VM stopped, and the one-shot signal devices and vCPUs use to stop it.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The reason a VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest reset the machine through the i8042 (`reboot=k`).
    Reset,
    /// The guest powered off through the ACPI sleep control register
    /// (S5, e.g. `poweroff`).
    PowerOff,
    /// The guest kernel panicked and reported it on the pvpanic device.
    Panic,
    /// The guest wrote `code` to the debug-exit port.
    DebugExit(u8),
    /// A vCPU halted with no in-kernel irqchip to wake it (not expected).
    Halted,
    /// A triple fault or similar: KVM reported `KVM_EXIT_SHUTDOWN`.
    Shutdown,
    /// A `KVM_EXIT_SYSTEM_EVENT` of this type (shutdown, reset, crash).
    SystemEvent(u32),
    /// The host asked the VM to stop.
    Stopped,
    /// A vCPU failed; the message tells how (e.g. KVM internal error).
    VcpuError(String),
}

/// Stops a VM from any thread (e.g. one forwarding a container `kill`):
/// the VM's waiter then returns [`ExitReason::Stopped`] and tears it down.
#[derive(Debug, Clone)]
pub struct StopHandle(std::sync::Arc<ExitSignal>);

impl StopHandle {
    /// A handle on `signal`.
    pub fn new(signal: std::sync::Arc<ExitSignal>) -> Self {
        Self(signal)
    }

    /// Asks the VM to stop; a no-op once it ended for another reason.
    pub fn stop(&self) {
        self.0.request(ExitReason::Stopped);
    }
}

/// A one-shot, first-writer-wins exit request shared by devices, vCPUs and
/// the waiting caller.
#[derive(Debug, Default)]
pub struct ExitSignal {
    reason: Mutex<Option<ExitReason>>,
    cond: Condvar,
}

impl ExitSignal {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `reason` unless another one was recorded first.
    pub fn request(&self, reason: ExitReason) {
        let mut guard = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            tracing::debug!(?reason, "VM exit requested");
            *guard = Some(reason);
            self.cond.notify_all();
        }
    }

    /// Whether an exit was requested.
    pub fn is_set(&self) -> bool {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The recorded reason, if any.
    pub fn reason(&self) -> Option<ExitReason> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits for a reason up to `timeout` (forever with `None`).
    pub fn wait(&self, timeout: Option<Duration>) -> Option<ExitReason> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut guard = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = guard.as_ref() {
                return Some(r.clone());
            }
            match deadline {
                None => {
                    guard = self.cond.wait(guard).unwrap_or_else(|p| p.into_inner());
                }
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    guard = self
                        .cond
                        .wait_timeout(guard, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn first_reason_wins_and_wakes_waiters() {
        let s = Arc::new(ExitSignal::new());
        assert_eq!(s.wait(Some(Duration::from_millis(5))), None);
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.wait(None));
        s.request(ExitReason::Reset);
        s.request(ExitReason::Shutdown);
        assert_eq!(t.join().unwrap(), Some(ExitReason::Reset));
        assert_eq!(s.reason(), Some(ExitReason::Reset));
    }
}
