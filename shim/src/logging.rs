//! The shim's `tracing` output goes to the `log` FIFO containerd reads in the bundle (it
//! shows up in containerd's log). Nothing is written to stdout or stderr: containerd reads
//! the `start` action's combined output as the shim's address.
//!
//! One line per event, `<time>  <LEVEL> <target>: <message> <field>=<value>…` (the layout of
//! tracing-subscriber's `fmt`, which the shim no longer links: a dozen lines of subscriber
//! are all it used).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata};

pub fn init() {
    let is_fifo = std::fs::metadata("log")
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false);
    if !is_fifo {
        return;
    }
    // Non-blocking open fails (ENXIO) instead of hanging when nobody reads the FIFO.
    let Ok(file) = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("log")
    else {
        return;
    };
    let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL).unwrap_or(0);
    let blocking = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
    let _ = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(blocking));
    let debug = std::env::args().any(|a| a == "-debug" || a == "--debug");
    let level = if debug {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    let _ = tracing::subscriber::set_global_default(FifoLog {
        file: Mutex::new(file),
        max: level,
    });
}

/// Writes each event enabled by `max` as one line to `file`; spans are not tracked.
struct FifoLog {
    file: Mutex<File>,
    max: Level,
}

impl tracing::Subscriber for FifoLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::from_level(self.max))
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let line = format_line(event);
        if let Ok(mut file) = self.file.lock() {
            let _ = file.write_all(line.as_bytes());
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

fn format_line(event: &Event<'_>) -> String {
    let meta = event.metadata();
    let mut fields = Fields::default();
    event.record(&mut fields);
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut line = format!(
        "{time} {:>5} {}: {}",
        meta.level(),
        meta.target(),
        fields.message
    );
    line.push_str(&fields.rest);
    line.push('\n');
    line
}

/// The event's `message`, and its other fields as ` name=value`.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captures the formatted lines instead of writing a FIFO.
    struct Capture(std::sync::Arc<Mutex<Vec<String>>>);

    impl tracing::Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            self.0.lock().unwrap().push(format_line(event));
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    #[test]
    fn a_line_has_time_level_target_message_and_fields() {
        let lines = std::sync::Arc::new(Mutex::new(Vec::new()));
        tracing::subscriber::with_default(Capture(lines.clone()), || {
            tracing::warn!(id = "c1", pid = 42, "container {} exited", "c1");
        });
        let lines = lines.lock().unwrap();
        let line = lines.first().expect("one line");
        let (time, rest) = line.split_once(' ').expect("a time");
        assert!(time.ends_with('Z') && time.contains('T'), "{line}");
        assert_eq!(
            rest,
            " WARN containerd_shim_hull_v2::logging::tests: container c1 exited id=\"c1\" pid=42\n"
        );
    }
}
