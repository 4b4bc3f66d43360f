//! Reading exact offset ranges with cached per-partition consumers.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sluice_core::{InputReader, OffsetRange, Record};
use sluice_kafka::{Error, KafkaClient, KafkaReader};

use crate::util::{range, tp, Broker};

fn client(broker: &Broker, topic: &str) -> KafkaClient {
    broker
        .source()
        .subscribe([topic])
        .build()
        .unwrap()
        .connect()
        .unwrap()
}

fn offsets(records: &[Record]) -> Vec<i64> {
    records.iter().map(|r| r.offset).collect()
}

fn values(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| r.value_str().unwrap().to_owned())
        .collect()
}

#[test]
fn consecutive_ranges_are_read_exactly_with_one_consumer() {
    let broker = Broker::new();
    broker.create_topic("t", 1);
    broker.produce_numbered("t", 0, 0, 30);
    let reader = client(&broker, "t").reader();
    for (from, until) in [(0, 10), (10, 11), (11, 25), (25, 30)] {
        let records = reader.read(&range("t", 0, from, until)).unwrap();
        assert_eq!(offsets(&records), (from..until).collect::<Vec<_>>());
        assert_eq!(values(&records)[0], format!("0:{from}"));
        assert!(records.iter().all(|r| &*r.topic == "t" && r.partition == 0));
    }
    assert_eq!(reader.cached_consumers(), 1);
}

#[test]
fn payloads_of_records_read_together_share_one_block() {
    let broker = Broker::new();
    broker.create_topic("t", 1);
    broker.produce_numbered("t", 0, 0, 20);
    let reader = client(&broker, "t").reader();
    let records = reader.read(&range("t", 0, 0, 20)).unwrap();
    assert_eq!(values(&records)[19], "0:19");
    // Each value follows the one before it in the same buffer: no
    // allocation per payload.
    for pair in records.windows(2) {
        let (a, b) = (
            pair[0].value.as_ref().unwrap(),
            pair[1].value.as_ref().unwrap(),
        );
        assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
    }
}

#[test]
fn non_contiguous_reads_seek() {
    let broker = Broker::new();
    broker.create_topic("t", 1);
    broker.produce_numbered("t", 0, 0, 40);
    let reader = client(&broker, "t").reader();
    for (from, until) in [(0, 10), (5, 8), (30, 40), (20, 25), (0, 1)] {
        let records = reader.read(&range("t", 0, from, until)).unwrap();
        assert_eq!(
            offsets(&records),
            (from..until).collect::<Vec<_>>(),
            "[{from}, {until})"
        );
    }
}

#[test]
fn rereading_a_range_gives_identical_records() {
    let broker = Broker::new();
    broker.create_topic("t", 1);
    broker.produce_numbered("t", 0, 0, 3);
    broker.produce_full("t", 0, "k1", "with headers", 1_700_000_000_123);
    broker.produce_tombstone("t", 0, "k2");
    broker.produce_numbered("t", 0, 5, 5);
    let reader = client(&broker, "t").reader();

    let first = reader.read(&range("t", 0, 2, 8)).unwrap();
    let again = reader.read(&range("t", 0, 2, 8)).unwrap();
    assert_eq!(first, again);
    assert_eq!(offsets(&first), [2, 3, 4, 5, 6, 7]);

    let full = &first[1];
    assert_eq!(full.key_str().unwrap(), Some("k1"));
    assert_eq!(full.value_str().unwrap(), "with headers");
    assert_eq!(full.timestamp, Some(1_700_000_000_123));
    assert_eq!(
        full.headers,
        [
            (
                "trace".to_owned(),
                Some(sluice_core::Bytes::from_static(b"with headers"))
            ),
            ("empty".to_owned(), None)
        ]
    );
    let tombstone = &first[2];
    assert_eq!(tombstone.key.as_deref(), Some(&b"k2"[..]));
    assert_eq!(tombstone.value, None);

    // A fresh reader (another process after a crash) sees the same.
    let other = client(&broker, "t").reader();
    assert_eq!(other.read(&range("t", 0, 2, 8)).unwrap(), first);
}

#[test]
fn ranges_ending_at_the_high_watermark_then_continuing() {
    let broker = Broker::new();
    broker.create_topic("t", 1);
    broker.produce_numbered("t", 0, 0, 10);
    let mut client = client(&broker, "t");
    let reader = client.reader();
    let partitions = client.partitions(Instant::now()).unwrap();
    let mut from = 0;
    for round in 0..4 {
        let offsets_now = client.offsets(&partitions).unwrap();
        let until = offsets_now[0].latest;
        let records = reader.read(&range("t", 0, from, until)).unwrap();
        assert_eq!(
            offsets(&records),
            (from..until).collect::<Vec<_>>(),
            "round {round}"
        );
        // The consumer sits at the end of the partition (an end-of-partition
        // event may be queued) when more records arrive.
        broker.produce_numbered("t", 0, until, 3);
        from = until;
    }
    assert_eq!(from, 19);
}

#[test]
fn empty_ranges_do_not_touch_kafka() {
    let broker = Broker::new();
    broker.create_topic("t", 1);
    let reader = client(&broker, "t").reader();
    assert!(reader.read(&range("t", 0, 5, 5)).unwrap().is_empty());
    assert_eq!(reader.cached_consumers(), 0);
}

#[test]
fn partitions_are_read_in_parallel() {
    let broker = Broker::new();
    broker.create_topic("t", 4);
    for p in 0..4 {
        broker.produce_numbered("t", p, 0, 20);
    }
    let reader = Arc::new(client(&broker, "t").reader());
    let handles: Vec<_> = (0..4)
        .map(|p| {
            let reader = Arc::clone(&reader);
            thread::spawn(move || {
                let a = reader.read(&range("t", p, 0, 12)).unwrap();
                let b = reader.read(&range("t", p, 12, 20)).unwrap();
                (p, a, b)
            })
        })
        .collect();
    for handle in handles {
        let (p, a, b) = handle.join().unwrap();
        assert_eq!(offsets(&a), (0..12).collect::<Vec<_>>());
        assert_eq!(offsets(&b), (12..20).collect::<Vec<_>>());
        assert!(a.iter().chain(&b).all(|r| r.partition == p));
        assert_eq!(values(&b)[0], format!("{p}:12"));
    }
    assert_eq!(reader.cached_consumers(), 4);
    reader.retain_partitions(&[crate::util::tp("t", 1)]);
    assert_eq!(reader.cached_consumers(), 1);
}

#[test]
fn waiting_past_the_poll_timeout_fails_saying_what_is_missing() {
    let broker = Broker::new();
    broker.create_topic("t", 1);
    broker.produce_numbered("t", 0, 0, 10);
    let source = broker
        .source()
        .subscribe(["t"])
        .poll_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let reader = source.connect().unwrap().reader();
    // Planned past the end of the partition: offsets 10..15 never arrive.
    let err = reader.read(&range("t", 0, 0, 15)).unwrap_err();
    let sluice_core::Error::Read { range: r, source } = &err else {
        panic!("expected a read error, got {err}");
    };
    assert_eq!(r, &range("t", 0, 0, 15));
    let source = source
        .downcast_ref::<Error>()
        .expect("a sluice-kafka error");
    assert!(
        matches!(
            source,
            Error::ReadTimeout {
                received: 10,
                waiting_for: 10,
                ..
            }
        ),
        "{source}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("10 record(s) arrived") && msg.contains("offset 10"),
        "{msg}"
    );

    // The failed read leaves the reader usable.
    let records = reader.read(&range("t", 0, 0, 10)).unwrap();
    assert_eq!(offsets(&records), (0..10).collect::<Vec<_>>());
}

/// Reads `runs` back and returns, per run, the offsets and values read or
/// the error.
fn read_back(reader: &KafkaReader, runs: &[OffsetRange]) -> Vec<Result<Vec<String>, String>> {
    let mut found = Vec::new();
    reader.read_back(runs, &mut |_, read| {
        found.push(
            read.map(|records| values(&records))
                .map_err(|e| e.to_string()),
        );
    });
    found
}

/// Regression: dead letters used to be read back through the partition's
/// cached consumer, which moved it back to the rejected offsets; the next
/// batch then repositioned it and lost what it had prefetched.
#[test]
fn reading_records_back_leaves_the_cached_consumer_where_it_was() {
    let broker = Broker::new();
    broker.create_topic("t", 1);
    broker.produce_numbered("t", 0, 0, 200);
    let reader = client(&broker, "t").reader();
    assert_eq!(reader.read(&range("t", 0, 0, 100)).unwrap().len(), 100);
    assert_eq!(reader.positions(), 1);

    let runs = [range("t", 0, 3, 4), range("t", 0, 50, 52)];
    assert_eq!(
        read_back(&reader, &runs),
        [
            Ok(vec!["0:3".to_owned()]),
            Ok(vec!["0:50".to_owned(), "0:51".to_owned()])
        ]
    );

    let next = reader.read(&range("t", 0, 100, 200)).unwrap();
    assert_eq!(offsets(&next), (100..200).collect::<Vec<_>>());
    assert_eq!(
        reader.positions(),
        1,
        "the next read continued without a seek"
    );
    assert_eq!(
        reader.cached_consumers(),
        1,
        "lookups cache no consumer per partition"
    );
}

#[test]
fn records_far_apart_are_read_back_alone_on_one_reused_lookup_consumer() {
    let broker = Broker::new();
    broker.create_topic("t", 2);
    broker.produce_numbered("t", 0, 0, 6000);
    broker.produce_numbered("t", 1, 0, 10);
    let reader = client(&broker, "t").reader();

    let runs = [
        range("t", 0, 0, 1),
        range("t", 0, 5000, 5001),
        range("t", 1, 7, 8),
    ];
    assert_eq!(
        read_back(&reader, &runs),
        [
            Ok(vec!["0:0".to_owned()]),
            Ok(vec!["0:5000".to_owned()]),
            Ok(vec!["1:7".to_owned()])
        ]
    );
    assert_eq!(reader.records_read_back(), 3, "only the records asked for");
    assert_eq!(reader.cached_consumers(), 0);
    // One consumer served both partitions, in turn, and waits for the next
    // lookup with nothing assigned.
    assert!(
        format!("{reader:?}").contains("idle_lookup_consumers: 1"),
        "{reader:?}"
    );
    assert_eq!(
        read_back(&reader, &[range("t", 1, 9, 10)]),
        [Ok(vec!["1:9".to_owned()])]
    );
    assert!(format!("{reader:?}").contains("idle_lookup_consumers: 1"));
}

#[test]
fn a_run_that_cannot_be_read_back_says_why_and_other_partitions_are_still_read() {
    let broker = Broker::new();
    broker.create_topic("t", 2);
    broker.produce_numbered("t", 0, 0, 5);
    broker.produce_numbered("t", 1, 0, 5);
    let reader = broker
        .source()
        .subscribe(["t"])
        .poll_timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .connect()
        .unwrap()
        .reader();
    // Past the end of partition 0: the run waits for a record that never
    // comes.
    let found = read_back(&reader, &[range("t", 0, 7, 8), range("t", 1, 2, 3)]);
    let error = found[0].as_ref().unwrap_err();
    assert!(error.contains("t-0 [7, 8)"), "{error}");
    assert_eq!(found[1], Ok(vec!["1:2".to_owned()]));
}

#[test]
fn retain_ranges_closes_the_consumers_of_partitions_without_a_range() {
    let broker = Broker::new();
    broker.create_topic("t", 2);
    broker.create_topic("u", 1);
    for (topic, partition) in [("t", 0), ("t", 1), ("u", 0)] {
        broker.produce_numbered(topic, partition, 0, 5);
    }
    let reader = client(&broker, "t").reader();
    for (topic, partition) in [("t", 0), ("t", 1), ("u", 0)] {
        reader.read(&range(topic, partition, 0, 3)).unwrap();
    }
    assert_eq!(reader.cached_consumers(), 3);

    // An empty range keeps its partition's consumer: the partition is there.
    reader.retain_ranges(&[range("t", 0, 3, 3), range("u", 0, 3, 5)]);
    assert_eq!(reader.cached_consumers(), 2);
    reader.retain_partitions(&[tp("u", 0)]);
    assert_eq!(reader.cached_consumers(), 1);

    // A partition that comes back is read again, on a new consumer.
    let positions = reader.positions();
    assert_eq!(offsets(&reader.read(&range("t", 1, 3, 5)).unwrap()), [3, 4]);
    assert_eq!(reader.positions(), positions + 1);
    assert_eq!(reader.cached_consumers(), 2);
}

#[test]
fn the_runs_of_a_partition_that_cannot_be_read_back_share_one_timeout() {
    let broker = Broker::new();
    broker.create_topic("t", 1);
    broker.produce_numbered("t", 0, 0, 10);
    let timeout = Duration::from_millis(300);
    let reader = broker
        .source()
        .subscribe(["t"])
        .poll_timeout(timeout)
        .build()
        .unwrap()
        .connect()
        .unwrap()
        .reader();
    // The records are in the log, but the broker answers far too late:
    // every run waits. (Offsets past the end would not do: the broker
    // answers them at once with OffsetOutOfRange.)
    broker.answer_after(Duration::from_secs(5));
    let runs: Vec<_> = (0..10).map(|i| range("t", 0, i, i + 1)).collect();
    let found = read_back(&reader, &runs);
    assert!(found.iter().all(Result::is_err), "{found:?}");
    let not_tried = found
        .iter()
        .filter(|r| r.as_ref().unwrap_err().contains("not tried"))
        .count();
    assert!(not_tried >= 8, "{found:?}");
}

#[test]
fn prepare_positions_each_partition_to_read_once_and_the_reads_continue_from_there() {
    let broker = Broker::new();
    broker.create_topic("t", 3);
    for p in 0..3 {
        broker.produce_numbered("t", p, 0, 50);
    }
    let reader = client(&broker, "t").reader();
    let batch = [
        range("t", 0, 10, 50),
        range("t", 1, 0, 50),
        range("t", 2, 50, 50),
    ];
    reader.prepare(&batch);
    // A retried batch prepares again: nothing moves.
    reader.prepare(&batch);
    assert_eq!(reader.cached_consumers(), 2, "none for the empty range");
    assert_eq!(reader.positions(), 2);
    for range in &batch {
        let records = reader.read(range).unwrap();
        assert_eq!(
            offsets(&records),
            (range.from..range.until).collect::<Vec<_>>()
        );
    }
    assert_eq!(reader.positions(), 2, "the reads continued without a seek");

    // The next batch continues where these reads ended.
    broker.produce_numbered("t", 0, 50, 10);
    let next = [
        range("t", 0, 50, 60),
        range("t", 1, 50, 50),
        range("t", 2, 50, 50),
    ];
    reader.prepare(&next);
    assert_eq!(
        reader.positions(),
        2,
        "prepare left a continuing consumer alone"
    );
    assert_eq!(
        offsets(&reader.read(&next[0]).unwrap()),
        (50..60).collect::<Vec<_>>()
    );
}
