//! The operators of [`crate::DStream`], one family per file.

mod keyed;
mod map;
mod materialize;
mod output;
mod transform;
mod union;
