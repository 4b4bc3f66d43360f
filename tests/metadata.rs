//! The driver's Kafka clients learn metadata at different moments: an
//! offset lookup for a partition another client has just discovered, or
//! whose leader is moving, fails for a while. Such failures are retried with
//! a metadata refresh inside the outage timeout; they never stop the job nor
//! let it plan a batch from part of the partitions.

use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use sluice::prelude::*;

use crate::util::job::{self, first_ranges, produce_numbered, APP_ID};
use crate::util::kafka;

/// What brokers answer offset lookups while their metadata and the client's
/// disagree.
const METADATA_ERRORS: [RDKafkaRespErr; 4] = [
    RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
    RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
    RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
    RDKafkaRespErr::RD_KAFKA_RESP_ERR_REPLICA_NOT_AVAILABLE,
];

#[test]
fn offset_lookups_failing_on_metadata_disagreement_are_retried_without_stopping_the_job() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "events-a", 2);
    let mut values = produce_numbered(&bootstrap, "events-a", 2, 0..20);
    let dir = tempfile::tempdir().unwrap();
    let source = job::source(&bootstrap)
        .subscribe_pattern("^events-.*")
        .build()
        .unwrap();
    let mut running = job::count_values(job::context(dir.path()).build().unwrap(), source);
    running.wait_for_records(40, "the 40 records of events-a");

    // Every offset lookup of the next few rounds fails, while a new topic
    // appears to discovery.
    let errors: Vec<RDKafkaRespErr> = METADATA_ERRORS.iter().cycle().take(12).copied().collect();
    cluster.request_errors(RDKafkaApiKey::ListOffsets, &errors);
    kafka::create_mock_topic(&cluster, "events-b", 3);
    values.extend(produce_numbered(&bootstrap, "events-b", 3, 0..10));
    values.extend(produce_numbered(&bootstrap, "events-a", 2, 20..30));
    running.wait_for_records(90, "the records of events-b and the later ones of events-a");
    let progress = running.stop();

    assert_eq!(job::committed_counts(dir.path()), job::counts_of(&values));
    let first = first_ranges(&progress.batches);
    for p in 0..3 {
        assert_eq!(first[&TopicPartition::new("events-b", p)].0, 0, "{first:?}");
    }
    // Every batch read every partition known at its time: the new topic
    // joined whole, in one batch.
    let joined: Vec<_> = progress
        .batches
        .iter()
        .filter(|b| b.new_partitions.iter().any(|tp| &*tp.topic == "events-b"))
        .collect();
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0].new_partitions.len(), 3);
    let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
    assert_eq!(checkpoint.offsets().unwrap().len(), 5);
}
