//! Narrow, element-wise operators. They fuse into the task of each
//! partition: no data moves between threads. `map` and `filter` have nodes
//! of their own rather than being `flat_map`s of one or no value: a value
//! then passes through a plain `Iterator::map` or `filter`, without the
//! state a flattening iterator checks for every value.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::scope::{BatchScope, TaskContext};
use crate::stream::{boxed, ChunkLender, Node, PartIter};
use crate::{BoxError, DStream, Record, Result};

struct FlatMap<T, F> {
    parent: Arc<dyn Node<T>>,
    f: F,
}

impl<T, U, I, F> Node<U> for FlatMap<T, F>
where
    T: Send + 'static,
    U: Send + 'static,
    I: IntoIterator<Item = U> + 'static,
    I::IntoIter: 'static,
    F: Fn(T) -> I + Send + Sync,
{
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()> {
        self.parent.prepare(scope)
    }

    fn partitions(&self, scope: &BatchScope) -> usize {
        self.parent.partitions(scope)
    }

    fn compute<'a>(
        &'a self,
        scope: &'a BatchScope,
        task: &'a TaskContext,
        part: usize,
    ) -> Result<PartIter<'a, U>> {
        let values = self.parent.compute(scope, task, part)?;
        Ok(boxed(values.flat_map(&self.f)))
    }
}

struct Map<T, F> {
    parent: Arc<dyn Node<T>>,
    f: F,
}

impl<T, U, F> Node<U> for Map<T, F>
where
    T: Send + 'static,
    U: Send + 'static,
    F: Fn(T) -> U + Send + Sync,
{
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()> {
        self.parent.prepare(scope)
    }

    fn partitions(&self, scope: &BatchScope) -> usize {
        self.parent.partitions(scope)
    }

    fn compute<'a>(
        &'a self,
        scope: &'a BatchScope,
        task: &'a TaskContext,
        part: usize,
    ) -> Result<PartIter<'a, U>> {
        let values = self.parent.compute(scope, task, part)?;
        Ok(boxed(values.map(&self.f)))
    }
}

struct Filter<T, F> {
    parent: Arc<dyn Node<T>>,
    predicate: F,
}

impl<T, F> Node<T> for Filter<T, F>
where
    T: Send + 'static,
    F: Fn(&T) -> bool + Send + Sync,
{
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()> {
        self.parent.prepare(scope)
    }

    fn partitions(&self, scope: &BatchScope) -> usize {
        self.parent.partitions(scope)
    }

    fn compute<'a>(
        &'a self,
        scope: &'a BatchScope,
        task: &'a TaskContext,
        part: usize,
    ) -> Result<PartIter<'a, T>> {
        let values = self.parent.compute(scope, task, part)?;
        Ok(boxed(values.filter(&self.predicate)))
    }

    fn lend(
        &self,
        scope: &BatchScope,
        task: &TaskContext,
        part: usize,
        each: &mut dyn FnMut(&T) -> ControlFlow<()>,
    ) -> Result<()> {
        self.parent.lend(scope, task, part, &mut |value| {
            if (self.predicate)(value) {
                each(value)
            } else {
                ControlFlow::Continue(())
            }
        })
    }
}

struct TryFlatMap<T, F> {
    parent: Arc<dyn Node<T>>,
    operator: &'static str,
    f: F,
}

impl<T, U, I, E, F> Node<U> for TryFlatMap<T, F>
where
    T: Send + 'static,
    U: Send + 'static,
    I: IntoIterator<Item = U> + 'static,
    I::IntoIter: 'static,
    E: Into<BoxError>,
    F: Fn(T) -> Result<I, E> + Send + Sync,
{
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()> {
        self.parent.prepare(scope)
    }

    fn partitions(&self, scope: &BatchScope) -> usize {
        self.parent.partitions(scope)
    }

    fn compute<'a>(
        &'a self,
        scope: &'a BatchScope,
        task: &'a TaskContext,
        part: usize,
    ) -> Result<PartIter<'a, U>> {
        let values = self.parent.compute(scope, task, part)?;
        // Stops at the first error, unless the record is set aside as a
        // dead letter: then only its values are missing.
        let results = values.map_while(move |value| match (self.f)(value) {
            Ok(out) => Some(Some(out)),
            Err(e) => task.reject(self.operator, e.into()).then_some(None),
        });
        Ok(boxed(results.flatten().flatten()))
    }
}

/// `try_map`: [`TryFlatMap`] with one value per value, without the inner
/// iterator to flatten.
struct TryMap<T, F> {
    parent: Arc<dyn Node<T>>,
    operator: &'static str,
    f: F,
}

impl<T, U, E, F> Node<U> for TryMap<T, F>
where
    T: Send + 'static,
    U: Send + 'static,
    E: Into<BoxError>,
    F: Fn(T) -> Result<U, E> + Send + Sync,
{
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()> {
        self.parent.prepare(scope)
    }

    fn partitions(&self, scope: &BatchScope) -> usize {
        self.parent.partitions(scope)
    }

    fn compute<'a>(
        &'a self,
        scope: &'a BatchScope,
        task: &'a TaskContext,
        part: usize,
    ) -> Result<PartIter<'a, U>> {
        let values = self.parent.compute(scope, task, part)?;
        // As `TryFlatMap`: stops at the first error, unless the record is
        // set aside as a dead letter.
        let results = values.map_while(move |value| match (self.f)(value) {
            Ok(out) => Some(Some(out)),
            Err(e) => task.reject(self.operator, e.into()).then_some(None),
        });
        Ok(boxed(results.flatten()))
    }
}

/// [`DStream::values_utf8`]: a `try_map` of [`Record::into_value_string`]
/// that can also lend each value, copied into one `String` reused for the
/// whole partition instead of a `String` of its own. Over the input, it
/// makes each `String` straight from the records the input lends, a chunk
/// at a time, so no owned record is made for a value.
struct ValuesUtf8 {
    parent: Arc<dyn Node<Record>>,
}

/// At most this many bytes of a lent chunk's values are made into text
/// before the first of them is handed on (1 MiB); the chunk's other
/// records are kept, sharing their payloads, and turned into text as they
/// are handed on. So a chunk of large values is not held twice.
const TEXT_AHEAD_BYTES: usize = 1 << 20;

/// A value of a lent chunk, waiting to be handed on.
enum Ahead {
    /// Made into text already: its record's offset and timestamp, and the
    /// text or why it is not UTF-8.
    Text(i64, Option<i64>, std::result::Result<String, BoxError>),
    /// Its record, sharing the payload the input read (boxed: a chunk's
    /// values are mostly texts, and a small `Ahead` keeps the chunk's
    /// buffer small; it costs an allocation per record only for the records
    /// of a chunk beyond its first [`TEXT_AHEAD_BYTES`] of text).
    Record(Box<Record>),
}

impl ValuesUtf8 {
    const OPERATOR: &'static str = "values_utf8";
}

impl Node<String> for ValuesUtf8 {
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()> {
        self.parent.prepare(scope)
    }

    fn partitions(&self, scope: &BatchScope) -> usize {
        self.parent.partitions(scope)
    }

    fn compute<'a>(
        &'a self,
        scope: &'a BatchScope,
        task: &'a TaskContext,
        part: usize,
    ) -> Result<PartIter<'a, String>> {
        if let Some(chunks) = self.parent.lend_chunks(scope, task, part) {
            return Ok(boxed(texts_of_lent_chunks(chunks, task).flatten()));
        }
        let records = self.parent.compute(scope, task, part)?;
        // As `TryMap`.
        let values = records.map_while(move |record| match record.into_value_string() {
            Ok(value) => Some(Some(value)),
            Err(e) => task.reject(Self::OPERATOR, e.into()).then_some(None),
        });
        Ok(boxed(values.flatten()))
    }

    fn lend(
        &self,
        scope: &BatchScope,
        task: &TaskContext,
        part: usize,
        each: &mut dyn FnMut(&String) -> ControlFlow<()>,
    ) -> Result<()> {
        let mut value = String::new();
        self.parent
            .lend(scope, task, part, &mut |record| match record.value_str() {
                Ok(text) => {
                    value.clear();
                    value.push_str(text);
                    each(&value)
                }
                Err(e) => {
                    if task.reject(Self::OPERATOR, e.into()) {
                        ControlFlow::Continue(())
                    } else {
                        ControlFlow::Break(())
                    }
                }
            })
    }
}

/// The values of `values_utf8` made from the chunks the input lends: each
/// chunk's texts made first (up to [`TEXT_AHEAD_BYTES`]), then handed on
/// one by one, naming each value's record; `None` for a value set aside.
fn texts_of_lent_chunks<'a>(
    mut chunks: Box<dyn ChunkLender<Record> + 'a>,
    task: &'a TaskContext,
) -> impl Iterator<Item = Option<String>> + 'a {
    // One buffer for all the chunks of the partition: the values of a
    // chunk are written into memory the previous chunk's took.
    let mut ahead = VecDeque::new();
    std::iter::from_fn(move || loop {
        if let Some(value) = ahead.pop_front() {
            let (offset, timestamp, text) = match value {
                Ahead::Text(offset, timestamp, text) => (offset, timestamp, text),
                Ahead::Record(record) => {
                    let (offset, timestamp) = (record.offset, record.timestamp);
                    let text = record.into_value_string().map_err(BoxError::from);
                    (offset, timestamp, text)
                }
            };
            task.at_record(offset, timestamp);
            return match text {
                Ok(text) => Some(Some(text)),
                Err(e) => task.reject(ValuesUtf8::OPERATOR, e).then_some(None),
            };
        }
        let mut text_bytes = 0;
        let more = chunks.next_chunk(&mut |records| {
            ahead.extend(records.iter().map(|record| {
                if text_bytes >= TEXT_AHEAD_BYTES {
                    return Ahead::Record(Box::new(record.clone()));
                }
                let text = record.value_str().map(str::to_owned);
                text_bytes += text.as_ref().map_or(0, String::len);
                Ahead::Text(
                    record.offset,
                    record.timestamp,
                    text.map_err(BoxError::from),
                )
            }));
        });
        if !more {
            return None;
        }
    })
}

struct MapPartitions<T, F> {
    parent: Arc<dyn Node<T>>,
    f: F,
}

impl<T, U, F> Node<U> for MapPartitions<T, F>
where
    T: Send + 'static,
    U: Send + 'static,
    F: Fn(Vec<T>) -> Vec<U> + Send + Sync,
{
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()> {
        self.parent.prepare(scope)
    }

    fn partitions(&self, scope: &BatchScope) -> usize {
        self.parent.partitions(scope)
    }

    fn compute<'a>(
        &'a self,
        scope: &'a BatchScope,
        task: &'a TaskContext,
        part: usize,
    ) -> Result<PartIter<'a, U>> {
        let values = self.parent.compute(scope, task, part)?.collect();
        // Values made from the whole partition follow no single record.
        task.leave_source();
        Ok(Box::new((self.f)(values).into_iter()))
    }
}

impl<T: Send + 'static> DStream<T> {
    /// Replaces every value by the values `f` returns for it.
    ///
    /// ```
    /// # let graph = sluice_core::StreamGraph::new();
    /// # let lines = graph.input().values_utf8();
    /// let words = lines.flat_map(|line| {
    ///     line.split_ascii_whitespace().map(str::to_owned).collect::<Vec<_>>()
    /// });
    /// ```
    pub fn flat_map<U, I, F>(&self, f: F) -> DStream<U>
    where
        U: Send + 'static,
        I: IntoIterator<Item = U> + 'static,
        I::IntoIter: 'static,
        F: Fn(T) -> I + Send + Sync + 'static,
    {
        self.derive(FlatMap {
            parent: Arc::clone(&self.node),
            f,
        })
    }

    /// Replaces every value by `f(value)`.
    ///
    /// ```
    /// # let graph = sluice_core::StreamGraph::new();
    /// let sizes = graph.input().map(|record| record.value.map_or(0, |v| v.len()));
    /// ```
    pub fn map<U, F>(&self, f: F) -> DStream<U>
    where
        U: Send + 'static,
        F: Fn(T) -> U + Send + Sync + 'static,
    {
        self.derive(Map {
            parent: Arc::clone(&self.node),
            f,
        })
    }

    /// Keeps the values for which `predicate` is true.
    ///
    /// ```
    /// # let graph = sluice_core::StreamGraph::new();
    /// let keyed = graph.input().filter(|record| record.key.is_some());
    /// ```
    pub fn filter<F>(&self, predicate: F) -> DStream<T>
    where
        F: Fn(&T) -> bool + Send + Sync + 'static,
    {
        self.derive(Filter {
            parent: Arc::clone(&self.node),
            predicate,
        })
    }

    /// Like [`DStream::map`] for a fallible `f`. A record whose `f` returns
    /// an error is a poison record of operator `try_map`, handled by the
    /// job's [`PoisonPolicy`](crate::PoisonPolicy): by default it fails the
    /// task (which is retried, then fails the batch, naming the record);
    /// under `PoisonPolicy::dead_letter(family)` the record is dropped from
    /// this stream and committed, with the error and its bytes, as a dead
    /// letter in `family`.
    ///
    /// ```
    /// # use sluice_core::BoxError; // in sluice's prelude
    /// # let graph = sluice_core::StreamGraph::new();
    /// let numbers = graph.input().try_map(|record| record.value_str()?.trim().parse::<i64>()
    ///     .map_err(BoxError::from));
    /// ```
    ///
    /// A closure whose `?`s convert errors of different types names its
    /// error type, which Rust cannot choose for it:
    ///
    /// ```
    /// # use sluice_core::BoxError; // in sluice's prelude
    /// # let graph = sluice_core::StreamGraph::new();
    /// let clicks = graph.input().try_map(|record| {
    ///     let text = record.value_str()?;
    ///     let (user, page) = text.split_once(',').ok_or("no comma")?;
    ///     Ok::<_, BoxError>((user.to_owned(), page.to_owned()))
    /// });
    /// ```
    pub fn try_map<U, E, F>(&self, f: F) -> DStream<U>
    where
        U: Send + 'static,
        E: Into<BoxError>,
        F: Fn(T) -> Result<U, E> + Send + Sync + 'static,
    {
        self.try_map_as("try_map", f)
    }

    /// `try_map` whose errors and dead letters name `operator`.
    fn try_map_as<U, E, F>(&self, operator: &'static str, f: F) -> DStream<U>
    where
        U: Send + 'static,
        E: Into<BoxError>,
        F: Fn(T) -> Result<U, E> + Send + Sync + 'static,
    {
        self.derive(TryMap {
            parent: Arc::clone(&self.node),
            operator,
            f,
        })
    }

    /// Like [`DStream::flat_map`] for a fallible `f`; an error is a poison
    /// record of operator `try_flat_map`, handled like
    /// [`try_map`](DStream::try_map)'s.
    pub fn try_flat_map<U, I, E, F>(&self, f: F) -> DStream<U>
    where
        U: Send + 'static,
        I: IntoIterator<Item = U> + 'static,
        I::IntoIter: 'static,
        E: Into<BoxError>,
        F: Fn(T) -> Result<I, E> + Send + Sync + 'static,
    {
        self.derive(TryFlatMap {
            parent: Arc::clone(&self.node),
            operator: "try_flat_map",
            f,
        })
    }

    /// Transforms each partition as a whole — for per-partition set-up such
    /// as a connection or a buffer reused across values.
    ///
    /// ```
    /// # let graph = sluice_core::StreamGraph::new();
    /// let sorted = graph.input().map(|r| r.offset).map_partitions(|mut offsets| {
    ///     offsets.sort_unstable();
    ///     offsets
    /// });
    /// ```
    pub fn map_partitions<U, F>(&self, f: F) -> DStream<U>
    where
        U: Send + 'static,
        F: Fn(Vec<T>) -> Vec<U> + Send + Sync + 'static,
    {
        self.derive(MapPartitions {
            parent: Arc::clone(&self.node),
            f,
        })
    }

    /// Pairs every value with the key `f` computes from it.
    ///
    /// ```
    /// # let graph = sluice_core::StreamGraph::new();
    /// let by_partition = graph.input().key_by(|record| record.partition);
    /// ```
    pub fn key_by<K, F>(&self, f: F) -> DStream<(K, T)>
    where
        K: Send + 'static,
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        self.map(move |value| (f(&value), value))
    }
}

impl<K: Send + 'static, V: Send + 'static> DStream<(K, V)> {
    /// Transforms the value of every pair, keeping its key.
    ///
    /// ```
    /// # let graph = sluice_core::StreamGraph::new();
    /// let lengths = graph.input().key_by(|r| r.partition).map_values(|r| r.offset);
    /// ```
    pub fn map_values<W, F>(&self, f: F) -> DStream<(K, W)>
    where
        W: Send + 'static,
        F: Fn(V) -> W + Send + Sync + 'static,
    {
        self.map(move |(key, value)| (key, f(value)))
    }
}

impl DStream<Record> {
    /// The record values as UTF-8 text. A value that is not UTF-8 is a
    /// poison record of operator `values_utf8`: it fails the task with an
    /// error naming the record's topic, partition and offset, or becomes a
    /// dead letter (see [`PoisonPolicy`](crate::PoisonPolicy)). A null
    /// value reads as the empty string.
    ///
    /// ```
    /// # let graph = sluice_core::StreamGraph::new();
    /// let lines = graph.input().values_utf8();
    /// ```
    pub fn values_utf8(&self) -> DStream<String> {
        self.derive(ValuesUtf8 {
            parent: Arc::clone(&self.node),
        })
    }
}
