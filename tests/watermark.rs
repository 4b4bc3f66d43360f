//! The event-time watermark end to end, on the mock broker: a partition
//! that goes quiet holds the watermark back only until its idle timeout
//! (in batch time), and holds it again once it brings records.
//!
//! Every check is in batch time and event time, never the wall clock: the
//! batch that closes a window is compared with the batch that last brought
//! records from the quiet partition.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use sluice::prelude::*;

use crate::util::job::{self, RunningJob, BATCH_INTERVAL};
use crate::util::kafka;

/// Event time of the first window's start, on the 1 s grid.
const T0: i64 = 1_700_000_000_000;
/// The windows: tumbling, one second of event time.
const WINDOW_MS: i64 = 1_000;
/// A partition silent for this long (batch time) stops holding the
/// watermark: ten batches.
const IDLE: Duration = Duration::from_millis(10 * BATCH_INTERVAL.as_millis() as u64);

/// Window start → value → count, with the id of the batch that closed it.
type Closed = Arc<Mutex<BTreeMap<i64, (u64, BTreeMap<String, u64>)>>>;

fn time_ms(batch: &BatchCompleted) -> i64 {
    batch
        .info
        .time
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The time of the last committed batch that read records of `partition`.
fn last_read_from(batches: &[BatchCompleted], partition: i32) -> Option<i64> {
    batches
        .iter()
        .filter(|b| {
            b.info
                .ranges
                .iter()
                .any(|r| r.partition == partition && r.until > r.from)
        })
        .map(time_ms)
        .max()
}

/// The time of the batch with id `id`.
fn batch_time(batches: &[BatchCompleted], id: u64) -> i64 {
    batches
        .iter()
        .find(|b| b.info.id == id)
        .map(time_ms)
        .expect("the batch that closed the window was committed")
}

#[test]
fn an_idle_partition_stops_holding_the_watermark_and_holds_it_again_once_it_returns() {
    let cluster = kafka::mock_cluster();
    kafka::create_mock_topic(&cluster, "clicks", 2);
    let bootstrap = cluster.bootstrap_servers();
    let tmp = tempfile::tempdir().unwrap();
    let ctx = job::context(&tmp.path().join("checkpoint"))
        .build()
        .unwrap();
    let source = job::source(&bootstrap)
        .subscribe(["clicks"])
        .build()
        .unwrap();
    let closed: Closed = Arc::default();
    let out = Arc::clone(&closed);
    ctx.kafka_stream(source)
        .unwrap()
        .values_utf8()
        .map(|v| (v, ()))
        .event_time_window(
            "per_second",
            EventTimeSpec::count(Window::tumbling(Duration::from_millis(WINDOW_MS as u64)))
                .idle_timeout(IDLE),
        )
        .foreach_batch(move |windows, info| {
            let mut out = out.lock().unwrap();
            for w in windows {
                let (by, counts) = out.entry(w.start).or_insert((info.id, BTreeMap::new()));
                assert_eq!(*by, info.id, "window {} closed twice", w.start);
                counts.insert(w.key, w.value);
            }
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    let mut job = RunningJob::start(ctx);
    let closed_by = |start: i64| closed.lock().unwrap().get(&start).map(|(id, _)| *id);

    // Both partitions start in the first window.
    kafka::produce_timed(
        &bootstrap,
        "clicks",
        &[(0, T0 + 100, "a".into()), (1, T0 + 200, "b".into())],
    );
    job.wait_for_records(2, "the first two clicks");
    // Partition 0 moves on; partition 1 goes quiet.
    kafka::produce_timed(
        &bootstrap,
        "clicks",
        &[
            (0, T0 + 1_100, "a".into()),
            (0, T0 + 2_100, "a".into()),
            (0, T0 + 3_100, "a".into()),
        ],
    );
    let id = job.wait_for("the windows partition 1 held to close", |_| {
        closed_by(T0 + 2_000)
    });
    let batches = job.batches();
    let quiet_since = last_read_from(&batches, 1).expect("a batch read partition 1");
    let first_close = batch_time(&batches, closed_by(T0).unwrap());
    assert!(
        first_close >= quiet_since + IDLE.as_millis() as i64,
        "window {T0} closed at batch time {first_close}, before partition 1 (last read at \
         {quiet_since}) was idle for {IDLE:?}"
    );
    assert_eq!(closed_by(T0 + 2_000), Some(id));

    // Partition 1 returns: a record behind the watermark (late) and one in
    // the open window; partition 0 moves on again.
    kafka::produce_timed(
        &bootstrap,
        "clicks",
        &[(1, T0 + 1_500, "late".into()), (1, T0 + 3_500, "b".into())],
    );
    job.wait_for_records(7, "partition 1's return");
    kafka::produce_timed(&bootstrap, "clicks", &[(0, T0 + 5_100, "a".into())]);
    job.wait_for("the window partition 1 held again to close", |_| {
        closed_by(T0 + 3_000)
    });
    let progress = job.stop();
    let returned_at = last_read_from(&progress.batches, 1).unwrap();
    assert!(
        returned_at > quiet_since,
        "partition 1's return was read later"
    );
    let second_close = batch_time(&progress.batches, closed_by(T0 + 3_000).unwrap());
    assert!(
        second_close >= returned_at + IDLE.as_millis() as i64,
        "window {} closed at batch time {second_close}, while partition 1 (read at \
         {returned_at}) still held the watermark at {}",
        T0 + 3_000,
        T0 + 3_500
    );

    let counts = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    };
    let closed: BTreeMap<i64, BTreeMap<String, u64>> = closed
        .lock()
        .unwrap()
        .iter()
        .map(|(start, (_, c))| (*start, c.clone()))
        .collect();
    assert_eq!(
        closed,
        BTreeMap::from([
            (T0, counts(&[("a", 1), ("b", 1)])),
            (T0 + 1_000, counts(&[("a", 1)])),
            (T0 + 2_000, counts(&[("a", 1)])),
            (T0 + 3_000, counts(&[("a", 1), ("b", 1)])),
        ]),
        "the closed windows; the window of {} stays open",
        T0 + 5_000
    );
    let late: u64 = progress
        .batches
        .iter()
        .flat_map(|b| &b.late_records)
        .filter(|l| l.partition == 1)
        .map(|l| l.count)
        .sum();
    assert_eq!(late, 1, "partition 1's record behind the watermark is late");
}
