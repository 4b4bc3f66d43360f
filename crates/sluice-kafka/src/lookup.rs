//! Reading records back by offset (the records behind dead letters) on
//! consumers of their own, so the source tasks' cached consumers keep their
//! position and what they prefetched for the next batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::ClientConfig;
use sluice_core::{OffsetRange, Record};

use crate::consumer::PartitionConsumer;
use crate::context::SluiceContext;
use crate::partition::PartitionReader;

/// Bytes a lookup fetches per partition and request (librdkafka's
/// `max.partition.fetch.bytes`, 1 MiB by default). A run is a few records;
/// the broker still returns a larger record batch whole.
const LOOKUP_FETCH_BYTES: u64 = 256 * 1024;

/// What a lookup consumer prefetches at most, in KiB (librdkafka's
/// `queued.max.messages.kbytes`; sluice's source consumers hold 8 MiB).
const LOOKUP_QUEUE_KIB: u64 = 1024;

/// How long the broker may hold a lookup's fetch for data to arrive
/// (librdkafka's `fetch.wait.max.ms`, 500 by default). The records looked up
/// are there already; some brokers (tansu) hold a fetch at a fresh position
/// for about this long all the same.
const LOOKUP_FETCH_WAIT_MS: u64 = 10;

/// Consumers that look records up by offset, shared by all partitions.
///
/// A lookup takes an idle consumer (or creates one), assigns it to the
/// partition at the first run, reads the runs, and unassigns it, which
/// stops its fetching and drops what it prefetched; the client stays
/// connected for the next lookup. There are at most as many consumers as
/// lookups ever ran at once (one per worker thread), whatever the number of
/// partitions.
pub(crate) struct Lookups {
    config: Arc<ClientConfig>,
    poll_timeout: Duration,
    idle: Mutex<Vec<BaseConsumer<SluiceContext>>>,
    positions: Arc<AtomicU64>,
    records: AtomicU64,
}

impl Lookups {
    /// Lookups with the settings of the source's consumers, fetching less.
    pub(crate) fn new(source: &ClientConfig, poll_timeout: Duration) -> Self {
        let mut config = source.clone();
        lower(
            &mut config,
            "max.partition.fetch.bytes",
            1024 * 1024,
            LOOKUP_FETCH_BYTES,
        );
        lower(
            &mut config,
            "queued.max.messages.kbytes",
            64 * 1024,
            LOOKUP_QUEUE_KIB,
        );
        lower(&mut config, "fetch.wait.max.ms", 500, LOOKUP_FETCH_WAIT_MS);
        Self {
            config: Arc::new(config),
            poll_timeout,
            idle: Mutex::new(Vec::new()),
            positions: Arc::default(),
            records: AtomicU64::new(0),
        }
    }

    /// Reads `runs` (see [`sluice_core::InputReader::read_back`]), one
    /// consumer per partition's runs.
    pub(crate) fn read(
        &self,
        runs: &[OffsetRange],
        each: &mut dyn FnMut(&OffsetRange, sluice_core::Result<Vec<Record>>),
    ) {
        for partition_runs in runs.chunk_by(|a, b| a.topic == b.topic && a.partition == b.partition)
        {
            let consumer = PartitionConsumer::new(
                partition_runs[0].topic_partition(),
                Arc::clone(&self.config),
                lock(&self.idle).pop(),
                Arc::clone(&self.positions),
            );
            let mut reader = PartitionReader::new(consumer);
            // All runs of a partition share one poll timeout: a partition
            // that cannot be read does not hold the task for a timeout per run.
            let deadline = Instant::now() + self.poll_timeout;
            for run in partition_runs {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let read = if run.is_empty() {
                    Ok(Vec::new())
                } else if remaining.is_zero() {
                    Err(sluice_core::Error::Read {
                        range: run.clone(),
                        source: format!(
                            "not tried: reading back {} took {:?} already",
                            partition_runs[0].topic_partition(),
                            self.poll_timeout
                        )
                        .into(),
                    })
                } else {
                    reader
                        .read(run, remaining)
                        .map_err(|e| sluice_core::Error::Read {
                            range: run.clone(),
                            source: Box::new(e),
                        })
                };
                if let Ok(records) = &read {
                    self.records
                        .fetch_add(records.len() as u64, Ordering::Relaxed);
                    tracing::debug!(run = %run, records = records.len(), "read records back");
                }
                each(run, read);
            }
            if let Some(consumer) = reader.into_source().release() {
                lock(&self.idle).push(consumer);
            }
        }
    }

    /// Records read back so far, those between wanted offsets of a run
    /// included.
    pub(crate) fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Lookup consumers that are idle.
    pub(crate) fn idle(&self) -> usize {
        lock(&self.idle).len()
    }
}

/// Sets `key` to `most` unless it is set lower already (`default` being
/// librdkafka's value when unset).
fn lower(config: &mut ClientConfig, key: &str, default: u64, most: u64) {
    let current = config
        .get(key)
        .map_or(Some(default), |v| v.trim().parse::<u64>().ok());
    if current.is_some_and(|current| current > most) {
        config.set(key, most.to_string());
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A vector of idle clients stays consistent whatever panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_fetch_less_than_the_source_unless_it_fetches_less_already() {
        let mut source = ClientConfig::new();
        source.set("queued.max.messages.kbytes", "8192");
        let lookups = Lookups::new(&source, Duration::from_secs(1));
        assert_eq!(
            lookups.config.get("queued.max.messages.kbytes"),
            Some("1024")
        );
        assert_eq!(
            lookups.config.get("max.partition.fetch.bytes"),
            Some("262144")
        );
        assert_eq!(lookups.config.get("fetch.wait.max.ms"), Some("10"));

        source.set("queued.max.messages.kbytes", "100");
        source.set("max.partition.fetch.bytes", "65536");
        let lookups = Lookups::new(&source, Duration::from_secs(1));
        assert_eq!(
            lookups.config.get("queued.max.messages.kbytes"),
            Some("100")
        );
        assert_eq!(
            lookups.config.get("max.partition.fetch.bytes"),
            Some("65536")
        );
    }
}
