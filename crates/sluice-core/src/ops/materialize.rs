//! A node whose partitions are computed by a whole-batch step in
//! `prepare` and then handed to downstream tasks — the shared mechanism of
//! `transform`, `repartition` and `count`.

use std::sync::Arc;

use crate::scope::{BatchScope, TaskContext};
use crate::stream::{next_stage_id, Node, PartIter};
use crate::Result;

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
        if scope.stage::<U>(self.id).is_none() {
            let partitions = (self.step)(scope)?;
            scope.set_stage(self.id, partitions);
        }
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
