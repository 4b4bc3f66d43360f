//! One read of the input per batch, however many outputs: a job's outputs
//! run one after the other, and each would otherwise read every range
//! again. When a batch reads its input more than once (more than one
//! output reads it, not counting those that read it through a cached
//! stream, see [`Lineage`](crate::lineage::Lineage)), each chunk read is kept for the reads still
//! to come and handed to the last of them without a copy. Outputs that
//! only look at records ([`Node::lend`](crate::stream::Node::lend): `count`,
//! `count_keys`), and `values_utf8` on the input, are lent the kept records
//! themselves.
//!
//! What is kept is bounded: once the kept chunks of a batch take the
//! graph's [`shared_input_bytes`](crate::StreamGraph::set_shared_input_bytes),
//! a chunk read after that is not kept, and each later output reads it
//! from the input again, as it would without sharing. A batch that reads a
//! large backlog so holds a bounded part of it for its later outputs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use crate::{InputReader, OffsetRange, Record, Result};

/// How many bytes of a batch's input are kept for its later outputs by
/// default: 128 MiB.
pub const DEFAULT_SHARED_INPUT_BYTES: usize = 128 << 20;

/// The chunks of one batch's input kept for later outputs.
pub(crate) struct SharedReads {
    /// How many times a chunk is expected to be read.
    readers: usize,
    /// At most this many bytes of records are kept at a time.
    budget: usize,
    kept: Mutex<Kept>,
    /// Records taken from the input, once per read.
    fetched: AtomicU64,
}

#[derive(Default)]
struct Kept {
    /// Chunks by range index and first offset.
    chunks: HashMap<(usize, i64), Chunk>,
    /// The size of the records kept, by [`footprint`].
    bytes: usize,
}

struct Chunk {
    /// `None` when the chunk did not fit in the budget: each later output
    /// reads it again.
    records: Option<Arc<Vec<Record>>>,
    bytes: usize,
    readers_left: usize,
}

/// What the reads before this one left of a chunk.
enum Earlier {
    /// Its records, kept.
    Kept(Arc<Vec<Record>>),
    /// It was read but not kept: read it again.
    NotKept,
    /// This is the chunk's first read.
    Unread,
}

impl SharedReads {
    /// Shares reads between `readers` reads of each chunk (see
    /// [`Lineage::input_reads`](crate::lineage::Lineage::input_reads)),
    /// keeping at most `budget` bytes of records.
    pub(crate) fn new(readers: usize, budget: usize) -> Self {
        Self {
            readers,
            budget,
            kept: Mutex::new(Kept::default()),
            fetched: AtomicU64::new(0),
        }
    }

    /// The records taken from the input so far, counting a record once per
    /// read of it: a chunk read again (not kept, a retried task) counts
    /// again.
    pub(crate) fn fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// Reads `chunk` from `input`, counting its records.
    fn fetch(&self, input: &dyn InputReader, chunk: &OffsetRange) -> Result<Vec<Record>> {
        let records = input.read(chunk)?;
        self.count_fetched(&records);
        Ok(records)
    }

    /// Lends `chunk` from `input` to `each`, counting its records.
    fn fetch_lent(
        &self,
        input: &dyn InputReader,
        chunk: &OffsetRange,
        each: &mut dyn FnMut(&[Record]),
    ) -> Result<()> {
        input.lend(chunk, &mut |records| {
            self.count_fetched(records);
            each(records)
        })
    }

    fn count_fetched(&self, records: &[Record]) {
        self.fetched
            .fetch_add(records.len() as u64, Ordering::Relaxed);
    }

    /// The records of `chunk`, a part of range `part`: from an earlier
    /// output's read when one kept it, else from `input`. A chunk read more
    /// often than expected (a retried task, a union of the input with
    /// itself) is read from `input` again, which gives the same records.
    pub(crate) fn read(
        &self,
        input: &dyn InputReader,
        part: usize,
        chunk: &OffsetRange,
    ) -> Result<Vec<Record>> {
        match self.claim(part, chunk) {
            // The last reader takes the kept records over, unless a lender
            // still looks at them.
            Earlier::Kept(records) => {
                Ok(Arc::try_unwrap(records).unwrap_or_else(|records| records.as_ref().clone()))
            }
            Earlier::NotKept => self.fetch(input, chunk),
            Earlier::Unread => {
                let records = self.fetch(input, chunk)?;
                if self.readers > 1 {
                    self.keep(part, chunk, &records, || Arc::new(records.clone()));
                }
                Ok(records)
            }
        }
    }

    /// The records of `chunk` as [`SharedReads::read`] gives them, lent to
    /// `each`: straight from the input when the batch reads it once, else
    /// the kept records themselves, without a copy.
    pub(crate) fn lend(
        &self,
        input: &dyn InputReader,
        part: usize,
        chunk: &OffsetRange,
        each: &mut dyn FnMut(&[Record]),
    ) -> Result<()> {
        if self.readers <= 1 {
            return self.fetch_lent(input, chunk, each);
        }
        match self.claim(part, chunk) {
            Earlier::Kept(records) => each(&records),
            Earlier::NotKept => self.fetch_lent(input, chunk, each)?,
            Earlier::Unread => {
                let records = Arc::new(self.fetch(input, chunk)?);
                self.keep(part, chunk, &records, || Arc::clone(&records));
                each(&records);
            }
        }
        Ok(())
    }

    /// Counts one read of `chunk` against what an earlier read kept; the
    /// last expected read removes it.
    fn claim(&self, part: usize, chunk: &OffsetRange) -> Earlier {
        let key = (part, chunk.from);
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = kept.chunks.get_mut(&key) else {
            return Earlier::Unread;
        };
        entry.readers_left -= 1;
        let records = if entry.readers_left > 0 {
            entry.records.clone()
        } else {
            let last = kept.chunks.remove(&key).expect("the entry was just found");
            kept.bytes -= last.bytes;
            last.records
        };
        records.map_or(Earlier::NotKept, Earlier::Kept)
    }

    /// Notes the first read of `chunk` for the reads still to come, keeping
    /// its `records` (as `shared` makes them) when they fit in the budget.
    fn keep(
        &self,
        part: usize,
        chunk: &OffsetRange,
        records: &[Record],
        shared: impl FnOnce() -> Arc<Vec<Record>>,
    ) {
        let bytes = footprint(records);
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let fits = kept.bytes.saturating_add(bytes) <= self.budget;
        if fits {
            kept.bytes += bytes;
        }
        kept.chunks.insert(
            (part, chunk.from),
            Chunk {
                records: fits.then(shared),
                bytes: if fits { bytes } else { 0 },
                readers_left: self.readers - 1,
            },
        );
    }
}

/// About what `records` take in memory: each record and the bytes it
/// points to (allocator overhead and the unused rest of shared buffers not
/// counted).
fn footprint(records: &[Record]) -> usize {
    let payload = |bytes: &Option<Bytes>| bytes.as_ref().map_or(0, Bytes::len);
    records
        .iter()
        .map(|r| {
            std::mem::size_of::<Record>()
                + payload(&r.key)
                + payload(&r.value)
                + r.headers
                    .iter()
                    .map(|(name, value)| {
                        std::mem::size_of::<(String, Option<Bytes>)>() + name.len() + payload(value)
                    })
                    .sum::<usize>()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::MemoryInput;

    /// Counts the reads that reach the input.
    struct Counting {
        input: MemoryInput,
        reads: AtomicUsize,
    }

    impl InputReader for Counting {
        fn read(&self, range: &OffsetRange) -> Result<Vec<Record>> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.input.read(range)
        }
    }

    fn input() -> (Counting, OffsetRange) {
        let input = MemoryInput::new().with_partition("t", 0, ["a", "b", "c"]);
        let range = input.full_ranges().remove(0);
        let counting = Counting {
            input,
            reads: AtomicUsize::new(0),
        };
        (counting, range)
    }

    #[test]
    fn three_outputs_read_each_chunk_once_and_see_the_same_records() {
        let (input, range) = input();
        let shared = SharedReads::new(3, DEFAULT_SHARED_INPUT_BYTES);
        let reads: Vec<Vec<Record>> = (0..3)
            .map(|_| shared.read(&input, 0, &range).unwrap())
            .collect();
        assert_eq!(input.reads.load(Ordering::Relaxed), 1);
        assert_eq!(reads[0], reads[1]);
        assert_eq!(reads[1], reads[2]);
        assert_eq!(reads[0].len(), 3);
        assert_eq!(shared.fetched(), 3, "each record fetched once");
        // The last reader took the kept chunk: nothing stays behind.
        assert!(shared.kept.lock().unwrap().chunks.is_empty());
    }

    #[test]
    fn later_outputs_share_the_payload_bytes_of_the_first_read() {
        let (input, range) = input();
        let shared = SharedReads::new(2, DEFAULT_SHARED_INPUT_BYTES);
        let first = shared.read(&input, 0, &range).unwrap();
        let second = shared.read(&input, 0, &range).unwrap();
        for (a, b) in first.iter().zip(&second) {
            let (a, b) = (a.value.as_ref().unwrap(), b.value.as_ref().unwrap());
            assert_eq!(a.as_ptr(), b.as_ptr(), "the second output copied a value");
        }
    }

    #[test]
    fn a_chunk_read_more_often_than_expected_is_read_again() {
        let (input, range) = input();
        let shared = SharedReads::new(2, DEFAULT_SHARED_INPUT_BYTES);
        let first = shared.read(&input, 0, &range).unwrap();
        let second = shared.read(&input, 0, &range).unwrap();
        let third = shared.read(&input, 0, &range).unwrap();
        assert_eq!(first, second);
        assert_eq!(second, third);
        assert_eq!(input.reads.load(Ordering::Relaxed), 2);
        assert_eq!(shared.fetched(), 2 * range.count());
    }

    #[test]
    fn one_output_keeps_nothing() {
        let (input, range) = input();
        let shared = SharedReads::new(1, DEFAULT_SHARED_INPUT_BYTES);
        shared.read(&input, 0, &range).unwrap();
        shared.read(&input, 0, &range).unwrap();
        assert_eq!(input.reads.load(Ordering::Relaxed), 2);
        assert!(shared.kept.lock().unwrap().chunks.is_empty());
    }

    /// Lends `chunk` through `shared`: where the lent records are, and a
    /// copy of them.
    fn lent(shared: &SharedReads, input: &Counting, chunk: &OffsetRange) -> (usize, Vec<Record>) {
        let mut seen = (0, Vec::new());
        shared
            .lend(input, 0, chunk, &mut |records| {
                seen = (records.as_ptr() as usize, records.to_vec());
            })
            .unwrap();
        seen
    }

    #[test]
    fn outputs_lent_a_chunk_share_one_read_and_one_copy_of_its_records() {
        let (input, range) = input();
        let shared = SharedReads::new(3, DEFAULT_SHARED_INPUT_BYTES);
        let lends: Vec<_> = (0..3).map(|_| lent(&shared, &input, &range)).collect();
        assert_eq!(input.reads.load(Ordering::Relaxed), 1);
        assert_eq!(lends[0].1, input.input.read(&range).unwrap());
        for (at, records) in &lends[1..] {
            assert_eq!(*at, lends[0].0, "a later output was lent a copy");
            assert_eq!(*records, lends[0].1);
        }
        let kept = shared.kept.lock().unwrap();
        assert!(kept.chunks.is_empty());
        assert_eq!(kept.bytes, 0);
    }

    #[test]
    fn lent_and_taken_reads_of_a_chunk_share_one_read() {
        let (input, range) = input();
        let shared = SharedReads::new(3, DEFAULT_SHARED_INPUT_BYTES);
        let (_, first) = lent(&shared, &input, &range);
        let second = shared.read(&input, 0, &range).unwrap();
        let (_, third) = lent(&shared, &input, &range);
        assert_eq!(input.reads.load(Ordering::Relaxed), 1);
        assert_eq!(shared.fetched(), 3);
        assert_eq!(first, second);
        assert_eq!(second, third);
        assert!(shared.kept.lock().unwrap().chunks.is_empty());
    }

    #[test]
    fn a_chunk_lent_beyond_the_budget_is_read_again_by_each_later_output() {
        let (input, range) = input();
        let shared = SharedReads::new(2, 0);
        let (_, first) = lent(&shared, &input, &range);
        let (_, second) = lent(&shared, &input, &range);
        assert_eq!(first, second);
        assert_eq!(input.reads.load(Ordering::Relaxed), 2);
        assert_eq!(shared.fetched(), 2 * 3, "lent twice from the input");
        assert!(shared.kept.lock().unwrap().chunks.is_empty());
    }

    #[test]
    fn one_output_is_lent_straight_from_the_input() {
        let (input, range) = input();
        let shared = SharedReads::new(1, DEFAULT_SHARED_INPUT_BYTES);
        lent(&shared, &input, &range);
        lent(&shared, &input, &range);
        assert_eq!(input.reads.load(Ordering::Relaxed), 2);
        assert_eq!(shared.fetched(), 2 * 3);
        assert!(shared.kept.lock().unwrap().chunks.is_empty());
    }

    /// Splits `range` into a chunk of its first two records and one of the
    /// rest.
    fn two_chunks(range: &OffsetRange) -> [OffsetRange; 2] {
        let split = range.from + 2;
        [
            OffsetRange {
                until: split,
                ..range.clone()
            },
            OffsetRange {
                from: split,
                ..range.clone()
            },
        ]
    }

    #[test]
    fn chunks_beyond_the_budget_are_read_again_by_each_later_output() {
        let (input, range) = input();
        let [first, second] = two_chunks(&range);
        // Room for the first chunk only.
        let budget = footprint(&input.input.read(&first).unwrap());
        let shared = SharedReads::new(3, budget);
        let mut seen = Vec::new();
        for _ in 0..3 {
            let mut records = shared.read(&input, 0, &first).unwrap();
            records.extend(shared.read(&input, 0, &second).unwrap());
            seen.push(records);
        }
        // The first chunk once, the second by each of the three outputs.
        assert_eq!(input.reads.load(Ordering::Relaxed), 4);
        assert_eq!(seen[0].len(), 3);
        let (kept_records, again) = (first.count(), second.count());
        assert_eq!(shared.fetched(), kept_records + 3 * again);
        assert!(seen.iter().all(|records| *records == seen[0]));
        let kept = shared.kept.lock().unwrap();
        assert!(kept.chunks.is_empty());
        assert_eq!(kept.bytes, 0);
    }

    #[test]
    fn a_budget_of_zero_keeps_nothing_and_every_output_reads() {
        let (input, range) = input();
        let shared = SharedReads::new(2, 0);
        let first = shared.read(&input, 0, &range).unwrap();
        let second = shared.read(&input, 0, &range).unwrap();
        assert_eq!(first, second);
        assert_eq!(input.reads.load(Ordering::Relaxed), 2);
        assert_eq!(shared.fetched(), 2 * range.count());
        assert!(shared.kept.lock().unwrap().chunks.is_empty());
    }

    #[test]
    fn a_chunk_taken_by_the_last_output_frees_its_room_for_the_next() {
        let (input, range) = input();
        let [first, second] = two_chunks(&range);
        let budget = footprint(&input.input.read(&first).unwrap())
            .max(footprint(&input.input.read(&second).unwrap()));
        let shared = SharedReads::new(2, budget);
        // Both outputs read the first chunk before the second is read: the
        // second fits once the first is taken.
        for chunk in [&first, &first, &second, &second] {
            shared.read(&input, 0, chunk).unwrap();
        }
        assert_eq!(input.reads.load(Ordering::Relaxed), 2);
        assert_eq!(shared.kept.lock().unwrap().bytes, 0);
    }
}
