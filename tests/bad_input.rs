//! Bad input, end to end: a value that is not UTF-8, null keys and values,
//! a 10 MB record, an empty topic, a topic that does not exist, and
//! settings that cannot work. Each test says what sluice does and what it
//! commits (docs/guarantees.md, "Bad input").

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use sluice::prelude::*;
use sluice::Error as RuntimeError;

use crate::util::job::{self, offsets, produce_numbered, RunningJob, APP_ID, COUNTS};
use crate::util::kafka;

/// What the checkpoint in `dir` holds: stored offsets, the ids of the
/// committed batches, and the counts in [`COUNTS`].
#[derive(Debug, PartialEq)]
struct Committed {
    offsets: BTreeMap<TopicPartition, i64>,
    batch_ids: Vec<u64>,
    counts: BTreeMap<String, i64>,
}

fn committed(dir: &Path) -> Committed {
    let checkpoint = job::open_checkpoint(dir, APP_ID);
    Committed {
        offsets: checkpoint.offsets().unwrap(),
        batch_ids: checkpoint.batches().unwrap().iter().map(|b| b.id).collect(),
        counts: job::counts_in(&checkpoint),
    }
}

#[test]
fn non_utf8_value_fails_its_batch_naming_the_record_and_commits_nothing_of_it() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "events", 2);
    let source = || {
        job::source(&bootstrap)
            .subscribe(["events"])
            .build()
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let good = produce_numbered(&bootstrap, "events", 2, 0..20);
    let mut first = job::count_values(job::context(dir.path()).build().unwrap(), source());
    first.wait_for_records(40, "the 40 good records");
    first.stop();
    let before = committed(dir.path());
    assert_eq!(before.counts, job::counts_of(&good));
    let next_id = before.batch_ids.last().expect("the first run committed") + 1;

    // Good records on both partitions around the bad one (offset 25 of
    // events-0), all there before the next run plans its first batch.
    kafka::produce(
        &bootstrap,
        "events",
        Some(1),
        (20..30).map(|i| format!("events-1-{i}")),
    );
    let mut p0: Vec<Vec<u8>> = (20..25)
        .map(|i| format!("events-0-{i}").into_bytes())
        .collect();
    p0.push(b"caf\xe9 latin-1".to_vec());
    p0.extend((26..30).map(|i| format!("events-0-{i}").into_bytes()));
    kafka::produce(&bootstrap, "events", Some(0), &p0);

    // A restart reads the same batch again and fails the same way: the
    // record stops the job until the job handles it.
    for run in ["the run that meets the bad record", "the restart"] {
        let ctx = job::context(dir.path()).task_attempts(2).build().unwrap();
        let mut running = job::count_values(ctx, source());
        let error = running.wait_for_error();
        let message = error.to_string();
        let RuntimeError::Batch { id, .. } = error else {
            panic!("{run}: expected a batch error, got: {message}");
        };
        assert_eq!(
            id, next_id,
            "{run}: the failed batch is not the one after the last commit"
        );
        assert!(
            message.contains("events-0@25") && message.contains("not valid UTF-8"),
            "{run}: the error should name the topic, partition and offset: {message}"
        );
        assert!(running.batches().is_empty(), "{run} committed a batch");
        assert_eq!(
            committed(dir.path()),
            before,
            "{run}: the failed batch changed the checkpoint"
        );
    }
}

/// `key=… value=…`, with `null` for a null field, as the job's counts
/// keep them.
fn shape(key: Option<&[u8]>, value: Option<&[u8]>) -> String {
    let show = |field: Option<&[u8]>| {
        field.map_or("null".to_owned(), |b| {
            format!("'{}'", String::from_utf8_lossy(b))
        })
    };
    format!("key={} value={}", show(key), show(value))
}

#[test]
fn null_keys_and_tombstones_read_as_none_and_are_counted_and_committed() {
    const SHAPES: &str = "shapes";
    type Kv = (Option<&'static str>, Option<&'static str>);
    let p0: &[Kv] = &[
        (Some("user-1"), Some("alice")),
        (Some("user-1"), None),
        (None, Some("anonymous")),
        (None, None),
        (Some(""), Some("")),
        (Some("user-2"), Some("bob")),
    ];
    let p1: &[Kv] = &[
        (None, Some("anonymous")),
        (Some("user-2"), None),
        (None, None),
        (Some("user-3"), Some("carol")),
    ];
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "changelog", 2);
    kafka::produce_keyed(&bootstrap, "changelog", Some(0), p0.iter().copied());
    kafka::produce_keyed(&bootstrap, "changelog", Some(1), p1.iter().copied());
    let dir = tempfile::tempdir().unwrap();

    let source = job::source(&bootstrap)
        .subscribe(["changelog"])
        .build()
        .unwrap();
    let ctx = job::context(dir.path()).build().unwrap();
    let records = ctx.kafka_stream(source).unwrap();
    records
        .try_map(|r| {
            let key = r.key_str()?.map(str::as_bytes);
            Ok::<_, sluice::stream::Error>(shape(key, r.value.as_deref()))
        })
        .count_by_value()
        .save_counts(SHAPES)
        .unwrap();
    // Null keys do not matter to values_utf8, and a tombstone reads as "".
    records
        .values_utf8()
        .count_by_value()
        .save_counts(COUNTS)
        .unwrap();
    let mut running = RunningJob::start(ctx);
    running.wait_for_records(10, "the 10 records");
    running.stop();

    let all = || p0.iter().chain(p1);
    let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
    assert_eq!(
        job::family_counts(&checkpoint, SHAPES),
        job::counts_of(all().map(|(k, v)| shape(k.map(str::as_bytes), v.map(str::as_bytes)))),
    );
    assert_eq!(
        job::counts_in(&checkpoint),
        job::counts_of(all().map(|(_, v)| v.unwrap_or_default())),
    );
    assert_eq!(
        checkpoint.offsets().unwrap(),
        BTreeMap::from([
            (TopicPartition::new("changelog", 0), 6),
            (TopicPartition::new("changelog", 1), 4),
        ])
    );
}

/// FNV-1a, 64 bits: enough to tell a damaged value from the one produced.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `len` bytes in which no shift or truncation matches the original.
fn pattern(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Where a value was read, its length and its checksum.
fn fingerprint(partition: i32, offset: i64, value: &[u8]) -> String {
    format!(
        "{partition}@{offset}: {} bytes, fnv {:016x}",
        value.len(),
        checksum(value)
    )
}

const BIG: usize = 10 * 1024 * 1024;

/// Creates `blobs` on the mock cluster with one [`BIG`] record alone in
/// partition 0 and `small` in partition 1; returns the big value.
///
/// Alone, because the mock keeps 5 MiB per partition: an append past that
/// drops the older message sets and moves the log start to the end of the
/// log, past the new records too. tansu 0.6 cannot serve the record at
/// all: it caps a fetch response at 5 MiB and answers a larger batch with
/// no records, so the consumer asks again forever.
fn blobs(cluster: &MockCluster<'static, DefaultProducerContext>, small: &[&str]) -> Vec<u8> {
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(cluster, "blobs", 2);
    let big = pattern(BIG);
    kafka::produce_with(
        &bootstrap,
        "blobs",
        Some(0),
        [(None::<&[u8]>, Some(&big))],
        kafka::LARGE_RECORDS,
    );
    kafka::produce(&bootstrap, "blobs", Some(1), small);
    big
}

#[test]
fn ten_megabyte_record_is_read_intact_with_default_client_settings() {
    let cluster = kafka::mock_cluster();
    let small = ["before", "after"];
    let big = blobs(&cluster, &small);
    let dir = tempfile::tempdir().unwrap();
    let source = job::source(&cluster.bootstrap_servers())
        .subscribe(["blobs"])
        .build()
        .unwrap();
    let ctx = job::context(dir.path()).build().unwrap();
    ctx.kafka_stream(source)
        .unwrap()
        .map(|r| {
            fingerprint(
                r.partition,
                r.offset,
                r.value.as_deref().unwrap_or_default(),
            )
        })
        .count_by_value()
        .save_counts(COUNTS)
        .unwrap();
    let mut running = RunningJob::start(ctx);
    running.wait_for_records(3, "the 10 MB record and the two small ones");
    running.stop();

    let expected = job::counts_of([
        fingerprint(0, 0, &big),
        fingerprint(1, 0, small[0].as_bytes()),
        fingerprint(1, 1, small[1].as_bytes()),
    ]);
    let got = committed(dir.path());
    assert_eq!(got.counts, expected);
    assert_eq!(
        got.offsets,
        BTreeMap::from([
            (TopicPartition::new("blobs", 0), 1),
            (TopicPartition::new("blobs", 1), 2),
        ])
    );
}

#[test]
fn record_above_receive_message_max_bytes_fails_its_batch_instead_of_hanging() {
    let cluster = kafka::mock_cluster();
    blobs(&cluster, &["small"]);
    let dir = tempfile::tempdir().unwrap();
    // Accepted by build: consistent with each other, only too small for
    // the record.
    let source = job::source(&cluster.bootstrap_servers())
        .subscribe(["blobs"])
        .set("fetch.max.bytes", "1048576")
        .set("receive.message.max.bytes", "2097152")
        .poll_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let ctx = job::context(dir.path()).task_attempts(2).build().unwrap();
    let mut running = job::count_values(ctx, source);
    let error = running.wait_for_error();

    let message = error.to_string();
    assert!(
        matches!(error, RuntimeError::Batch { .. }),
        "expected a batch error, got: {message}"
    );
    assert!(
        message.contains("reading blobs-0 [0, 1)"),
        "the error should name the partition and range: {message}"
    );
    assert!(running.batches().is_empty());
    let got = committed(dir.path());
    assert!(
        got.offsets.is_empty() && got.batch_ids.is_empty() && got.counts.is_empty(),
        "the failed batch left a commit: {got:?}"
    );
}

#[test]
fn empty_topic_commits_empty_batches_and_its_offsets_stay_at_zero() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "quiet", 3);
    let dir = tempfile::tempdir().unwrap();
    let source = job::source(&bootstrap)
        .subscribe(["quiet"])
        .build()
        .unwrap();
    let mut running = job::count_values(job::context(dir.path()).build().unwrap(), source);
    running.wait_for("5 committed batches", |p| {
        (p.batches.len() >= 5).then_some(())
    });
    let progress = running.stop();

    assert_eq!(progress.records, 0);
    for batch in &progress.batches {
        let ranges: Vec<_> = batch
            .info
            .ranges
            .iter()
            .map(|r| (r.topic_partition(), r.from, r.until))
            .collect();
        let expected: Vec<_> = (0..3)
            .map(|p| (TopicPartition::new("quiet", p), 0, 0))
            .collect();
        assert_eq!(ranges, expected, "batch {}", batch.info.id);
    }
    let got = committed(dir.path());
    let ids: Vec<u64> = progress.batches.iter().map(|b| b.info.id).collect();
    assert_eq!(got.batch_ids, ids, "every empty batch is committed");
    assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>());
    assert_eq!(got.offsets, offsets("quiet", 3, 0));
    assert!(got.counts.is_empty(), "{:?}", got.counts);
}

#[test]
fn missing_subscribed_topic_is_waited_for_then_stops_the_job_naming_it() {
    const OUTAGE_TIMEOUT: Duration = Duration::from_secs(2);
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "present", 1);
    kafka::produce(&bootstrap, "present", None, ["a", "b"]);
    let dir = tempfile::tempdir().unwrap();
    let source = job::source(&bootstrap)
        .subscribe(["present", "absent"])
        .build()
        .unwrap();
    let ctx = job::context(dir.path())
        .kafka_outage_timeout(OUTAGE_TIMEOUT)
        .build()
        .unwrap();

    // start() does not ask Kafka: the first batch's planning does.
    let started = Instant::now();
    let mut running = job::count_values(ctx, source);
    let error = running.wait_for_error();

    let message = error.to_string();
    assert!(
        matches!(
            &error,
            RuntimeError::Kafka(sluice::kafka::Error::UnknownTopic { topic }) if topic == "absent"
        ),
        "expected the unknown topic 'absent', got: {message}"
    );
    assert_eq!(message, "subscribed topic 'absent' does not exist");
    assert!(
        started.elapsed() >= OUTAGE_TIMEOUT,
        "the job gave up on the topic after {:?}, before the outage timeout",
        started.elapsed()
    );
    assert!(running.batches().is_empty());
    let got = committed(dir.path());
    assert!(
        got.offsets.is_empty() && got.batch_ids.is_empty() && got.counts.is_empty(),
        "records of 'present' were committed: {got:?}"
    );
}

#[test]
fn invalid_settings_are_refused_by_build_naming_the_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    let limits = |limits: RateLimits| job::context(&dir).rate_limits(limits);
    let contexts = [
        (
            job::context(&dir).batch_interval(Duration::ZERO),
            vec!["batch_interval"],
        ),
        (job::context(&dir).workers(0), vec!["workers"]),
        (
            job::context(&dir).shuffle_partitions(0),
            vec!["shuffle_partitions"],
        ),
        (
            job::context(&dir).shuffle_partitions(usize::MAX),
            vec!["shuffle_partitions"],
        ),
        (limits(RateLimits::new().max_rate(-100.0)), vec!["max_rate"]),
        (limits(RateLimits::new().max_rate(0.0)), vec!["max_rate"]),
        (
            limits(RateLimits::new().max_rate_per_partition(-1.0)),
            vec!["max_rate_per_partition"],
        ),
        (
            limits(
                RateLimits::new()
                    .min_rate_per_partition(500.0)
                    .max_rate_per_partition(100.0),
            ),
            vec!["min_rate_per_partition", "max_rate_per_partition"],
        ),
    ];
    for (builder, settings) in contexts {
        let error = builder.build().unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, RuntimeError::Config { .. }),
            "not a configuration error: {message}"
        );
        for setting in settings {
            assert!(
                message.contains(&format!("`{setting}`")),
                "the error should name `{setting}`: {message}"
            );
        }
        assert!(!dir.exists(), "a refused build created the checkpoint");
    }

    let sources = [
        (
            job::source("127.0.0.1:9092").set("enable.auto.commit", "true"),
            "enable.auto.commit",
        ),
        // librdkafka refuses this pair only when a consumer is created.
        (
            job::source("127.0.0.1:9092")
                .set("fetch.max.bytes", "16777216")
                .set("receive.message.max.bytes", "8388608"),
            "receive.message.max.bytes",
        ),
    ];
    for (builder, setting) in sources {
        let error = builder.subscribe(["events"]).build().unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(&error, sluice::kafka::Error::Config { setting: s, .. } if s == setting),
            "expected a configuration error for `{setting}`, got: {message}"
        );
        assert!(message.contains(&format!("`{setting}`")), "{message}");
    }
}
