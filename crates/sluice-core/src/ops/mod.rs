//! The operators of [`crate::DStream`], one family per file.

mod join;
mod keyed;

pub use keyed::MAX_SHUFFLE_PARTITIONS;
mod map;
mod materialize;
mod output;
mod shuffle;
mod transform;
mod union;
