//! Windows: the pure parts (assignment, watermarks). Minimal here; merged
//! with the batch-time windows' module.

pub(crate) mod assign;
pub(crate) mod watermark;
