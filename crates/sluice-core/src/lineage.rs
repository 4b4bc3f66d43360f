//! What computing a stream reads: the batch's input, directly, and cached
//! streams, each computed once a batch however many streams derive from
//! it. A batch needs both counts before its first output runs: how often
//! each chunk of its input will be read, to keep a chunk for the reads
//! still to come (see `shared_reads`), and how often each cached stream
//! will be, to hand its values to the last user without a copy.

use std::collections::{BTreeMap, BTreeSet};

/// How computing one stream reads the input and cached streams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Lineage {
    /// Times the input is read directly.
    input_reads: usize,
    /// The cached streams read, by their stage id.
    caches: BTreeMap<usize, Cache>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Cache {
    /// What computing the cached stream reads.
    parent: Lineage,
    /// Times the stream reads the cached one.
    uses: usize,
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
        let cache = Cache {
            parent: parent.clone(),
            uses: 1,
        };
        Self {
            input_reads: 0,
            caches: BTreeMap::from([(id, cache)]),
        }
    }

    /// A stream computed from two streams (a union, a join).
    pub(crate) fn both(&self, other: &Lineage) -> Self {
        let mut caches = self.caches.clone();
        for (id, cache) in &other.caches {
            caches
                .entry(*id)
                .and_modify(|c| c.uses += cache.uses)
                .or_insert_with(|| cache.clone());
        }
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

    /// How many times a batch reads each cached stream, by stage id, to run
    /// `outputs`; a cached stream read by another is counted as read by
    /// that one once.
    pub(crate) fn cache_uses<'a>(
        outputs: impl IntoIterator<Item = &'a Lineage>,
    ) -> BTreeMap<usize, usize> {
        let mut uses = BTreeMap::new();
        Self::walk(outputs, |lineage| {
            for (id, cache) in &lineage.caches {
                *uses.entry(*id).or_default() += cache.uses;
            }
        });
        uses
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
            for (id, cache) in &lineage.caches {
                if computed.insert(*id) {
                    visit(&cache.parent, computed, each);
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

    #[test]
    fn a_cached_stream_is_used_once_per_path_from_each_output() {
        let input = Lineage::input();
        let lines = Lineage::cached(7, &input);
        assert_eq!(Lineage::cache_uses([&lines]), BTreeMap::from([(7, 1)]));
        assert_eq!(
            Lineage::cache_uses([&lines, &lines.both(&lines)]),
            BTreeMap::from([(7, 3)])
        );
        // Cache 8 reads cache 7 twice, once a batch however many outputs
        // read cache 8.
        let words = Lineage::cached(8, &lines.both(&lines));
        assert_eq!(
            Lineage::cache_uses([&words, &words, &lines]),
            BTreeMap::from([(7, 3), (8, 2)])
        );
        assert_eq!(Lineage::cache_uses([&input]), BTreeMap::new());
    }
}
