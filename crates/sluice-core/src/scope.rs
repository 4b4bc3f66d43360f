//! Everything one batch's computation shares: its identity, input,
//! executor, staged writes and materialised stage outputs.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::poison::read_back;
use crate::shared_reads::SharedReads;
use crate::state::StateStore;
use crate::{
    BatchEnv, BatchInfo, BoxError, DeadLetter, Error, Executor, InputReader, LateCount,
    OffsetRange, PoisonPolicy, Record, Result, WriteSet,
};

/// A record's topic, partition and offset.
type RecordAt = (Arc<str>, i32, i64);

/// State of one batch while it is computed. Dropped when the batch ends, so
/// nothing leaks from one batch into the next.
pub(crate) struct BatchScope {
    pub(crate) info: BatchInfo,
    pub(crate) input: Arc<dyn InputReader>,
    pub(crate) executor: Arc<dyn Executor>,
    /// Keyed state committed by earlier batches.
    pub(crate) state: Arc<dyn StateStore>,
    pub(crate) writes: Mutex<WriteSet>,
    pub(crate) poison: PoisonPolicy,
    /// Reduce partitions of a shuffle without an explicit count.
    pub(crate) shuffle_partitions: usize,
    /// Records set aside by succeeded tasks, once each however many
    /// outputs or attempts met them.
    dead_letters: Mutex<BTreeMap<RecordAt, DeadLetter>>,
    /// Late records per event-time window operator, by its name.
    late: Mutex<BTreeMap<Arc<str>, Vec<LateCount>>>,
    records_read: Vec<AtomicU64>,
    /// The smallest and largest Kafka timestamps of the records read
    /// (`i64::MAX` and `i64::MIN` while none had one).
    min_timestamp: AtomicI64,
    max_timestamp: AtomicI64,
    /// The input's chunks, read once for all outputs.
    reads: SharedReads,
    cancelled: Arc<AtomicBool>,
    stages: Mutex<HashMap<usize, Arc<dyn Any + Send + Sync>>>,
    /// What a stage leaves for other nodes to read (not take) this batch.
    kept: Mutex<HashMap<usize, Arc<dyn Any + Send + Sync>>>,
}

impl BatchScope {
    /// The scope of a batch whose output operations share their reads of
    /// the input through `reads`.
    pub(crate) fn new(
        env: BatchEnv,
        poison: PoisonPolicy,
        shuffle_partitions: usize,
        reads: SharedReads,
    ) -> Self {
        let BatchEnv {
            info,
            input,
            executor,
            state,
            cancelled,
        } = env;
        Self {
            input,
            executor,
            state,
            poison,
            shuffle_partitions,
            dead_letters: Mutex::new(BTreeMap::new()),
            late: Mutex::new(BTreeMap::new()),
            records_read: info.ranges.iter().map(|_| AtomicU64::new(0)).collect(),
            min_timestamp: AtomicI64::new(i64::MAX),
            max_timestamp: AtomicI64::new(i64::MIN),
            reads,
            writes: Mutex::new(WriteSet::new()),
            cancelled,
            stages: Mutex::new(HashMap::new()),
            kept: Mutex::new(HashMap::new()),
            info,
        }
    }

    /// Notes how many records the source task of range `part` read. Stored,
    /// not added: a range read again (a retry, a second output) has the same
    /// records.
    pub(crate) fn note_records_read(&self, part: usize, records: usize) {
        self.records_read[part].store(records as u64, Ordering::Relaxed);
    }

    /// Notes the Kafka timestamps of `records`, read by a source task. A
    /// chunk read again (a retry, a second output) changes nothing.
    pub(crate) fn note_timestamps(&self, records: &[Record]) {
        let (min, max) = records
            .iter()
            .filter_map(|record| record.timestamp)
            .fold((i64::MAX, i64::MIN), |(min, max), t| {
                (min.min(t), max.max(t))
            });
        if min <= max {
            self.min_timestamp.fetch_min(min, Ordering::Relaxed);
            self.max_timestamp.fetch_max(max, Ordering::Relaxed);
        }
    }

    /// The smallest and largest Kafka timestamps of the records read so
    /// far; `None` while no record read had one.
    pub(crate) fn timestamps(&self) -> Option<(i64, i64)> {
        let min = self.min_timestamp.load(Ordering::Relaxed);
        let max = self.max_timestamp.load(Ordering::Relaxed);
        (min <= max).then_some((min, max))
    }

    /// The records of `chunk`, part of the batch's range `part`, read from
    /// the input once however many outputs ask.
    pub(crate) fn read_chunk(&self, part: usize, chunk: &OffsetRange) -> Result<Vec<Record>> {
        self.reads.read(self.input.as_ref(), part, chunk)
    }

    /// The records of `chunk` as [`BatchScope::read_chunk`] gives them,
    /// lent to `each` ([`InputReader::lend`]).
    pub(crate) fn lend_chunk(
        &self,
        part: usize,
        chunk: &OffsetRange,
        each: &mut dyn FnMut(&[Record]),
    ) -> Result<()> {
        self.reads.lend(self.input.as_ref(), part, chunk, each)
    }

    /// The records taken from the input so far, once per read
    /// ([`BatchOutput::records_fetched`](crate::BatchOutput::records_fetched)).
    pub(crate) fn records_fetched(&self) -> u64 {
        self.reads.fetched()
    }

    pub(crate) fn records_read(&self) -> Vec<u64> {
        self.records_read
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .collect()
    }

    /// Keeps the dead letters of a task that succeeded, with their records
    /// read back from the input. Called on the task's worker, so reading
    /// back runs in parallel with the batch's other tasks; a record already
    /// kept (met by an earlier output) is not read back again.
    pub(crate) fn add_dead_letters(&self, mut letters: Vec<DeadLetter>) {
        if letters.is_empty() {
            return;
        }
        {
            let kept = self
                .dead_letters
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            letters.retain(|l| !kept.contains_key(&(Arc::clone(&l.topic), l.partition, l.offset)));
        }
        read_back(self.input.as_ref(), &mut letters);
        let mut kept = self
            .dead_letters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for letter in letters {
            kept.entry((Arc::clone(&letter.topic), letter.partition, letter.offset))
                .or_insert(letter);
        }
    }

    /// The batch's dead letters, by topic, partition and offset.
    pub(crate) fn take_dead_letters(&self) -> Vec<DeadLetter> {
        std::mem::take(
            &mut *self
                .dead_letters
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
        .into_values()
        .collect()
    }

    /// Notes the late records of the window operator `name`. Stored, not
    /// added: an operator computed twice in a batch (two outputs) counts
    /// the same records.
    pub(crate) fn note_late(&self, name: &Arc<str>, counts: Vec<LateCount>) {
        self.late
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(Arc::clone(name), counts);
    }

    /// The batch's late records, by operator, topic and partition.
    pub(crate) fn take_late(&self) -> Vec<LateCount> {
        std::mem::take(&mut *self.late.lock().unwrap_or_else(PoisonError::into_inner))
            .into_values()
            .flatten()
            .collect()
    }

    pub(crate) fn check_cancelled(&self) -> Result<()> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(Error::Cancelled {
                time: self.info.time,
            });
        }
        Ok(())
    }

    /// The materialised output of stage `id`, if it already ran this batch.
    pub(crate) fn stage<T: Send + 'static>(&self, id: usize) -> Option<Arc<StageOutput<T>>> {
        let stages = self.stages.lock().unwrap_or_else(PoisonError::into_inner);
        stages.get(&id).map(|s| {
            Arc::clone(s)
                .downcast::<StageOutput<T>>()
                .expect("stage id reused for another type")
        })
    }

    /// Adds one computed copy of stage `id`'s partitions. Every consumer
    /// (an output, a side of a union) prepares the stage once and takes
    /// each partition once, so a stage read by several consumers in a batch
    /// is computed once per consumer.
    pub(crate) fn add_stage<T: Send + 'static>(&self, id: usize, partitions: Vec<Vec<T>>) {
        let mut stages = self.stages.lock().unwrap_or_else(PoisonError::into_inner);
        match stages.get(&id) {
            Some(existing) => existing
                .downcast_ref::<StageOutput<T>>()
                .expect("stage id reused for another type")
                .add(partitions),
            None => {
                stages.insert(id, Arc::new(StageOutput::new(partitions)));
            }
        }
    }

    /// Keeps `value` under `id` for the rest of the batch (replacing what
    /// was kept before).
    pub(crate) fn keep<T: Send + Sync + 'static>(&self, id: usize, value: T) {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::new(value));
    }

    /// What [`BatchScope::keep`] kept under `id`, if anything.
    pub(crate) fn kept<T: Send + Sync + 'static>(&self, id: usize) -> Option<Arc<T>> {
        let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        kept.get(&id).map(|v| {
            Arc::clone(v)
                .downcast::<T>()
                .expect("kept id reused for another type")
        })
    }

    pub(crate) fn stage_partitions<T: Send + 'static>(&self, id: usize) -> usize {
        self.stage::<T>(id).map_or(0, |s| s.len())
    }
}

/// Partitions materialised by a stage (a shuffle, a repartition, a
/// transform), one copy per consumer. Each copy of a partition is handed
/// out once: the task that reads it takes ownership, so no element is
/// copied.
pub(crate) struct StageOutput<T> {
    partitions: Vec<Mutex<Vec<Vec<T>>>>,
}

impl<T> StageOutput<T> {
    fn new(partitions: Vec<Vec<T>>) -> Self {
        Self {
            partitions: partitions
                .into_iter()
                .map(|p| Mutex::new(vec![p]))
                .collect(),
        }
    }

    fn add(&self, partitions: Vec<Vec<T>>) {
        assert_eq!(
            partitions.len(),
            self.partitions.len(),
            "a stage computed twice for one batch gave different partition counts"
        );
        for (copies, partition) in self.partitions.iter().zip(partitions) {
            copies
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(partition);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.partitions.len()
    }

    /// Takes a copy of partition `index`. A take beyond the copies prepared
    /// (a retry after a failure downstream of the stage) finds none left:
    /// the batch must be recomputed.
    pub(crate) fn take(&self, index: usize) -> Result<Vec<T>> {
        self.partitions[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .ok_or(Error::ShuffleLost { partition: index })
    }
}

/// Per-task state: where a fallible operator deep inside a fused iterator
/// chain leaves its error (the iterator itself yields plain values), and
/// which record the task is working on, so an error can name it.
#[derive(Default)]
pub(crate) struct TaskContext {
    failure: RefCell<Option<Error>>,
    /// Set aside rejected records instead of failing.
    keep_dead_letters: bool,
    /// The range a source task reads; `None` in tasks after a shuffle, and
    /// once the records lost their order (`map_partitions`).
    source: RefCell<Option<(Arc<str>, i32)>>,
    /// Offset of the record the source task handed out last.
    offset: Cell<i64>,
    /// Kafka timestamp of the record the source task handed out last.
    timestamp: Cell<Option<i64>>,
    dead_letters: RefCell<Vec<DeadLetter>>,
}

impl TaskContext {
    pub(crate) fn new(policy: &PoisonPolicy) -> Self {
        Self {
            keep_dead_letters: policy.family().is_some(),
            ..Self::default()
        }
    }

    pub(crate) fn fail(&self, error: Error) {
        self.failure.borrow_mut().get_or_insert(error);
    }

    /// The task reads `range`: later errors name its records.
    pub(crate) fn enter_source(&self, range: &OffsetRange) {
        *self.source.borrow_mut() = Some((Arc::clone(&range.topic), range.partition));
    }

    /// The task hands out values that follow the records of `source`
    /// again (values a cached stream kept with their records' positions).
    pub(crate) fn follow(&self, source: (Arc<str>, i32)) {
        *self.source.borrow_mut() = Some(source);
    }

    /// The offset and Kafka timestamp of the record the current value
    /// comes from, when the task follows its source records.
    pub(crate) fn position(&self) -> Option<(i64, Option<i64>)> {
        self.source
            .borrow()
            .as_ref()
            .map(|_| (self.offset.get(), self.timestamp.get()))
    }

    /// The values downstream no longer follow the record handed out last.
    pub(crate) fn leave_source(&self) {
        *self.source.borrow_mut() = None;
    }

    /// The source task handed out the record at `offset`, stamped
    /// `timestamp`.
    pub(crate) fn at_record(&self, offset: i64, timestamp: Option<i64>) {
        self.offset.set(offset);
        self.timestamp.set(timestamp);
    }

    /// The topic and partition the current value comes from, when the
    /// task still follows its source records.
    pub(crate) fn source(&self) -> Option<(Arc<str>, i32)> {
        self.source.borrow().clone()
    }

    /// The Kafka timestamp of the current value's record, when the task
    /// still follows its source records and the record has one.
    pub(crate) fn timestamp(&self) -> Option<i64> {
        self.source.borrow().as_ref().and(self.timestamp.get())
    }

    /// Sets the current record aside as a dead letter of `operator`, when
    /// the job keeps dead letters and the record is known. Returns false
    /// (and does nothing) otherwise; the task goes on either way.
    pub(crate) fn set_aside(&self, operator: &'static str, error: String) -> bool {
        if !self.keep_dead_letters {
            return false;
        }
        let Some((topic, partition)) = self.source.borrow().clone() else {
            return false;
        };
        self.dead_letters.borrow_mut().push(DeadLetter {
            topic,
            partition,
            offset: self.offset.get(),
            operator,
            error,
            record: None,
            unread: None,
        });
        true
    }

    /// `operator` failed on the current value. Returns true when the record
    /// was set aside as a dead letter and the task goes on; false when the
    /// task failed.
    pub(crate) fn reject(&self, operator: &'static str, error: BoxError) -> bool {
        let Some((topic, partition)) = self.source.borrow().clone() else {
            self.fail(Error::user(operator, error));
            return false;
        };
        let offset = self.offset.get();
        if self.keep_dead_letters {
            self.dead_letters.borrow_mut().push(DeadLetter {
                topic,
                partition,
                offset,
                operator,
                error: error.to_string(),
                record: None,
                unread: None,
            });
            return true;
        }
        let error = Error::user(operator, error);
        self.fail(if error.names_a_record() {
            error
        } else {
            Error::Record {
                topic: topic.to_string(),
                partition,
                offset,
                source: Box::new(error),
            }
        });
        false
    }

    /// The task's error, or the records it set aside.
    pub(crate) fn finish(self) -> Result<Vec<DeadLetter>> {
        match self.failure.into_inner() {
            Some(error) => Err(error),
            None => Ok(self.dead_letters.into_inner()),
        }
    }
}
