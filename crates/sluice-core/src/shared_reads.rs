//! One read of the input per batch, however many outputs: a job's outputs
//! run one after the other, and each would otherwise read every range
//! again. With more than one output, each chunk read is kept for the
//! outputs still to come and handed to the last of them without a copy.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::{InputReader, OffsetRange, Record, Result};

/// The chunks of one batch's input kept for later outputs.
pub(crate) struct SharedReads {
    /// How many times a chunk is expected to be read: once per output.
    readers: usize,
    /// Chunks by range index and first offset.
    kept: Mutex<HashMap<(usize, i64), Kept>>,
}

struct Kept {
    records: Vec<Record>,
    readers_left: usize,
}

impl SharedReads {
    /// Shares reads between `outputs` outputs.
    pub(crate) fn new(outputs: usize) -> Self {
        Self {
            readers: outputs,
            kept: Mutex::new(HashMap::new()),
        }
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
        let key = (part, chunk.from);
        {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = kept.get_mut(&key) {
                entry.readers_left -= 1;
                if entry.readers_left == 0 {
                    return Ok(kept.remove(&key).map(|e| e.records).unwrap_or_default());
                }
                return Ok(entry.records.clone());
            }
        }
        let records = input.read(chunk)?;
        if self.readers > 1 {
            self.kept
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    key,
                    Kept {
                        records: records.clone(),
                        readers_left: self.readers - 1,
                    },
                );
        }
        Ok(records)
    }
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
        let shared = SharedReads::new(3);
        let reads: Vec<Vec<Record>> = (0..3)
            .map(|_| shared.read(&input, 0, &range).unwrap())
            .collect();
        assert_eq!(input.reads.load(Ordering::Relaxed), 1);
        assert_eq!(reads[0], reads[1]);
        assert_eq!(reads[1], reads[2]);
        assert_eq!(reads[0].len(), 3);
        // The last reader took the kept chunk: nothing stays behind.
        assert!(shared.kept.lock().unwrap().is_empty());
    }

    #[test]
    fn a_chunk_read_more_often_than_expected_is_read_again() {
        let (input, range) = input();
        let shared = SharedReads::new(2);
        let first = shared.read(&input, 0, &range).unwrap();
        let second = shared.read(&input, 0, &range).unwrap();
        let third = shared.read(&input, 0, &range).unwrap();
        assert_eq!(first, second);
        assert_eq!(second, third);
        assert_eq!(input.reads.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn one_output_keeps_nothing() {
        let (input, range) = input();
        let shared = SharedReads::new(1);
        shared.read(&input, 0, &range).unwrap();
        shared.read(&input, 0, &range).unwrap();
        assert_eq!(input.reads.load(Ordering::Relaxed), 2);
        assert!(shared.kept.lock().unwrap().is_empty());
    }
}
