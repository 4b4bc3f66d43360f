//! What computing a stream reads: the batch's input, directly, and cached
//! streams, each computed once a batch however many streams derive from
//! it. A batch needs to know, before its first output runs, how often each
//! chunk of its input will be read, to keep a chunk for the reads still to
//! come (see `shared_reads`).

use std::collections::{BTreeMap, BTreeSet};

/// How computing one stream reads the input and cached streams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Lineage {
    /// Times the input is read directly.
    input_reads: usize,
    /// The cached streams read, by their stage id, with what computing
    /// each reads.
    caches: BTreeMap<usize, Lineage>,
}

impl Lineage {
    /// The input itself.
    pub(crate) fn input() -> Self {
        Self {
            input_reads: 1,
            caches: BTreeMap::new(),
        }
    }

    /// A cached stream, stage `id`, of a stream computed as `parent` says.
    pub(crate) fn cached(id: usize, parent: &Lineage) -> Self {
        Self {
            input_reads: 0,
            caches: BTreeMap::from([(id, parent.clone())]),
        }
    }

    /// A stream computed from two streams (a union, a join).
    pub(crate) fn both(&self, other: &Lineage) -> Self {
        let mut caches = self.caches.clone();
        caches.extend(other.caches.clone());
        Self {
            input_reads: self.input_reads + other.input_reads,
            caches,
        }
    }

    /// How many times a batch reads each chunk of its input to run outputs
    /// computed as `outputs` say: every direct read of every output, and
    /// those of each cached stream once.
    pub(crate) fn input_reads<'a>(outputs: impl IntoIterator<Item = &'a Lineage>) -> usize {
        let mut reads = 0;
        Self::walk(outputs, |lineage| reads += lineage.input_reads);
        reads
    }

    /// Calls `each` on every output's lineage and, once each, on that of
    /// every cached stream they read.
    fn walk<'a>(outputs: impl IntoIterator<Item = &'a Lineage>, mut each: impl FnMut(&Lineage)) {
        fn visit(
            lineage: &Lineage,
            computed: &mut BTreeSet<usize>,
            each: &mut dyn FnMut(&Lineage),
        ) {
            each(lineage);
            for (id, parent) in &lineage.caches {
                if computed.insert(*id) {
                    visit(parent, computed, each);
                }
            }
        }
        let mut computed = BTreeSet::new();
        for output in outputs {
            visit(output, &mut computed, &mut each);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_stream_reads_the_input_once_however_many_outputs_use_it() {
        let input = Lineage::input();
        let lines = Lineage::cached(7, &input);
        // Two outputs of the cached stream, one of the input itself.
        assert_eq!(Lineage::input_reads([&lines, &lines]), 1);
        assert_eq!(Lineage::input_reads([&lines, &lines, &input]), 2);
        // A union of the input with the cached stream reads it twice.
        assert_eq!(Lineage::input_reads([&lines.both(&input), &lines]), 2);
        // A cache of a cache: each computed once.
        let words = Lineage::cached(8, &lines.both(&input));
        assert_eq!(Lineage::input_reads([&words, &lines]), 2);
        assert_eq!(Lineage::input_reads([&words, &words]), 2);
        // A self-join of the input reads it twice for its one output.
        assert_eq!(Lineage::input_reads([&input.both(&input)]), 2);
        assert_eq!(Lineage::input_reads([]), 0);
    }
}
