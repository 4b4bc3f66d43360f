//! Offsets at the three moments: first start (start policy), restart
//! (stored offsets), and topics appearing while the job runs. Every test
//! runs against librdkafka's in-process mock broker.

use std::collections::BTreeMap;

use rdkafka::types::RDKafkaRespErr;
use sluice::kafka::DataLossPolicy;
use sluice::prelude::*;
use tempfile::TempDir;

use crate::util::job::{self, first_ranges, offsets, produce_numbered, APP_ID};
use crate::util::kafka;

fn tempdir() -> TempDir {
    tempfile::tempdir().expect("creating a temp dir for the checkpoint")
}

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

#[test]
fn first_start_reads_from_earliest_by_default() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "events", 3);
    let values = produce_numbered(&bootstrap, "events", 3, 0..100);
    let dir = tempdir();

    let source = job::source(&bootstrap)
        .subscribe(["events"])
        .build()
        .unwrap();
    let mut running = job::count_values(job::context(dir.path()).build().unwrap(), source);
    running.wait_for_records(300, "the 300 records produced before the first start");
    let progress = running.stop();

    let first = first_ranges(&progress.batches);
    for p in 0..3 {
        assert_eq!(
            first[&tp("events", p)].0,
            0,
            "events-{p} did not start at its earliest offset: {first:?}"
        );
    }
    assert_eq!(job::committed_counts(dir.path()), job::counts_of(&values));
    let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
    assert_eq!(checkpoint.offsets().unwrap(), offsets("events", 3, 100));
}

#[test]
fn first_start_with_latest_skips_existing_records() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "events", 3);
    let before = produce_numbered(&bootstrap, "events", 3, 0..40);
    let dir = tempdir();

    let source = job::source(&bootstrap)
        .subscribe(["events"])
        .start_from(StartOffsets::Latest)
        .build()
        .unwrap();
    let mut running = job::count_values(job::context(dir.path()).build().unwrap(), source);
    let first = running.wait_for_first_batch();
    assert_eq!(first.records, 0, "the first batch read existing records");
    let after = produce_numbered(&bootstrap, "events", 3, 40..60);
    running.wait_for_records(60, "the 60 records produced after the first batch");
    let progress = running.stop();

    let first = first_ranges(&progress.batches);
    for p in 0..3 {
        assert_eq!(
            first[&tp("events", p)].0,
            40,
            "events-{p} did not start at the latest offset: {first:?}"
        );
    }
    let counts = job::committed_counts(dir.path());
    assert_eq!(counts, job::counts_of(&after));
    assert!(
        before.iter().all(|v| !counts.contains_key(v)),
        "records produced before the start were counted"
    );
}

#[test]
fn restart_resumes_from_stored_offsets() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "events", 3);
    let source = || {
        job::source(&bootstrap)
            .subscribe(["events"])
            .build()
            .unwrap()
    };
    let dir = tempdir();

    let mut values = produce_numbered(&bootstrap, "events", 3, 0..70);
    let mut first_run = job::count_values(job::context(dir.path()).build().unwrap(), source());
    first_run.wait_for_records(210, "the first 210 records");
    first_run.stop();
    let last_id = job::open_checkpoint(dir.path(), APP_ID)
        .last_batch()
        .unwrap()
        .expect("the first run committed batches")
        .id;

    values.extend(produce_numbered(&bootstrap, "events", 3, 70..120));
    let mut second_run = job::count_values(job::context(dir.path()).build().unwrap(), source());
    let resumed = second_run.wait_for_first_batch();
    assert_eq!(
        resumed.info.id,
        last_id + 1,
        "the second run does not continue the batch ids"
    );
    for range in &resumed.info.ranges {
        assert_eq!(
            range.from, 70,
            "the second run did not resume {range} from its stored offset"
        );
    }
    second_run.wait_for_records(150, "the 150 records produced while stopped");
    second_run.stop();

    assert_eq!(job::committed_counts(dir.path()), job::counts_of(&values));
    let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
    assert_eq!(checkpoint.offsets().unwrap(), offsets("events", 3, 120));
    let batches = checkpoint.batches().unwrap();
    assert_eq!(batches.first().map(|b| b.id), Some(0));
    let ends = job::assert_ranges_chain(&batches, &offsets("events", 3, 0));
    assert_eq!(ends, offsets("events", 3, 120));
}

#[test]
fn pattern_subscription_picks_up_topic_created_while_running() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "events-a", 2);
    kafka::create_mock_topic(&cluster, "audit", 1);
    let mut values = produce_numbered(&bootstrap, "events-a", 2, 0..25);
    let unmatched = produce_numbered(&bootstrap, "audit", 1, 0..10);
    let dir = tempdir();

    let source = job::source(&bootstrap)
        .subscribe_pattern("^events-.*")
        .build()
        .unwrap();
    let mut running = job::count_values(job::context(dir.path()).build().unwrap(), source);
    running.wait_for_records(50, "the 50 records of events-a");

    kafka::create_mock_topic(&cluster, "events-b", 2);
    values.extend(produce_numbered(&bootstrap, "events-b", 2, 0..20));
    running.wait_for_records(90, "the 40 records of events-b, created while running");
    let progress = running.stop();

    let new_b: Vec<&BatchCompleted> = progress
        .batches
        .iter()
        .filter(|b| b.new_partitions.iter().any(|tp| &*tp.topic == "events-b"))
        .collect();
    assert_eq!(
        new_b.len(),
        1,
        "events-b should be new in exactly one batch: {new_b:?}"
    );
    assert_eq!(
        new_b[0].new_partitions,
        vec![tp("events-b", 0), tp("events-b", 1)]
    );
    let first = first_ranges(&progress.batches);
    assert_eq!(first[&tp("events-b", 0)].0, 0, "{first:?}");
    assert_eq!(first[&tp("events-b", 1)].0, 0, "{first:?}");
    assert!(
        !first.keys().any(|tp| &*tp.topic == "audit"),
        "a topic that does not match the pattern was read: {first:?}"
    );

    let counts = job::committed_counts(dir.path());
    assert_eq!(counts, job::counts_of(&values));
    assert!(unmatched.iter().all(|v| !counts.contains_key(v)));
    let mut expected = offsets("events-a", 2, 25);
    expected.extend(offsets("events-b", 2, 20));
    assert_eq!(
        job::open_checkpoint(dir.path(), APP_ID).offsets().unwrap(),
        expected
    );
}

/// The start policy belongs to the job's first batch: a restart after
/// committed batches that stored no offset (nothing matched yet) is not a
/// first start, and a topic that appeared meanwhile starts from earliest.
#[test]
fn a_restart_after_empty_batches_is_not_a_first_start() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempdir();
    let source = || {
        job::source(&bootstrap)
            .subscribe_pattern("^late-.*")
            .start_from(StartOffsets::Latest)
            .build()
            .unwrap()
    };
    let mut running = job::count_values(job::context(dir.path()).build().unwrap(), source());
    running.wait_for("two committed batches", |p| {
        (p.batches.len() >= 2).then_some(())
    });
    running.stop();
    assert!(job::open_checkpoint(dir.path(), APP_ID)
        .offsets()
        .unwrap()
        .is_empty());

    kafka::create_mock_topic(&cluster, "late-x", 1);
    let values = produce_numbered(&bootstrap, "late-x", 1, 0..6);
    let mut running = job::count_values(job::context(dir.path()).build().unwrap(), source());
    running.wait_for_records(6, "the 6 records of late-x, created while the job was down");
    running.stop();
    assert_eq!(job::committed_counts(dir.path()), job::counts_of(&values));
}

/// Regression: `KafkaReader::retain_partitions` was never called, so the
/// consumer of a partition that disappeared stayed open, with up to 8 MiB
/// prefetched, for the life of the job.
#[test]
fn consumers_of_a_topic_that_disappears_are_closed_and_the_rest_read_on() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "events-a", 2);
    kafka::create_mock_topic(&cluster, "events-b", 1);
    let mut values = produce_numbered(&bootstrap, "events-a", 2, 0..20);
    values.extend(produce_numbered(&bootstrap, "events-b", 1, 0..20));
    let dir = tempdir();

    let source = job::source(&bootstrap)
        .subscribe_pattern("^events-.*")
        .discovery_interval(job::BATCH_INTERVAL)
        .build()
        .unwrap();
    let mut running = job::count_values(job::context(dir.path()).build().unwrap(), source);
    running.wait_for_records(60, "the 60 records of events-a and events-b");
    assert_eq!(running.reader().cached_consumers(), 3);

    // The mock cluster cannot delete a topic; an error in its metadata makes
    // the pattern skip it, which is what a deleted topic looks like.
    cluster
        .topic_error(
            "events-b",
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        )
        .unwrap();
    let without_b = |p: &job::Progress| {
        p.batches
            .last()
            .filter(|b| !b.info.ranges.iter().any(|r| &*r.topic == "events-b"))
            .map(|b| b.info.id)
    };
    running.wait_for("a committed batch without events-b", without_b);
    // The listener runs after the reader dropped what the batch did not read.
    assert_eq!(running.reader().cached_consumers(), 2);

    values.extend(produce_numbered(&bootstrap, "events-a", 2, 20..30));
    running.wait_for_records(80, "the 20 new records of events-a");
    assert_eq!(running.reader().cached_consumers(), 2);
    running.stop();
    assert_eq!(job::committed_counts(dir.path()), job::counts_of(&values));
}

#[test]
fn assign_starts_from_explicit_offsets() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "orders", 3);
    let produced = produce_numbered(&bootstrap, "orders", 3, 0..20);
    let source = || {
        job::source(&bootstrap)
            .assign([(tp("orders", 0), 5), (tp("orders", 1), 12)])
            .build()
            .unwrap()
    };
    let dir = tempdir();

    let mut first_run = job::count_values(job::context(dir.path()).build().unwrap(), source());
    first_run.wait_for_records(15 + 8, "the records after the assigned offsets");
    let progress = first_run.stop();
    let first = first_ranges(&progress.batches);
    assert_eq!(
        first
            .iter()
            .map(|(tp, r)| (tp.clone(), r.0))
            .collect::<Vec<_>>(),
        vec![(tp("orders", 0), 5), (tp("orders", 1), 12)],
        "assigned partitions did not start at their explicit offsets, or others were read"
    );

    // Stored offsets win over the assigned ones from then on.
    let more = produce_numbered(&bootstrap, "orders", 3, 20..30);
    let mut second_run = job::count_values(job::context(dir.path()).build().unwrap(), source());
    second_run.wait_for_records(20, "the records produced while stopped");
    second_run.stop();

    let expected = produced
        .iter()
        .chain(&more)
        .filter(|v| {
            let (p, i) = partition_and_index(v);
            (p == 0 && i >= 5) || (p == 1 && i >= 12)
        })
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(expected.len(), 25 + 18);
    assert_eq!(job::committed_counts(dir.path()), job::counts_of(&expected));
    assert_eq!(
        job::open_checkpoint(dir.path(), APP_ID).offsets().unwrap(),
        BTreeMap::from([(tp("orders", 0), 30), (tp("orders", 1), 30)])
    );
}

/// `(partition, i)` of a value made by [`produce_numbered`].
fn partition_and_index(value: &str) -> (i32, usize) {
    let mut parts = value.rsplit('-');
    let i = parts.next().unwrap().parse().unwrap();
    let p = parts.next().unwrap().parse().unwrap();
    (p, i)
}

#[test]
fn checkpoint_of_another_app_is_refused() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "events", 1);
    produce_numbered(&bootstrap, "events", 1, 0..10);
    let dir = tempdir();
    let source = job::source(&bootstrap)
        .subscribe(["events"])
        .build()
        .unwrap();
    let ctx = job::context(dir.path()).app_id("orders-a").build().unwrap();
    let mut running = job::count_values(ctx, source);
    running.wait_for_records(10, "the records of the first app");
    running.stop();
    let before = job::open_checkpoint(dir.path(), "orders-a");
    let (offsets_before, last_before) = (before.offsets().unwrap(), before.last_batch().unwrap());
    drop(before);

    let error = job::context(dir.path())
        .app_id("orders-b")
        .build()
        .expect_err("a context of another app opened the checkpoint")
        .to_string();
    assert!(
        error.contains("orders-a") && error.contains("orders-b"),
        "the error should name both app ids: {error}"
    );

    let after = job::open_checkpoint(dir.path(), "orders-a");
    assert_eq!(after.offsets().unwrap(), offsets_before);
    assert_eq!(after.last_batch().unwrap(), last_before);
    assert_eq!(
        job::counts_in(&after),
        job::counts_of((0..10).map(|i| format!("events-0-{i}")))
    );
}

/// A consumer in group `group`, to read or rewrite its offsets.
fn group_member(bootstrap: &str, group: &str) -> rdkafka::consumer::BaseConsumer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("creating a consumer of the group")
}

/// The offsets consumer group `group` has committed for `topic`'s
/// partitions `0..partitions` (`None` where it has none).
fn group_offsets(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, Option<i64>> {
    use rdkafka::consumer::Consumer;
    use rdkafka::{Offset, TopicPartitionList};
    let consumer = group_member(bootstrap, group);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, kafka::CLIENT_TIMEOUT)
        .expect("reading the group's committed offsets");
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => (e.partition(), Some(o)),
            _ => (e.partition(), None),
        })
        .collect()
}

#[test]
fn offsets_mirrored_to_the_consumer_group_never_override_the_checkpoint() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "mirrored", 2);
    let mut values = produce_numbered(&bootstrap, "mirrored", 2, 0..25);
    let dir = tempdir();
    let start = |dir: &std::path::Path| {
        let source = job::source(&bootstrap)
            .subscribe(["mirrored"])
            .mirror_offsets_to_group(true)
            .build()
            .unwrap();
        job::count_values(job::context(dir).build().unwrap(), source)
    };

    let mut running = start(dir.path());
    running.wait_for_records(50, "the first 50 records");
    running.stop();
    // The group (the app id) shows the job's progress to lag tools.
    let expected = BTreeMap::from([(0, Some(25)), (1, Some(25))]);
    job::poll(
        "the committed offsets in the consumer group",
        job::WAIT,
        || (group_offsets(&bootstrap, APP_ID, "mirrored", 2) == expected).then_some(()),
        || format!("{:?}", group_offsets(&bootstrap, APP_ID, "mirrored", 2)),
    );

    // Someone rewinds the group; the job still resumes from its checkpoint.
    {
        use rdkafka::consumer::{CommitMode, Consumer};
        use rdkafka::{Offset, TopicPartitionList};
        let consumer = group_member(&bootstrap, APP_ID);
        let mut tpl = TopicPartitionList::new();
        for p in 0..2 {
            tpl.add_partition_offset("mirrored", p, Offset::Offset(0))
                .unwrap();
        }
        consumer.commit(&tpl, CommitMode::Sync).unwrap();
    }
    values.extend(produce_numbered(&bootstrap, "mirrored", 2, 25..30));
    let mut running = start(dir.path());
    running.wait_for_records(10, "the 10 new records");
    let progress = running.stop();
    assert_eq!(
        first_ranges(&progress.batches)[&tp("mirrored", 0)].0,
        25,
        "resumed from the checkpoint, not from the rewound group"
    );
    assert_eq!(job::committed_counts(dir.path()), job::counts_of(&values));
    let expected = BTreeMap::from([(0, Some(30)), (1, Some(30))]);
    job::poll(
        "the group to show the new offsets",
        job::WAIT,
        || (group_offsets(&bootstrap, APP_ID, "mirrored", 2) == expected).then_some(()),
        || format!("{:?}", group_offsets(&bootstrap, APP_ID, "mirrored", 2)),
    );
}

/// Regression (newuser3 item 2): a start offset past the end was taken for
/// a stored offset of a recreated topic — `OffsetAhead` under the default
/// policy, a fake `PastLatest` reset under `ResetToEarliest`. It is a
/// configuration mistake, refused before anything is read or written,
/// whatever the data-loss policy.
#[test]
fn a_start_offset_past_the_end_is_refused_as_start_from_not_taken_for_a_recreated_topic() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "t1", 2);
    produce_numbered(&bootstrap, "t1", 2, 0..50);
    for policy in [DataLossPolicy::Fail, DataLossPolicy::ResetToEarliest] {
        let dir = tempdir();
        let source = job::source(&bootstrap)
            .subscribe(["t1"])
            .on_data_loss(policy)
            .start_from(StartOffsets::Offsets(BTreeMap::from([
                (tp("t1", 0), 99_999),
                (tp("t1", 1), 10),
            ])))
            .build()
            .unwrap();
        let mut running = job::count_values(job::context(dir.path()).build().unwrap(), source);
        let message = running.wait_for_error().to_string();
        for needle in [
            "start_from",
            "start offset 99999 of t1-0 is past its latest offset",
            "log start 0",
            "latest offset 50",
        ] {
            assert!(
                message.contains(needle),
                "{policy:?}: {needle:?} missing: {message}"
            );
        }
        assert!(!message.contains("recreated"), "{policy:?}: {message}");
        let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
        assert!(
            checkpoint.last_batch().unwrap().is_none(),
            "{policy:?}: a batch was committed"
        );
    }
}

/// Regression (newuser3 item 3): start offsets for partitions the job does
/// not read (`t1:7`, a topic that does not exist) were ignored, so a typo
/// silently replayed everything from earliest.
#[test]
fn start_offsets_of_unknown_partitions_are_refused_listing_them_and_the_partitions_found() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "t1", 2);
    produce_numbered(&bootstrap, "t1", 2, 0..10);
    let dir = tempdir();
    let source = job::source(&bootstrap)
        .subscribe(["t1"])
        .start_from(StartOffsets::Offsets(BTreeMap::from([
            (tp("t1", 7), 5),
            (tp("nosuch", 0), 3),
        ])))
        .build()
        .unwrap();
    let mut running = job::count_values(job::context(dir.path()).build().unwrap(), source);
    let message = running.wait_for_error().to_string();
    for needle in ["start_from", "nosuch-0=3", "t1-7=5", "t1-0, t1-1"] {
        assert!(message.contains(needle), "{needle:?} missing: {message}");
    }
    let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
    assert!(
        checkpoint.last_batch().unwrap().is_none(),
        "a batch was committed"
    );
}

/// A job moved from Spark Streaming (or any consumer) that kept its
/// progress in its consumer group: `StartOffsets::GroupCommitted` starts
/// each partition where the group left off, and a partition the group
/// committed nothing for from earliest. A restart then resumes from the
/// checkpoint, whatever the group says.
#[test]
fn a_first_start_from_the_group_committed_offsets_reads_on_where_the_group_left_off() {
    use rdkafka::consumer::{CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    const GROUP: &str = "spark-job";
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "moved", 2);
    let values = produce_numbered(&bootstrap, "moved", 2, 0..20);
    {
        // The old job read partition 0 up to offset 15, nothing of 1.
        let consumer = group_member(&bootstrap, GROUP);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("moved", 0, Offset::Offset(15))
            .unwrap();
        consumer.commit(&tpl, CommitMode::Sync).unwrap();
    }
    let dir = tempdir();
    let ctx = job::context(dir.path()).build().unwrap();
    let source = job::source(&bootstrap)
        .subscribe(["moved"])
        .group_id(GROUP)
        .start_from(StartOffsets::GroupCommitted)
        .build()
        .unwrap();
    ctx.kafka_stream(source)
        .unwrap()
        .values_utf8()
        .count_by_value()
        .save_counts(job::COUNTS)
        .unwrap();
    ctx.run_until_caught_up().unwrap();

    let expected: Vec<&String> = values
        .iter()
        .filter(|v| match v.strip_prefix("moved-0-") {
            Some(i) => i.parse::<usize>().unwrap() >= 15,
            None => true,
        })
        .collect();
    assert_eq!(expected.len(), 5 + 20);
    assert_eq!(job::committed_counts(dir.path()), job::counts_of(expected));
}

/// A consumer group that committed an offset its partition no longer holds
/// (the topic recreated, or its records deleted): the first start warns
/// naming the group, the partition and the committed offset, since the
/// data-loss error that follows speaks only of a stored offset.
#[test]
fn a_group_committed_offset_outside_the_log_is_named_as_the_groups_in_a_warning() {
    use rdkafka::consumer::{CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    const GROUP: &str = "old-job";
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "renewed", 2);
    produce_numbered(&bootstrap, "renewed", 2, 0..10);
    {
        // Committed before the topic was recreated with fewer records.
        let consumer = group_member(&bootstrap, GROUP);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("renewed", 1, Offset::Offset(50))
            .unwrap();
        consumer.commit(&tpl, CommitMode::Sync).unwrap();
    }
    let mut client = job::source(&bootstrap)
        .subscribe(["renewed"])
        .group_id(GROUP)
        .start_from(StartOffsets::GroupCommitted)
        .build()
        .unwrap()
        .connect()
        .unwrap();
    let partitions = client
        .partitions_with_offsets(std::time::Instant::now())
        .unwrap();
    let (offsets, logs) = crate::util::logged_by(|| {
        client
            .start_offsets(&StartOffsets::GroupCommitted, &partitions)
            .unwrap()
    });
    assert_eq!(
        offsets[&tp("renewed", 1)],
        50,
        "kept for the data-loss policy"
    );
    assert_eq!(offsets[&tp("renewed", 0)], 0, "no commit: from earliest");
    for needle in [GROUP, "renewed-1", "committed=50", "latest=10"] {
        assert!(logs.contains(needle), "{needle:?} missing: {logs}");
    }
    assert_eq!(logs.lines().count(), 1, "one warning: {logs}");
}
