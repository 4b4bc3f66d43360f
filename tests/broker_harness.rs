//! The test brokers themselves: if these fail, look here before blaming
//! sluice.

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
fn tansu_on_disk_keeps_records_across_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut broker = Tansu::start_on_disk(data.path());
    broker.create_topic("durable", 2);
    kafka::produce(&broker.bootstrap(), "durable", Some(1), ["a", "b", "c"]);
    let before = broker.bootstrap();

    broker.restart();

    assert_eq!(broker.bootstrap(), before, "restart keeps the port");
    assert_eq!(kafka::record_count(&broker.bootstrap(), "durable"), 3);
    kafka::produce(&broker.bootstrap(), "durable", Some(0), ["d"]);
    assert_eq!(kafka::record_count(&broker.bootstrap(), "durable"), 4);
}

#[test]
fn mock_cluster_serves_produced_records() {
    let cluster = kafka::mock_cluster();
    kafka::create_mock_topic(&cluster, "mocked", 2);
    let bootstrap = cluster.bootstrap_servers();
    kafka::produce(&bootstrap, "mocked", None, (0..100).map(|i| i.to_string()));
    assert_eq!(kafka::record_count(&bootstrap, "mocked"), 100);
}
