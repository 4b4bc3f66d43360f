//! The operators of [`crate::DStream`], one family per file.

pub(crate) mod keyed;

pub use keyed::MAX_SHUFFLE_PARTITIONS;
pub use state::MapWithStateStream;
mod map;
mod materialize;
mod output;
mod state;
mod transform;
mod union;
