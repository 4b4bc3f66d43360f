//! The Kafka sink on the mock broker: what it writes, at-least-once
//! delivery, and its errors. The mock broker neither hides aborted records
//! from `read_committed` readers nor keeps offsets committed in a
//! transaction, so the exactly-once protocol (the progress marker found at
//! restart, aborted batches) is tested on a broker with transactions, in
//! the top-level `tests/sink.rs`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_core::{BatchInfo, DeadLetter, InputReader, OutsideSink, Record, Sink, SinkStart};
use sluice_kafka::{Delivery, KafkaRecord, KafkaSink};

use crate::util::{range, Broker};

fn batch(id: u64, time_ms: u64) -> BatchInfo {
    BatchInfo::new(id, UNIX_EPOCH + Duration::from_millis(time_ms), Vec::new())
}

fn sink(broker: &Broker, delivery: Delivery) -> KafkaSink {
    KafkaSink::builder("out", "out")
        .brokers(broker.bootstrap_servers())
        .delivery(delivery)
        .operation_timeout(Duration::from_secs(30))
        .build()
        .expect("sink settings")
}

fn start<'a>(pending: Option<&'a BatchInfo>) -> SinkStart<'a> {
    SinkStart::new("app", Duration::from_millis(100), pending)
}

/// Writes `values` as batch `info` through the whole protocol.
fn run_batch(sink: &KafkaSink, info: &BatchInfo, values: &[&str]) {
    sink.begin(info).expect("begin");
    let records: Vec<KafkaRecord> = values
        .iter()
        .map(|v| KafkaRecord::new(*v).key("k").partition(0))
        .collect();
    sink.write(records, 0, info).expect("write");
    sink.commit(info).expect("commit");
}

fn read_values(broker: &Broker, until: i64) -> Vec<String> {
    let mut client = broker
        .source()
        .subscribe(["out"])
        .build()
        .expect("source")
        .connect()
        .expect("client");
    let reader = client.reader();
    let _ = &mut client;
    reader
        .read(&range("out", 0, 0, until))
        .expect("read the output")
        .iter()
        .map(|r| r.value_str().expect("utf-8").to_owned())
        .collect()
}

#[test]
fn records_of_committed_batches_reach_the_topic_with_key_and_headers() {
    let broker = Broker::new();
    broker.create_topic("out", 1);
    let sink = sink(&broker, Delivery::ExactlyOnce);
    assert!(!sink.recover(&start(None)).expect("recover"));
    let first = batch(0, 1_000);
    sink.begin(&first).expect("begin");
    let record = KafkaRecord::new("v1")
        .key("k1")
        .header("sluice.offset", "7")
        .partition(0);
    sink.write(vec![record], 0, &first).expect("write");
    sink.commit(&first).expect("commit");
    run_batch(&sink, &batch(1, 2_000), &["v2", "v3"]);

    let mut client = broker
        .source()
        .subscribe(["out"])
        .build()
        .expect("source")
        .connect()
        .expect("client");
    let records = client.reader().read(&range("out", 0, 0, 1)).expect("read");
    let _ = &mut client;
    assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(records[0].header("sluice.offset"), Some(&b"7"[..]));
    // Transaction markers take offsets too: read up to the end of the log.
    let values = read_values(&broker, high_watermark(&broker));
    assert_eq!(values, ["v1", "v2", "v3"]);
}

fn high_watermark(broker: &Broker) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .create()
        .expect("consumer");
    consumer
        .fetch_watermarks("out", 0, Duration::from_secs(10))
        .expect("watermarks")
        .1
}

#[test]
fn an_aborted_batch_is_redone_in_a_new_transaction() {
    let broker = Broker::new();
    broker.create_topic("out", 1);
    let sink = sink(&broker, Delivery::ExactlyOnce);
    sink.recover(&start(None)).expect("recover");
    let info = batch(0, 1_000);
    sink.begin(&info).expect("begin");
    sink.write(vec![KafkaRecord::new("lost").partition(0)], 0, &info)
        .expect("write");
    sink.abort(&info);
    // The retry of the same batch begins a new transaction and commits.
    run_batch(&sink, &info, &["kept"]);
}

#[test]
fn at_least_once_flushes_every_record_before_the_checkpoint_commit() {
    let broker = Broker::new();
    broker.create_topic("out", 1);
    let sink = sink(&broker, Delivery::AtLeastOnce);
    assert!(!sink.recover(&start(None)).expect("recover"));
    run_batch(&sink, &batch(0, 1_000), &["x", "y"]);
    // commit() returned: the records are in the log, no transaction needed.
    assert_eq!(read_values(&broker, 2), ["x", "y"]);
    // At-least-once keeps no progress: a redone batch is written again.
    let restarted = self::sink(&broker, Delivery::AtLeastOnce);
    assert!(!restarted
        .recover(&start(Some(&batch(0, 1_000))))
        .expect("recover"));
}

#[test]
fn a_sink_to_a_topic_that_does_not_exist_fails_at_start_naming_it() {
    let broker = Broker::new();
    let sink = sink(&broker, Delivery::ExactlyOnce);
    let error = sink.recover(&start(None)).unwrap_err().to_string();
    assert!(error.contains("\"out\" does not exist"), "{error}");
}

#[test]
fn writing_before_the_sink_started_is_an_error_not_a_panic() {
    let broker = Broker::new();
    let sink = sink(&broker, Delivery::ExactlyOnce);
    let info = batch(
        0,
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    );
    assert!(sink.begin(&info).is_err());
    assert!(sink.write(vec![KafkaRecord::new("v")], 0, &info).is_err());
    sink.abort(&info);
}

#[test]
fn dead_letters_go_to_the_dead_letter_topic_in_the_batch_with_where_they_came_from() {
    let broker = Broker::new();
    broker.create_topic("out", 1);
    broker.create_topic("dlq", 1);
    let sink = KafkaSink::builder("out", "out")
        .brokers(broker.bootstrap_servers())
        .dead_letter_topic("dlq")
        .build()
        .expect("sink settings");
    sink.recover(&start(None)).expect("recover");
    let info = batch(0, 1_000);
    sink.begin(&info).expect("begin");
    let letter = DeadLetter {
        topic: "in".into(),
        partition: 2,
        offset: 41,
        operator: "try_map",
        error: "not a number".to_owned(),
        record: Some(Record::with_value("in", 2, 41, "forty-one")),
        unread: None,
    };
    sink.write_dead_letters(&[letter], &info)
        .expect("dead letters");
    sink.commit(&info).expect("commit");

    let mut client = broker
        .source()
        .subscribe(["dlq"])
        .build()
        .expect("source")
        .connect()
        .expect("client");
    let records = client.reader().read(&range("dlq", 0, 0, 1)).expect("read");
    let _ = &mut client;
    assert_eq!(records[0].value.as_deref(), Some(&b"forty-one"[..]));
    assert_eq!(records[0].header("sluice.topic"), Some(&b"in"[..]));
    assert_eq!(records[0].header("sluice.partition"), Some(&b"2"[..]));
    assert_eq!(records[0].header("sluice.offset"), Some(&b"41"[..]));
    assert_eq!(
        records[0].header("sluice.error"),
        Some(&b"not a number"[..])
    );
}
