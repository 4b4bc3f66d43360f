//! The driver and an outside sink: every partition's values are written
//! once, in order, between the batch's `begin` and `commit`; a write that
//! fails fails the batch, is not retried as a task, and the batch is
//! aborted before it is computed again.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sluice_core::{BatchInfo, BoxError, MemorySource, OutsideSink, Sink, SinkStart};
use sluice_runtime::BatchFailurePolicy;

use crate::util::{context, values};

/// How long a test waits for the sink to commit everything.
const WAIT: Duration = Duration::from_secs(60);

/// A call the driver made on the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Begin(u64),
    Write {
        batch: u64,
        partition: usize,
        values: Vec<String>,
    },
    Commit(u64),
    Abort(u64),
}

/// An outside sink that records the calls it gets, and fails the first
/// write when asked to.
#[derive(Clone, Default)]
struct RecordingSink {
    calls: Arc<(Mutex<Vec<Call>>, Condvar)>,
    fail_first_write: Arc<Mutex<bool>>,
}

impl RecordingSink {
    fn failing_first_write() -> Self {
        let sink = Self::default();
        *sink.fail_first_write.lock().unwrap() = true;
        sink
    }

    fn push(&self, call: Call) {
        let (calls, changed) = &*self.calls;
        calls.lock().unwrap().push(call);
        changed.notify_all();
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.0.lock().unwrap().clone()
    }

    /// Waits until committed batches hold `count` values.
    fn wait_for_committed(&self, count: usize) {
        let deadline = Instant::now() + WAIT;
        let (calls, changed) = &*self.calls;
        let mut guard = calls.lock().unwrap();
        loop {
            let committed: usize = committed_writes(&guard)
                .iter()
                .map(|(_, _, values)| values.len())
                .sum();
            if committed >= count {
                return;
            }
            let now = Instant::now();
            assert!(now < deadline, "{committed} of {count} values committed");
            guard = changed.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }
}

impl OutsideSink for RecordingSink {
    fn name(&self) -> &str {
        "recording"
    }

    fn recover(&self, _start: &SinkStart<'_>) -> Result<bool, BoxError> {
        Ok(false)
    }

    fn begin(&self, batch: &BatchInfo) -> Result<(), BoxError> {
        self.push(Call::Begin(batch.id));
        Ok(())
    }

    fn commit(&self, batch: &BatchInfo) -> Result<(), BoxError> {
        self.push(Call::Commit(batch.id));
        Ok(())
    }

    fn abort(&self, batch: &BatchInfo) {
        self.push(Call::Abort(batch.id));
    }
}

impl Sink<String> for RecordingSink {
    fn write(
        &self,
        values: Vec<String>,
        partition: usize,
        info: &BatchInfo,
    ) -> Result<(), BoxError> {
        self.push(Call::Write {
            batch: info.id,
            partition,
            values,
        });
        let mut fail = self.fail_first_write.lock().unwrap();
        if std::mem::take(&mut *fail) {
            return Err("the outside system refused the write".into());
        }
        Ok(())
    }
}

/// The writes of the batches that committed, in call order: the writes
/// between a batch's last `begin` and its `commit`.
fn committed_writes(calls: &[Call]) -> Vec<(u64, usize, Vec<String>)> {
    let mut committed = Vec::new();
    let mut open = Vec::new();
    for call in calls {
        match call {
            Call::Begin(_) | Call::Abort(_) => open.clear(),
            Call::Write {
                batch,
                partition,
                values,
            } => open.push((*batch, *partition, values.clone())),
            Call::Commit(_) => committed.append(&mut open),
        }
    }
    committed
}

/// Every partition's values as the committed batches wrote them, keyed
/// by the first value's tag (each partition's values have their own).
fn written_by_partition(calls: &[Call]) -> BTreeMap<String, Vec<String>> {
    let mut written: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, _, values) in committed_writes(calls) {
        let tag = values[0].split('-').next().unwrap().to_owned();
        written.entry(tag).or_default().extend(values);
    }
    written
}

/// A source of three partitions, tagged `p0`..`p2`, of `n` values each.
fn source(n: usize) -> (MemorySource, BTreeMap<String, Vec<String>>) {
    let source = MemorySource::new();
    let mut expected = BTreeMap::new();
    for partition in 0..3 {
        let tag = format!("p{partition}");
        let vals: Vec<String> = values(&tag, 0..n)
            .into_iter()
            .enumerate()
            .map(|(i, v)| format!("{v}-{i}"))
            .collect();
        source.append("words", partition, vals.clone());
        expected.insert(tag, vals);
    }
    (source, expected)
}

#[test]
fn an_outside_sink_gets_each_partition_once_in_order_between_begin_and_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (source, expected) = source(40);
    let ctx = context(dir.path()).build().unwrap();
    let sink = RecordingSink::default();
    ctx.stream(source)
        .unwrap()
        .values_utf8()
        .sink(sink.clone())
        .unwrap();
    ctx.start().unwrap();
    sink.wait_for_committed(120);
    ctx.stop(true).unwrap();

    let calls = sink.calls();
    assert_eq!(written_by_partition(&calls), expected);
    // Each batch: begin, then at most one write per partition, then commit.
    let mut open: Option<(u64, Vec<usize>)> = None;
    for call in &calls {
        match call {
            Call::Begin(id) => {
                assert!(open.is_none(), "begin of batch {id} inside another batch");
                open = Some((*id, Vec::new()));
            }
            Call::Write {
                batch, partition, ..
            } => {
                let (id, written) = open.as_mut().expect("a write outside a batch");
                assert_eq!(batch, id, "a write of another batch");
                assert!(
                    !written.contains(partition),
                    "partition {partition} of batch {id} written twice"
                );
                written.push(*partition);
            }
            Call::Commit(id) => {
                assert_eq!(open.take().map(|(open, _)| open), Some(*id));
            }
            Call::Abort(id) => panic!("batch {id} aborted"),
        }
    }
}

#[test]
fn a_failed_sink_write_is_not_retried_as_a_task_and_the_batch_is_aborted_then_redone() {
    let dir = tempfile::tempdir().unwrap();
    let (source, expected) = source(40);
    let ctx = context(dir.path())
        .task_attempts(3)
        .on_batch_failure(BatchFailurePolicy::Retry {
            backoff: Duration::from_millis(10),
            max_attempts: 3,
        })
        .build()
        .unwrap();
    let sink = RecordingSink::failing_first_write();
    ctx.stream(source)
        .unwrap()
        .values_utf8()
        .sink(sink.clone())
        .unwrap();
    ctx.start().unwrap();
    sink.wait_for_committed(120);
    ctx.stop(true).unwrap();

    let calls = sink.calls();
    let Some(Call::Write {
        batch: failed,
        partition,
        ..
    }) = calls
        .iter()
        .find(|c| matches!(c, Call::Write { .. }))
        .cloned()
    else {
        panic!("no write in {calls:?}");
    };
    let abort = calls
        .iter()
        .position(|c| *c == Call::Abort(failed))
        .expect("the batch whose write failed is aborted");
    let writes_before_abort = calls[..abort]
        .iter()
        .filter(|c| matches!(c, Call::Write { batch, partition: p, .. } if *batch == failed && *p == partition))
        .count();
    assert_eq!(
        writes_before_abort, 1,
        "the failed write of partition {partition} was retried inside the batch"
    );
    assert_eq!(
        calls[abort + 1],
        Call::Begin(failed),
        "the same batch is begun again"
    );
    assert_eq!(written_by_partition(&calls), expected);
}
