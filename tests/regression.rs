//! Regressions, each named after the fault it pins.

use std::num::NonZeroUsize;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use sluice::prelude::*;
use sluice::sink::LatestValueSink;
use sluice::stream::Error as CoreError;
use sluice::Error as RuntimeError;

use crate::util::job::{self, RunningJob, APP_ID, COUNTS, WAIT};
use crate::util::kafka;

/// Outputs, a stream or a listener added after `start()` were accepted
/// silently: the output never ran, and a sink's family, never created,
/// made the next commit fail and stopped the job.
#[test]
fn outputs_streams_and_listeners_added_after_start_are_refused_and_the_job_keeps_committing() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "events", 2);
    let dir = tempfile::tempdir().unwrap();
    let source = || {
        job::source(&bootstrap)
            .subscribe(["events"])
            .build()
            .unwrap()
    };
    let ctx = Arc::new(job::context(dir.path()).build().unwrap());
    let values = ctx.kafka_stream(source()).unwrap().values_utf8();
    values.count_by_value().save_counts(COUNTS).unwrap();
    let mut running = RunningJob::start_shared(Arc::clone(&ctx));
    running.wait_for_first_batch();

    // Each late registration fails at its call, naming what it refused.
    let refused = |result: sluice::stream::Result<()>, name: &str| match result {
        Err(CoreError::RegisteredAfterStart { output }) => assert_eq!(output, name),
        other => panic!("{name} after start: expected a refusal, got {other:?}"),
    };
    refused(
        values.foreach_batch(|_, _| Ok::<_, std::io::Error>(())),
        "foreach_batch",
    );
    refused(values.print(5), "print");
    refused(
        values.count_by_value().save_counts("late_counts"),
        "save_counts(\"late_counts\")",
    );
    refused(
        values
            .map(|v: String| (v.clone(), v))
            .checkpoint_sink(LatestValueSink::new("late_latest")),
        "sink to \"late_latest\"",
    );
    let message = values.print(5).unwrap_err().to_string();
    assert!(message.contains("after the job started"), "{message}");
    assert!(
        matches!(
            ctx.kafka_stream(source()),
            Err(RuntimeError::RegisteredAfterStart {
                what: "a Kafka stream"
            })
        ),
        "a second stream after start"
    );
    assert!(
        matches!(
            ctx.add_listener(|_: &BatchCompleted, _: &dyn CheckpointStore| {}),
            Err(RuntimeError::RegisteredAfterStart { what: "a listener" })
        ),
        "a listener after start"
    );

    // The job runs on with what it started with.
    let produced = job::produce_numbered(&bootstrap, "events", 2, 0..50);
    running.wait_for_records(100, "the 100 records produced after the refusals");
    running.stop();
    assert_eq!(job::committed_counts(dir.path()), job::counts_of(&produced));
    let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
    assert_eq!(
        checkpoint.families().collect::<Vec<_>>(),
        [COUNTS],
        "no family of a refused sink was created"
    );
}

/// What `foreach_batch` after a `count_by_value` saw of one batch with
/// records: its id and, per reduce partition, the idempotency key and the
/// values counted there.
type Shuffled = (u64, Vec<(String, Vec<String>)>);

/// A job counting the values of `orders` whose first output notes each
/// batch's reduce partitions and, if `hold` is given, waits on it before
/// the batch can commit.
fn shuffling_job(
    bootstrap: &str,
    context: sluice::StreamingContextBuilder,
    seen: &Arc<Mutex<Vec<Shuffled>>>,
    hold: Option<mpsc::Receiver<()>>,
) -> RunningJob {
    let ctx = context.build().unwrap();
    let source = job::source(bootstrap)
        .subscribe(["orders"])
        .build()
        .unwrap();
    let counts = ctx
        .kafka_stream(source)
        .unwrap()
        .values_utf8()
        .count_by_value();
    let (seen, hold) = (Arc::clone(seen), Mutex::new(hold));
    counts
        .foreach_batch(move |batch, info: &BatchInfo| {
            if batch.is_empty() {
                return Ok::<_, std::io::Error>(());
            }
            let partitions = batch
                .partitions()
                .iter()
                .enumerate()
                .map(|(i, counted)| {
                    let mut values: Vec<String> = counted.iter().map(|(v, _)| v.clone()).collect();
                    values.sort();
                    (info.idempotency_key(i), values)
                })
                .collect();
            seen.lock().unwrap().push((info.id, partitions));
            if let Some(hold) = &*hold.lock().unwrap() {
                // Released, or the test dropped the sender.
                let _ = hold.recv();
            }
            Ok(())
        })
        .unwrap();
    counts.save_counts(COUNTS).unwrap();
    RunningJob::start(ctx)
}

/// After a shuffle, the reduce partition count followed the worker count,
/// so a batch redone with another `--workers` (or on another machine) put
/// other records under the same idempotency key. The checkpoint now keeps
/// the count of the first start.
#[test]
fn a_batch_redone_with_fewer_workers_keeps_the_recorded_shuffle_partitions_and_idempotency_keys() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "orders", 2);
    let mut produced = job::produce_numbered(&bootstrap, "orders", 2, 0..40);
    let dir = tempfile::tempdir().unwrap();

    // First start with 3 workers: 3 shuffle partitions, recorded. The run
    // is held inside its first batch with records, which is then cancelled.
    let first_run: Arc<Mutex<Vec<Shuffled>>> = Arc::default();
    let (release, hold) = mpsc::channel();
    let running = shuffling_job(
        &bootstrap,
        job::context(dir.path()).workers(3),
        &first_run,
        Some(hold),
    );
    let planned = job::poll(
        "the first batch with records to reach its output",
        WAIT,
        || first_run.lock().unwrap().first().cloned(),
        || "no batch yet".to_owned(),
    );
    assert_eq!(
        planned.1.len(),
        3,
        "3 workers at the first start: {planned:?}"
    );
    let err = running.cancel(|| drop(release));
    assert!(
        matches!(err, RuntimeError::Aborted { id } if id == planned.0),
        "{err}"
    );
    let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
    assert_eq!(checkpoint.last_batch().unwrap(), None, "nothing committed");
    assert_eq!(
        checkpoint.shuffle_partitions().unwrap(),
        NonZeroUsize::new(3)
    );
    drop(checkpoint);

    // The restart has 1 worker and asks for 5 shuffle partitions: the
    // recorded 3 win, and the batch is redone with the same records under
    // each key.
    produced.extend(job::produce_numbered(&bootstrap, "orders", 2, 40..60));
    let second_run: Arc<Mutex<Vec<Shuffled>>> = Arc::default();
    let mut running = shuffling_job(
        &bootstrap,
        job::context(dir.path()).workers(1).shuffle_partitions(5),
        &second_run,
        None,
    );
    running.wait_for_records(120, "all 120 records");
    running.stop();
    let batches = second_run.lock().unwrap().clone();
    assert_eq!(
        batches[0], planned,
        "the redone batch: same id, same records under each idempotency key"
    );
    for (id, partitions) in &batches {
        assert_eq!(partitions.len(), 3, "reduce partitions of batch {id}");
    }
    assert_eq!(job::committed_counts(dir.path()), job::counts_of(&produced));
    let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
    assert_eq!(
        checkpoint.shuffle_partitions().unwrap(),
        NonZeroUsize::new(3)
    );
}
