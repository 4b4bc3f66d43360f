//! `union`: the values of two streams of the same job, side by side.

use std::sync::Arc;

use crate::scope::{BatchScope, TaskContext};
use crate::stream::{Node, PartIter};
use crate::{DStream, Error, Result};

struct Union<T> {
    left: Arc<dyn Node<T>>,
    right: Arc<dyn Node<T>>,
    /// False when the streams belong to different graphs: a node reads the
    /// input of whichever batch runs it, so the right side would silently
    /// read the left side's records.
    same_graph: bool,
}

impl<T: Send + 'static> Node<T> for Union<T> {
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()> {
        if !self.same_graph {
            return Err(Error::user(
                "union",
                "the two streams belong to different StreamGraphs; derive both from the input \
                 of the graph that runs the job",
            ));
        }
        self.left.prepare(scope)?;
        self.right.prepare(scope)
    }

    fn partitions(&self, scope: &BatchScope) -> usize {
        self.left.partitions(scope) + self.right.partitions(scope)
    }

    fn compute<'a>(
        &'a self,
        scope: &'a BatchScope,
        task: &'a TaskContext,
        part: usize,
    ) -> Result<PartIter<'a, T>> {
        let left = self.left.partitions(scope);
        if part < left {
            self.left.compute(scope, task, part)
        } else {
            self.right.compute(scope, task, part - left)
        }
    }
}

impl<T: Send + 'static> DStream<T> {
    /// The values of `self` and `other` together: partitions of `self`
    /// first, then those of `other`.
    ///
    /// Both streams must come from the same graph (the same job): a union
    /// of streams of two graphs fails every batch with [`Error::User`]
    /// naming `union`.
    ///
    /// ```
    /// # let graph = sluice_core::StreamGraph::new();
    /// let input = graph.input();
    /// let errors = input.filter(|r| r.topic.as_ref() == "errors");
    /// let warnings = input.filter(|r| r.topic.as_ref() == "warnings");
    /// let alerts = errors.union(&warnings);
    /// ```
    pub fn union(&self, other: &DStream<T>) -> DStream<T> {
        self.derive_with(
            other,
            Union {
                left: Arc::clone(&self.node),
                right: Arc::clone(&other.node),
                same_graph: Arc::ptr_eq(&self.graph, &other.graph),
            },
        )
    }
}
