//! Windowed operators, one family per file. Minimal here; merged with the
//! batch-time windows' module.

mod event_time;

pub use event_time::{EventTimeSpec, LateCount, OutputMode, Windowed};
