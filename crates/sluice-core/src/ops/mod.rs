//! The operators of [`crate::DStream`], one family per file.

mod cache;
mod join;
pub(crate) mod keyed;
mod map;
mod materialize;
mod output;
mod shuffle;
mod state;
mod transform;
mod union;
mod window;

pub use keyed::MAX_SHUFFLE_PARTITIONS;
pub use state::{MapWithStateStream, Table};
pub use window::{EventTimeSpec, LateCount, OutputMode, Windowed};
