//! Partition discovery per consumer strategy.

use std::time::{Duration, Instant};

use sluice_kafka::Error;

use crate::util::{tp, Broker};

#[test]
fn subscribe_lists_every_partition_of_the_listed_topics() {
    let broker = Broker::new();
    broker.create_topic("orders", 3);
    broker.create_topic("payments", 1);
    broker.create_topic("ignored", 2);
    let source = broker
        .source()
        .subscribe(["payments", "orders"])
        .build()
        .unwrap();
    let mut client = source.connect().unwrap();
    let partitions = client.partitions(Instant::now()).unwrap();
    assert_eq!(
        partitions,
        [
            tp("orders", 0),
            tp("orders", 1),
            tp("orders", 2),
            tp("payments", 0)
        ]
    );
}

#[test]
fn subscribing_to_a_missing_topic_is_an_unknown_topic_error() {
    let broker = Broker::new();
    broker.create_topic("present", 1);
    let source = broker
        .source()
        .subscribe(["present", "absent"])
        .build()
        .unwrap();
    let mut client = source.connect().unwrap();
    let err = client.partitions(Instant::now()).unwrap_err();
    assert!(
        matches!(&err, Error::UnknownTopic { topic } if topic == "absent"),
        "{err}"
    );
    assert!(err.is_transient());
}

#[test]
fn pattern_picks_up_a_topic_created_after_connect() {
    let broker = Broker::new();
    broker.create_topic("events-a", 2);
    broker.create_topic("logs", 1);
    let source = broker
        .source()
        .subscribe_pattern("^events-.*")
        .build()
        .unwrap();
    let mut client = source.connect().unwrap();
    assert_eq!(
        client.partitions(Instant::now()).unwrap(),
        [tp("events-a", 0), tp("events-a", 1)]
    );

    broker.create_topic("events-b", 1);
    assert_eq!(
        client.partitions(Instant::now()).unwrap(),
        [tp("events-a", 0), tp("events-a", 1), tp("events-b", 0)]
    );
}

#[test]
fn discovery_interval_caches_the_partitions() {
    let broker = Broker::new();
    broker.create_topic("events-a", 1);
    let source = broker
        .source()
        .subscribe_pattern("^events-")
        .discovery_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut client = source.connect().unwrap();
    let start = Instant::now();
    assert_eq!(client.partitions(start).unwrap(), [tp("events-a", 0)]);

    broker.create_topic("events-b", 1);
    // Within the interval: the cached answer.
    let cached = client.partitions(start + Duration::from_secs(60)).unwrap();
    assert_eq!(cached, [tp("events-a", 0)]);
    // Once it has elapsed: fetched again.
    let fresh = client
        .partitions(start + Duration::from_secs(3601))
        .unwrap();
    assert_eq!(fresh, [tp("events-a", 0), tp("events-b", 0)]);
}

#[test]
fn assign_lists_exactly_the_assigned_partitions() {
    let broker = Broker::new();
    broker.create_topic("orders", 4);
    let source = broker
        .source()
        .assign([(tp("orders", 2), 0), (tp("orders", 0), 0)])
        .build()
        .unwrap();
    let mut client = source.connect().unwrap();
    assert_eq!(
        client.partitions(Instant::now()).unwrap(),
        [tp("orders", 0), tp("orders", 2)]
    );
}

#[test]
fn connect_needs_a_group_id() {
    let broker = Broker::new();
    let source = sluice_kafka::KafkaSource::builder()
        .brokers(broker.bootstrap_servers())
        .subscribe(["t"])
        .build()
        .unwrap();
    let err = source.connect().unwrap_err();
    assert!(
        matches!(&err, Error::Config { setting, .. } if setting == "group_id"),
        "{err}"
    );
    source.with_default_group_id("app").connect().unwrap();
}
