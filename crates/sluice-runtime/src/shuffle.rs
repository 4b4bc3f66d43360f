//! The job's shuffle partition count: chosen at its first start, then kept
//! by the checkpoint whatever later runs configure.
//!
//! Which records a shuffle puts in reduce partition `i` (and so what
//! `BatchInfo::idempotency_key(i)` names) depends on the count, so a batch
//! redone after a restart must use the count its first attempt used.

use std::num::NonZeroUsize;

use sluice_checkpoint::CheckpointStore;

use crate::Result;

/// The count a start runs with, and what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Choice {
    /// Reduce partitions of every shuffle without an explicit count.
    pub(crate) partitions: NonZeroUsize,
    /// Nothing is recorded yet: record `partitions` before any batch runs.
    pub(crate) record: bool,
    /// A configured count that differs from the recorded one and is
    /// ignored.
    pub(crate) ignored: Option<NonZeroUsize>,
}

/// Decides the count: the recorded one if any, else the configured one,
/// else `default` (the worker count of the first start).
pub(crate) fn choose(
    recorded: Option<NonZeroUsize>,
    configured: Option<NonZeroUsize>,
    default: NonZeroUsize,
) -> Choice {
    match recorded {
        Some(recorded) => Choice {
            partitions: recorded,
            record: false,
            ignored: configured.filter(|c| *c != recorded),
        },
        None => Choice {
            partitions: configured.unwrap_or(default),
            record: true,
            ignored: None,
        },
    }
}

/// Reads the recorded count from `store`, records one at the first start,
/// and warns when it overrides the configured count.
pub(crate) fn settle(
    store: &mut dyn CheckpointStore,
    configured: Option<NonZeroUsize>,
    default: NonZeroUsize,
) -> Result<NonZeroUsize> {
    let choice = choose(store.shuffle_partitions()?, configured, default);
    if choice.record {
        store.record_shuffle_partitions(choice.partitions)?;
    }
    if let Some(ignored) = choice.ignored {
        tracing::warn!(
            configured = ignored.get(),
            recorded = choice.partitions.get(),
            "shuffle_partitions({ignored}) is ignored: the checkpoint keeps the {} it recorded \
             at the job's first start, so a shuffle puts the same records under each \
             idempotency key in every run; start a new checkpoint to change it",
            choice.partitions
        );
    }
    Ok(choice.partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(count: usize) -> NonZeroUsize {
        NonZeroUsize::new(count).unwrap()
    }

    #[test]
    fn the_first_start_records_the_configured_count_or_the_worker_count() {
        assert_eq!(
            choose(None, Some(n(6)), n(2)),
            Choice {
                partitions: n(6),
                record: true,
                ignored: None
            }
        );
        assert_eq!(
            choose(None, None, n(2)),
            Choice {
                partitions: n(2),
                record: true,
                ignored: None
            }
        );
    }

    #[test]
    fn a_recorded_count_wins_over_any_configuration_or_worker_count() {
        for (configured, default) in [(None, n(1)), (None, n(16)), (Some(n(3)), n(1))] {
            assert_eq!(
                choose(Some(n(3)), configured, default),
                Choice {
                    partitions: n(3),
                    record: false,
                    ignored: None
                }
            );
        }
        assert_eq!(
            choose(Some(n(3)), Some(n(5)), n(1)),
            Choice {
                partitions: n(3),
                record: false,
                ignored: Some(n(5))
            }
        );
    }
}
