//! Which partitions a source reads.

use std::collections::BTreeMap;

use regex::Regex;
use sluice_core::TopicPartition;

/// Which partitions a [`KafkaSource`](crate::KafkaSource) reads — Spark's
/// `ConsumerStrategies`.
///
/// Partitions are always assigned by sluice itself (one reader per
/// partition), never by a consumer-group rebalance.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ConsumerStrategy {
    /// Every partition of these topics, including partitions added later.
    Subscribe(Vec<String>),
    /// Every partition of every topic whose name matches, including topics
    /// created later. Topics whose name starts with `__` (Kafka's internal
    /// topics) are never matched.
    Pattern(Regex),
    /// Exactly these partitions, with the offsets to start from when the
    /// checkpoint holds none.
    Assign(BTreeMap<TopicPartition, i64>),
}

/// True when a pattern subscription includes `topic`.
pub(crate) fn pattern_matches(pattern: &Regex, topic: &str) -> bool {
    !topic.starts_with("__") && pattern.is_match(topic)
}

/// Why `name` cannot be a Kafka topic, if it cannot.
pub(crate) fn invalid_topic_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("a topic name cannot be empty")
    } else if name.len() > 249 {
        Some("a topic name has at most 249 characters")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are not topic names")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("a topic name may contain only ASCII letters, digits, '.', '_' and '-'")
    } else {
        None
    }
}
