//! The test brokers themselves: if these fail, look here before blaming
//! sluice.

use rdkafka::Message;

use crate::util::kafka;
use crate::util::tansu::Tansu;

#[test]
fn tansu_harness_serves_produced_records() {
    let broker = Tansu::start();
    broker.create_topic("harness", 3);

    let values = (0..1000).map(|i| format!("record-{i}"));
    let delivered = kafka::produce(&broker.bootstrap(), "harness", None, values);
    assert_eq!(delivered, 1000);

    let marks = kafka::watermarks(&broker.bootstrap(), "harness");
    assert_eq!(marks.len(), 3, "partitions: {marks:?}");
    let total: i64 = marks.iter().map(|(_, low, high)| high - low).sum();
    assert_eq!(total, 1000, "watermarks: {marks:?}");
}

#[test]
fn tansu_keeps_records_across_restart_on_the_same_port() {
    let data = tempfile::tempdir().unwrap();
    let mut broker = Tansu::start_on_disk(data.path());
    broker.create_topic("durable", 2);
    kafka::produce(&broker.bootstrap(), "durable", Some(1), ["a", "b", "c"]);
    let before = broker.bootstrap();

    broker.restart();

    assert_eq!(broker.bootstrap(), before);
    assert!(data.path().join(broker.kind().db_file()).is_file());
    assert_eq!(kafka::record_count(&broker.bootstrap(), "durable"), 3);
    kafka::produce(&broker.bootstrap(), "durable", Some(0), ["d"]);
    assert_eq!(kafka::record_count(&broker.bootstrap(), "durable"), 4);
}

#[test]
fn tansu_stopped_broker_refuses_producers_until_restarted() {
    let mut broker = Tansu::start();
    broker.create_topic("outage", 1);
    broker.stop();
    assert!(!broker.is_running());
    assert!(std::net::TcpStream::connect(broker.bootstrap()).is_err());

    broker.restart();
    kafka::produce(&broker.bootstrap(), "outage", None, ["after"]);
    assert_eq!(kafka::record_count(&broker.bootstrap(), "outage"), 1);
}

// Memory storage's watermarks are wrong (see `Tansu::start`), so this one
// counts what a fetch returns instead.
#[test]
fn tansu_in_memory_serves_produced_records_to_fetches() {
    let broker = Tansu::start_in_memory();
    broker.create_topic("fast", 2);
    kafka::produce(
        &broker.bootstrap(),
        "fast",
        None,
        (0..500).map(|i| i.to_string()),
    );

    let records = kafka::consume(&broker.bootstrap(), "fast", 500);
    let mut values: Vec<i32> = records
        .iter()
        .map(|m| {
            std::str::from_utf8(m.payload().unwrap())
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    values.sort_unstable();
    assert_eq!(values, (0..500).collect::<Vec<_>>());
}

#[test]
fn mock_cluster_serves_produced_records() {
    let cluster = kafka::mock_cluster();
    kafka::create_mock_topic(&cluster, "mocked", 2);
    let bootstrap = cluster.bootstrap_servers();
    kafka::produce(&bootstrap, "mocked", None, (0..100).map(|i| i.to_string()));
    assert_eq!(kafka::record_count(&bootstrap, "mocked"), 100);
    assert_eq!(kafka::consume(&bootstrap, "mocked", 100).len(), 100);
}
