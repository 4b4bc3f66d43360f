//! A node whose partitions are computed by a whole-batch step in
//! `prepare` and then handed to downstream tasks — the shared mechanism of
//! `transform`, `repartition` and `count`.

use std::sync::Arc;

use crate::scope::{BatchScope, TaskContext};
use crate::stream::{next_stage_id, Node, PartIter};
use crate::{Error, Result};

type Step<U> = dyn Fn(&Arc<BatchScope>) -> Result<Vec<Vec<U>>> + Send + Sync;

pub(crate) struct Materialized<U> {
    id: usize,
    step: Box<Step<U>>,
}

impl<U: Send + 'static> Materialized<U> {
    pub(crate) fn new(
        step: impl Fn(&Arc<BatchScope>) -> Result<Vec<Vec<U>>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            id: next_stage_id(),
            step: Box::new(step),
        }
    }
}

impl<U: Send + 'static> Node<U> for Materialized<U> {
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()> {
        let partitions = (self.step)(scope)?;
        // Only a `transform` closure can split the same batch differently
        // for its second consumer.
        if let Some(first) = scope.stage::<U>(self.id) {
            if first.len() != partitions.len() {
                return Err(Error::user(
                    "transform",
                    format!(
                        "returned {} partitions for a batch it returned {} for before; it must be deterministic",
                        partitions.len(),
                        first.len()
                    ),
                ));
            }
        }
        scope.add_stage(self.id, partitions);
        Ok(())
    }

    fn partitions(&self, scope: &BatchScope) -> usize {
        scope.stage_partitions::<U>(self.id)
    }

    fn compute<'a>(
        &'a self,
        scope: &'a BatchScope,
        _task: &'a TaskContext,
        part: usize,
    ) -> Result<PartIter<'a, U>> {
        let stage = scope
            .stage::<U>(self.id)
            .expect("prepare runs before compute");
        Ok(Box::new(stage.take(part)?.into_iter()))
    }
}
