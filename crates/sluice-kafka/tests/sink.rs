//! The Kafka sink's protocol on the mock broker: what it writes, the
//! progress marker that tells a restart whether a batch's transaction
//! committed, and its errors. (The mock broker does not hide aborted
//! records from `read_committed` readers; the end-to-end exactly-once
//! tests run on a broker that does, in the top-level `tests/sink.rs`.)

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_core::{Batch, BatchInfo, InputReader, OutsideSink, Sink, SinkStart};
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
    sink.write(Batch::new(vec![records]), info).expect("write");
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
    sink.write(Batch::new(vec![vec![record]]), &first)
        .expect("write");
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
fn a_batch_committed_before_a_crash_is_found_at_restart_and_not_written_again() {
    let broker = Broker::new();
    broker.create_topic("out", 1);
    let committed = batch(4, 40_000);
    {
        let before_crash = sink(&broker, Delivery::ExactlyOnce);
        before_crash.recover(&start(None)).expect("recover");
        run_batch(&before_crash, &committed, &["a", "b"]);
        // The process dies here: the checkpoint never committed batch 4.
    }
    let end = high_watermark(&broker);

    let restarted = sink(&broker, Delivery::ExactlyOnce);
    assert!(
        restarted
            .recover(&start(Some(&committed)))
            .expect("recover"),
        "the restarted sink must find batch 4's transaction committed"
    );
    // The batch is redone for the checkpoint only: nothing is written.
    run_batch(&restarted, &committed, &["a", "b"]);
    assert_eq!(high_watermark(&broker), end, "batch 4 was written twice");

    // The next batch is written as usual.
    run_batch(&restarted, &batch(5, 41_000), &["c"]);
    assert_eq!(
        read_values(&broker, high_watermark(&broker)),
        ["a", "b", "c"]
    );
}

#[test]
fn a_batch_replanned_after_a_rewind_is_not_taken_for_the_committed_one() {
    let broker = Broker::new();
    broker.create_topic("out", 1);
    let sink_a = sink(&broker, Delivery::ExactlyOnce);
    sink_a.recover(&start(None)).expect("recover");
    run_batch(&sink_a, &batch(4, 40_000), &["a"]);
    drop(sink_a);
    // Same id, later time: planned anew, its output is not in the topic.
    let replanned = batch(4, 90_000);
    let sink_b = sink(&broker, Delivery::ExactlyOnce);
    assert!(!sink_b.recover(&start(Some(&replanned))).expect("recover"));
}

#[test]
fn an_aborted_batch_is_redone_in_a_new_transaction() {
    let broker = Broker::new();
    broker.create_topic("out", 1);
    let sink = sink(&broker, Delivery::ExactlyOnce);
    sink.recover(&start(None)).expect("recover");
    let info = batch(0, 1_000);
    sink.begin(&info).expect("begin");
    sink.write(
        Batch::new(vec![vec![KafkaRecord::new("lost").partition(0)]]),
        &info,
    )
    .expect("write");
    sink.abort(&info);
    // The retry of the same batch begins again and commits.
    run_batch(&sink, &info, &["kept"]);
    let restarted = self::sink(&broker, Delivery::ExactlyOnce);
    assert!(restarted.recover(&start(Some(&info))).expect("recover"));
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
    assert!(sink
        .write(Batch::new(vec![vec![KafkaRecord::new("v")]]), &info)
        .is_err());
    sink.abort(&info);
}
