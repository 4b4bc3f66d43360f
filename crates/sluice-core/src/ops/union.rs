//! `union`: the values of two streams of the same job, side by side.

use std::sync::Arc;

use crate::scope::{BatchScope, TaskContext};
use crate::stream::{Node, PartIter};
use crate::{DStream, Result};

struct Union<T> {
    left: Arc<dyn Node<T>>,
    right: Arc<dyn Node<T>>,
}

impl<T: Send + 'static> Node<T> for Union<T> {
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()> {
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
    /// # Panics
    ///
    /// When `other` belongs to another job's graph.
    ///
    /// ```
    /// # let graph = sluice_core::StreamGraph::new();
    /// let input = graph.input();
    /// let errors = input.filter(|r| r.topic.as_ref() == "errors");
    /// let warnings = input.filter(|r| r.topic.as_ref() == "warnings");
    /// let alerts = errors.union(&warnings);
    /// ```
    pub fn union(&self, other: &DStream<T>) -> DStream<T> {
        assert!(
            Arc::ptr_eq(&self.graph, &other.graph),
            "union of streams from different jobs"
        );
        self.derive(Union {
            left: Arc::clone(&self.node),
            right: Arc::clone(&other.node),
        })
    }
}
