//! What happens to a record an operator cannot process: fail the batch, or
//! set the record aside as a dead letter and go on.

use std::sync::Arc;

/// What a batch does when an operator's closure returns an error for a
/// record (`try_map`, `try_flat_map`, `values_utf8`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoisonPolicy {
    /// The task fails, is retried, and the batch fails if every attempt
    /// does: nothing of it is committed. The error names the record's
    /// topic, partition and offset.
    #[default]
    FailBatch,
    /// The record is dropped from the stream of the operator that failed,
    /// and a [`DeadLetter`] naming it is committed with the batch into the
    /// checkpoint family `family`.
    ///
    /// Only errors inside source tasks (before any shuffle) name a record;
    /// an error after a shuffle still fails the batch.
    DeadLetter {
        /// The checkpoint family (a RocksDB column family) dead letters go
        /// to.
        family: String,
    },
}

impl PoisonPolicy {
    /// Dead letters go to the checkpoint family `family`.
    pub fn dead_letter(family: impl Into<String>) -> Self {
        PoisonPolicy::DeadLetter {
            family: family.into(),
        }
    }

    /// The family dead letters go to, when they are kept.
    pub fn family(&self) -> Option<&str> {
        match self {
            PoisonPolicy::FailBatch => None,
            PoisonPolicy::DeadLetter { family } => Some(family),
        }
    }
}

/// A record an operator rejected, by its coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Topic of the record.
    pub topic: Arc<str>,
    /// Partition of the record.
    pub partition: i32,
    /// Offset of the record.
    pub offset: i64,
    /// The operator whose closure returned the error.
    pub operator: &'static str,
    /// The error, as text.
    pub error: String,
}
