//! A minimal `tracing` subscriber: one line per event on stderr (the console, in the guest).
//! Spans are ignored. Small on purpose: the agent binary does not link tracing-subscriber.

use std::fmt::{Debug, Write as _};
use std::io::Write as _;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

pub struct StderrLog {
    pub max: Level,
}

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        let _ = if field.name() == "message" {
            write!(self.0, " {value:?}")
        } else {
            write!(self.0, " {}={value:?}", field.name())
        };
    }
}

impl Subscriber for StderrLog {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        // tracing orders levels by verbosity: ERROR < ... < TRACE.
        *m.level() <= self.max
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, e: &Event<'_>) {
        let mut line = Line(format!("hull-agent: {}:", e.metadata().level()));
        e.record(&mut line);
        line.0.push('\n');
        let _ = std::io::stderr().write_all(line.0.as_bytes());
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

pub fn init(max: Level) {
    let _ = tracing::subscriber::set_global_default(StderrLog { max });
}
