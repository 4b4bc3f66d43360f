//! Watermarks, start offsets and planning on real broker offsets.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_core::{plan_ranges, DataLossPolicy, Error, PartitionOffsets, ResetKind};
use sluice_kafka::StartOffsets;

use crate::util::{eventually, tp, Broker};

#[test]
fn offsets_are_the_watermarks() {
    let broker = Broker::new();
    broker.create_topic("t", 2);
    broker.produce_numbered("t", 0, 0, 5);
    let source = broker.source().subscribe(["t"]).build().unwrap();
    let mut client = source.connect().unwrap();
    let partitions = client.partitions(Instant::now()).unwrap();
    let offsets = client.offsets(&partitions).unwrap();
    assert_eq!(
        offsets,
        [
            PartitionOffsets::new(tp("t", 0), 0, 5),
            PartitionOffsets::new(tp("t", 1), 0, 0)
        ]
    );
}

#[test]
fn start_offsets_resolve_earliest_latest_and_timestamps() {
    let broker = Broker::new();
    broker.create_topic("t", 2);
    broker.produce_numbered("t", 0, 0, 5);
    broker.produce_numbered("t", 1, 0, 2);
    let source = broker.source().subscribe(["t"]).build().unwrap();
    let mut client = source.connect().unwrap();
    let partitions = client.partitions(Instant::now()).unwrap();
    let offsets = client.offsets(&partitions).unwrap();

    let earliest = client
        .start_offsets(&StartOffsets::Earliest, &offsets)
        .unwrap();
    assert_eq!(earliest, BTreeMap::from([(tp("t", 0), 0), (tp("t", 1), 0)]));
    let latest = client
        .start_offsets(&StartOffsets::Latest, &offsets)
        .unwrap();
    assert_eq!(latest, BTreeMap::from([(tp("t", 0), 5), (tp("t", 1), 2)]));
    // No record is that late: start at the latest offset.
    let future = StartOffsets::Timestamp(i64::from(i32::MAX) * 1000);
    let by_time = client.start_offsets(&future, &offsets).unwrap();
    assert_eq!(by_time, latest);
    let explicit = StartOffsets::Offsets(BTreeMap::from([(tp("t", 0), 3)]));
    let explicit = client.start_offsets(&explicit, &offsets).unwrap();
    assert_eq!(explicit, BTreeMap::from([(tp("t", 0), 3), (tp("t", 1), 0)]));
}

#[test]
fn assigned_offsets_win_over_the_start_policy() {
    let broker = Broker::new();
    broker.create_topic("t", 2);
    broker.produce_numbered("t", 0, 0, 5);
    broker.produce_numbered("t", 1, 0, 5);
    let source = broker
        .source()
        .assign([(tp("t", 0), 2), (tp("t", 1), 4)])
        .start_from(StartOffsets::Latest)
        .build()
        .unwrap();
    let mut client = source.connect().unwrap();
    let partitions = client.partitions(Instant::now()).unwrap();
    let offsets = client.offsets(&partitions).unwrap();
    let start = client.start_offsets(source.start_from(), &offsets).unwrap();
    assert_eq!(start, BTreeMap::from([(tp("t", 0), 2), (tp("t", 1), 4)]));
}

/// The mock broker keeps 5 MiB per partition and deletes the oldest
/// message sets beyond that: the log start moves like under retention.
#[test]
fn positions_deleted_by_retention_are_data_loss() {
    let broker = Broker::new();
    broker.create_topic("t", 1);
    let big = vec![b'x'; 900 * 1024];
    for _ in 0..8 {
        broker.produce("t", 0, [&big]);
    }
    let source = broker.source().subscribe(["t"]).build().unwrap();
    let mut client = source.connect().unwrap();
    let partitions = client.partitions(Instant::now()).unwrap();
    let offsets = eventually(Duration::from_secs(10), "the log start to move", || {
        let o = client.offsets(&partitions).unwrap();
        (o[0].log_start > 0).then_some(o)
    });
    assert_eq!(offsets[0].latest, 8);
    let log_start = offsets[0].log_start;

    let positions = BTreeMap::from([(tp("t", 0), 0)]);
    let err = plan_ranges(&positions, &offsets, None, DataLossPolicy::Fail).unwrap_err();
    assert!(matches!(err, Error::DataLoss { stored: 0, log_start: s, .. } if s == log_start));
    let plan = plan_ranges(&positions, &offsets, None, DataLossPolicy::ResetToEarliest).unwrap();
    assert_eq!((plan.ranges[0].from, plan.ranges[0].until), (log_start, 8));
    let reset = plan.reset_of(&tp("t", 0)).unwrap();
    assert_eq!(
        (reset.kind, reset.offsets),
        (ResetKind::BelowLogStart, log_start as u64)
    );

    // A reader asked for deleted offsets fails instead of jumping, with an
    // error the driver recognises as the data-loss case.
    let reader = client.reader();
    let range = crate::util::range("t", 0, 0, 8);
    let err = sluice_core::InputReader::read(&reader, &range).unwrap_err();
    assert_eq!(err.offset_out_of_range(), Some(&range), "{err}");
}

#[test]
fn partitions_with_offsets_follows_new_topics_and_new_records() {
    let broker = Broker::new();
    broker.create_topic("events-a", 2);
    broker.produce_numbered("events-a", 1, 0, 3);
    let source = broker
        .source()
        .subscribe_pattern("^events-.*")
        .build()
        .unwrap();
    let mut client = source.connect().unwrap();
    assert_eq!(
        client.partitions_with_offsets(Instant::now()).unwrap(),
        [
            PartitionOffsets::new(tp("events-a", 0), 0, 0),
            PartitionOffsets::new(tp("events-a", 1), 0, 3)
        ]
    );

    // Discovery and the offsets of the known partitions run at once; the
    // new topic's partition gets its offsets from a request of its own.
    broker.create_topic("events-b", 1);
    broker.produce_numbered("events-b", 0, 0, 2);
    broker.produce_numbered("events-a", 0, 0, 4);
    assert_eq!(
        client.partitions_with_offsets(Instant::now()).unwrap(),
        [
            PartitionOffsets::new(tp("events-a", 0), 0, 4),
            PartitionOffsets::new(tp("events-a", 1), 0, 3),
            PartitionOffsets::new(tp("events-b", 0), 0, 2)
        ]
    );
}
