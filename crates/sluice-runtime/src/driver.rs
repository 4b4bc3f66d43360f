//! The driver loop: tick, plan the batch's ranges through the job's
//! [`Source`], compute it on the worker pool, commit it atomically, report
//! it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use sluice_checkpoint::{BatchRecord, CheckpointStore, Commit, ControlRecord};
use sluice_core::{
    batch_caps_within, BatchEnv, BatchInfo, BatchOutput, InputReader, OffsetRange, OutsideSink,
    PartitionOffsets, PidRateEstimator, Plan, RateLimit, RateLimits, SinkStart, Source,
    StreamGraph, TopicPartition,
};

use crate::batch_time;
use crate::bounded::{self, Targets};
use crate::crash_point::{self, CrashPoint};
use crate::dead_letters;
use crate::http::control::now_ms;
use crate::http::monitor::{Monitor, Status};
use crate::listener::{BatchCompleted, BatchListener};
use crate::max_rate::MaxRateBucket;
use crate::moved_offsets;
use crate::pool::WorkerPool;
use crate::readable::Readable;
use crate::write_ahead::{self, Replay};
use crate::{BatchFailurePolicy, Error, Result};

/// Asks the driver to stop after the batch in flight (if any) committed.
pub(crate) struct StopRequest;

/// The `tracing` target of the one line per committed batch, so a program
/// that prints its own line per batch can filter it out
/// (`RUST_LOG=info,sluice::batch=warn`).
pub(crate) const BATCH_LOG_TARGET: &str = "sluice::batch";

/// Driver settings fixed at start.
#[derive(Clone)]
pub(crate) struct DriverSettings {
    pub(crate) app_id: String,
    pub(crate) batch_interval: Duration,
    pub(crate) on_batch_failure: BatchFailurePolicy,
    pub(crate) kafka_outage_timeout: Duration,
    pub(crate) rate_limits: RateLimits,
    /// Stop once the latest offsets of the first planning are read
    /// (`run_until_caught_up`).
    pub(crate) bounded: bool,
    /// For errors that name it.
    pub(crate) checkpoint_dir: PathBuf,
}

pub(crate) struct Driver {
    pub(crate) settings: DriverSettings,
    pub(crate) graph: Arc<StreamGraph>,
    pub(crate) store: Box<dyn CheckpointStore>,
    /// Where the batches come from; the driver plans through it alone.
    pub(crate) source: Box<dyn Source>,
    /// The source's reader, taken once at start.
    pub(crate) reader: Arc<dyn InputReader>,
    pub(crate) pool: Arc<WorkerPool>,
    pub(crate) listeners: Vec<Box<dyn BatchListener>>,
    pub(crate) stop: Receiver<StopRequest>,
    pub(crate) cancel: Arc<AtomicBool>,
    /// What the HTTP endpoint shows and the control requests it took;
    /// `None` without an endpoint.
    pub(crate) monitor: Option<Arc<Monitor>>,
}

/// How a wait ended.
enum Wake {
    Due,
    Stop,
}

/// Offsets progress of the running job.
struct Progress {
    positions: BTreeMap<TopicPartition, i64>,
    /// No batch was ever committed: the first batch resolves the start
    /// policy.
    first_start: bool,
    /// No batch ran yet in this process: `initial_rate` bounds it.
    first_batch: bool,
    next_id: u64,
    /// Backpressure: fed by every committed batch.
    estimator: Option<PidRateEstimator>,
    estimate: Option<f64>,
    /// The job-wide `max_rate` over wall-clock time, if one is set.
    max_rate: Option<MaxRateBucket>,
    /// A batch planned before the restart that did not commit.
    replay: Option<Replay>,
    /// The partitions' offsets at the last planning (kept for the HTTP
    /// endpoint only).
    latest: Vec<PartitionOffsets>,
    /// Control changes taken since the last commit, for its batch record.
    control: Vec<ControlRecord>,
    /// Where a bounded run ends, fixed at its first planning.
    targets: Option<Targets>,
}

impl Driver {
    pub(crate) fn run(mut self) -> Result<()> {
        let positions = self.store.offsets()?;
        let limits = &self.settings.rate_limits;
        let estimator = limits
            .backpressure
            .then(|| PidRateEstimator::new(limits.pid))
            .transpose()
            .expect("rate limits are validated when the context is built");
        let last_batch = self.store.last_batch()?;
        let next_id = last_batch.as_ref().map_or(0, |b| b.id + 1);
        let control = last_batch
            .as_ref()
            .map(|last| moved_while_stopped(last, &positions))
            .into_iter()
            .flatten()
            .collect();
        let replay = self
            .store
            .pending_plan()?
            .filter(|pending| pending.id == next_id)
            .and_then(|pending| write_ahead::replay(&pending, &positions));
        let mut progress = Progress {
            // The start policy applies to the partitions of the job's first
            // batch only: after one committed batch, even an empty one, a
            // partition without a position is new and starts at its log
            // start. A replayed first batch carries the resolved offsets.
            first_start: last_batch.is_none() && replay.is_none(),
            first_batch: true,
            next_id,
            positions,
            estimator,
            estimate: None,
            max_rate: limits
                .max_rate
                .and_then(|rate| MaxRateBucket::new(rate, self.settings.batch_interval)),
            replay,
            latest: Vec::new(),
            control,
            targets: None,
        };
        let paused = self.restore_pause(&mut progress)?;
        self.recover_sinks(&progress)?;
        if let Some(monitor) = &self.monitor {
            monitor.set_status(if paused {
                Status::Paused
            } else {
                Status::Running
            });
        }
        tracing::info!(
            first_start = progress.first_start,
            stored_positions = progress.positions.len(),
            next_batch = progress.next_id,
            redo_planned_batch = progress.replay.is_some(),
            "driver started"
        );
        if !progress.first_start {
            tracing::info!(
                partitions = progress.positions.len(),
                "resuming from the checkpoint's offsets; the source's start policy \
                 (start_from) applies to a first start only"
            );
        }
        let result = self.tick_batches(&mut progress, last_batch.as_ref(), next_id, paused);
        self.note_unrecorded_control(&mut progress);
        result
    }

    /// Runs a batch at every tick of the batch interval until a stop, the
    /// end of a bounded run or a failure.
    fn tick_batches(
        &mut self,
        progress: &mut Progress,
        last_batch: Option<&BatchRecord>,
        next_id: u64,
        mut paused: bool,
    ) -> Result<()> {
        let interval = self.settings.batch_interval;
        // After the batch planned before a restart, if any, or else the
        // last committed one: batch times never repeat.
        let last_time = progress
            .replay
            .as_ref()
            .map(|replay| replay.time)
            .or_else(|| last_batch.map(|b| batch_time::from_millis(b.time_ms)));
        let now = SystemTime::now();
        let started = Instant::now();
        let mut batch_time = batch_time::first_batch_time(now, interval, last_time);
        if batch_time > now + interval {
            tracing::warn!(
                ahead = %Readable(batch_time.duration_since(now).unwrap_or_default()),
                "the checkpoint's last batch time is ahead of the clock (was the clock set \
                 back?); batch times go on after it"
            );
        }
        let mut tick = batch_time::instant_of(batch_time, now, started, interval);
        loop {
            // A batch planned before a restart is redone at once, with its
            // own time. The first new batch, timed at the tick before the
            // start, is due at once too, unless a restart within the last
            // batch's interval put it on the next tick.
            let redo = progress.replay.is_some();
            let due = if redo { started } else { tick.max(started) };
            if let Wake::Stop = self.wait_until(due) {
                tracing::info!("stop requested; no batch in flight");
                return Ok(());
            }
            if let Some(monitor) = self.monitor.clone() {
                // Between batches: nothing of a batch is in flight.
                self.take_control(&monitor, progress);
                let now_paused = monitor.control.is_paused();
                if now_paused != paused {
                    paused = now_paused;
                    // Kept until a resume, whatever restarts in between.
                    self.store.set_paused(paused.then(now_ms))?;
                    monitor.set_status(if paused {
                        Status::Paused
                    } else {
                        Status::Running
                    });
                    tracing::info!(
                        next_batch = progress.next_id,
                        "intake {}",
                        if paused { "paused" } else { "resumed" }
                    );
                }
                if paused {
                    self.refresh_lags(&monitor, progress);
                    batch_time += interval;
                    tick += interval;
                    continue;
                }
            }
            let scheduling_delay = Instant::now().saturating_duration_since(due);
            if !self.run_batch(progress, batch_time, scheduling_delay)? {
                return Ok(());
            }
            if let Some(targets) = &progress.targets {
                if bounded::caught_up(&progress.positions, targets) {
                    tracing::info!(
                        batches = progress.next_id - next_id,
                        partitions = targets.len(),
                        "caught up with the latest offsets of the start; the bounded run ends"
                    );
                    return Ok(());
                }
            }
            // Ticks stay on the grid; an overrun batch makes the next one
            // start at once, and the lateness shows as scheduling delay.
            if !redo {
                batch_time += interval;
                tick += interval;
            }
        }
    }

    /// Whether the job starts paused: a pause the checkpoint keeps lasts
    /// until a resume, which needs the control API.
    fn restore_pause(&mut self, progress: &mut Progress) -> Result<bool> {
        let Some(since_ms) = self.store.paused_since()? else {
            return Ok(false);
        };
        // The batch after the resume records the pause too, whatever run
        // it was made in.
        progress.control.push(ControlRecord::new(
            since_ms,
            "pause (kept in the checkpoint across a restart)",
        ));
        let Some(monitor) = &self.monitor else {
            return Err(Error::Paused {
                path: self.settings.checkpoint_dir.clone(),
                since_ms,
            });
        };
        monitor.control.start_paused();
        tracing::warn!(
            since_ms,
            "intake is paused, as the job was left: no batch runs until a resume through the \
             control API"
        );
        Ok(true)
    }

    /// Control changes go into the next committed batch record: a job that
    /// stops before one says them in its log instead. They are not kept
    /// for a restart, which runs with the job's own settings.
    fn note_unrecorded_control(&mut self, progress: &mut Progress) {
        if let Some(monitor) = &self.monitor {
            if let Some(changes) = monitor.control.take() {
                progress.control.extend(changes.records);
            }
        }
        if progress.control.is_empty() {
            return;
        }
        let changes = progress
            .control
            .iter()
            .map(|c| c.change.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        tracing::warn!(
            %changes,
            "the job stopped before another batch committed: these changes are in no batch \
             record; a rate change lasts for this run only, a pause is kept in the \
             checkpoint until a resume"
        );
    }

    /// Applies the control requests made since the last batch.
    fn take_control(&mut self, monitor: &Monitor, progress: &mut Progress) {
        let Some(changes) = monitor.control.take() else {
            return;
        };
        if let Some(limits) = changes.limits {
            let old = std::mem::replace(&mut self.settings.rate_limits, limits);
            let new = &self.settings.rate_limits;
            if new.backpressure != old.backpressure {
                progress.estimator = new
                    .backpressure
                    .then(|| PidRateEstimator::new(new.pid))
                    .transpose()
                    .expect("the estimator settings were validated when the context was built");
                progress.estimate = None;
            }
            if new.max_rate != old.max_rate {
                progress.max_rate = new
                    .max_rate
                    .and_then(|rate| MaxRateBucket::new(rate, self.settings.batch_interval));
            }
        }
        for change in &changes.records {
            tracing::info!(change = %change.change, next_batch = progress.next_id, "control change applied");
        }
        progress.control.extend(changes.records);
    }

    fn wait_until(&self, due: Instant) -> Wake {
        match self
            .stop
            .recv_timeout(due.saturating_duration_since(Instant::now()))
        {
            Err(RecvTimeoutError::Timeout) => Wake::Due,
            Ok(StopRequest) | Err(RecvTimeoutError::Disconnected) => Wake::Stop,
        }
    }

    /// Runs one batch to its commit. `Ok(false)` means a stop request came
    /// in while waiting for the source or for a retry, before anything ran.
    fn run_batch(
        &mut self,
        progress: &mut Progress,
        batch_time: SystemTime,
        scheduling_delay: Duration,
    ) -> Result<bool> {
        let started = Instant::now();
        let (mut plan, mut info, mut replayed_limit) = match progress.replay.take() {
            Some(replay) => {
                tracing::info!(
                    batch = progress.next_id,
                    ranges = replay.plan.ranges.len(),
                    "redoing the batch planned before the restart, with the same ranges"
                );
                let info =
                    BatchInfo::new(progress.next_id, replay.time, replay.plan.ranges.clone());
                if let Some(bucket) = &progress.max_rate {
                    // Its ranges are fixed, but what it reads counts against
                    // the rate all the same.
                    bucket.take(replay.plan.ranges.iter().map(OffsetRange::count).sum());
                }
                (replay.plan, info, replay.rate_limit)
            }
            None => {
                let resumed = !progress.first_start;
                let Some((plan, rate_limit)) = self.plan(progress)? else {
                    return Ok(false);
                };
                if self.settings.bounded
                    && progress.first_batch
                    && resumed
                    && progress.control.is_empty()
                    && bounded::nothing_new(&plan)
                {
                    // As Spark's Trigger.AvailableNow: a run that finds no
                    // record after the stored offsets runs no batch. (A first
                    // start commits one, to keep the positions it resolved.)
                    tracing::info!(
                        "nothing new after the checkpoint's offsets; the bounded run ends \
                         without a batch"
                    );
                    return Ok(false);
                }
                let info = BatchInfo::new(progress.next_id, batch_time, plan.ranges.clone())
                    .with_rate_limit(rate_limit);
                self.store.write_plan(&write_ahead::record(&info, &plan))?;
                (plan, info, None)
            }
        };
        let planning = started.elapsed();
        let mut output = loop {
            match self.compute(&info)? {
                Computed::Done(output) => break output,
                Computed::Stopped => return Ok(false),
                Computed::OutOfRange(error) => {
                    // The log no longer holds a planned range: retention
                    // passed its start after planning, or while the job was
                    // down for a replayed plan. The data-loss policy decides
                    // on fresh offsets, as for any stored position.
                    let Some((replanned, rate_limit)) = self.plan(progress)? else {
                        return Ok(false);
                    };
                    if replanned.ranges == plan.ranges {
                        return Err(error);
                    }
                    tracing::warn!(
                        batch = info.id, %error,
                        "a planned range is no longer in the log; planning the batch again"
                    );
                    plan = replanned;
                    info = BatchInfo::new(info.id, info.time, plan.ranges.clone())
                        .with_rate_limit(rate_limit);
                    replayed_limit = None;
                    self.store.write_plan(&write_ahead::record(&info, &plan))?;
                }
            }
        };
        let dead_letters = output.dead_letters.len() as u64;
        if let Some(family) = self.graph.poison_policy().family() {
            dead_letters::stage(&output.dead_letters, info.id, family, &mut output.writes);
        }
        let processing = started.elapsed();

        let records: u64 = output.records_read.iter().sum();
        let late_records: u64 = output.late_records.iter().map(|late| late.count).sum();
        let mut record = batch_record(&info, &plan, &output, processing, scheduling_delay);
        record.dead_letters = dead_letters;
        if replayed_limit.is_some() {
            record.rate_limit = replayed_limit;
        }
        record.control = std::mem::take(&mut progress.control);
        let published = self.monitor.as_ref().map(|_| record.clone());
        let commit_started = Instant::now();
        self.store.commit(Commit {
            record,
            next_offsets: plan.next_positions().into_iter().collect(),
            writes: output.writes,
        })?;
        let commit = commit_started.elapsed();
        let committed_at = SystemTime::now();
        crash_point::reach(CrashPoint::AfterCheckpoint, info.id);
        self.source.committed(&info);
        progress.positions.extend(plan.next_positions());
        progress.next_id += 1;
        progress.first_batch = false;
        if let Some(estimator) = &mut progress.estimator {
            let rate = estimator.compute(
                info.time_ms(),
                records,
                processing.as_millis() as u64,
                scheduling_delay.as_millis() as u64,
                self.settings.batch_interval.as_millis() as u64,
            );
            progress.estimate = rate.or(progress.estimate);
        }
        let rate_limit = info
            .rate_limit
            .map_or_else(|| "none".to_owned(), |limit| limit.to_string());
        let completed = BatchCompleted {
            info,
            records_per_range: output.records_read,
            records,
            records_fetched: output.records_fetched,
            processing,
            planning,
            scheduling_delay,
            commit,
            new_partitions: plan.new_partitions,
            resets: plan.resets,
            dead_letters,
            late_records: output.late_records,
            min_timestamp: output.min_timestamp,
            max_timestamp: output.max_timestamp,
            committed_at,
        };
        let max_latency = completed.max_latency().map_or_else(
            || "none".to_owned(),
            |latency| Readable(latency).to_string(),
        );

        tracing::info!(
            target: BATCH_LOG_TARGET,
            batch = completed.info.id,
            records,
            fetched = completed.records_fetched,
            ranges = completed.info.ranges.len(),
            processing = %Readable(processing),
            planning = %Readable(planning),
            scheduling_delay = %Readable(scheduling_delay),
            commit = %Readable(commit),
            rate_limit,
            dead_letters,
            late_records,
            max_latency = %max_latency,
            "batch committed"
        );
        if let (Some(monitor), Some(record)) = (&self.monitor, published) {
            let lags = lags(progress);
            // Estimates RocksDB keeps in memory: no read of the data.
            let states = self.store.family_stats().unwrap_or_else(|error| {
                tracing::debug!(%error, "no family sizes for the metrics");
                Vec::new()
            });
            monitor.batch_committed(&completed, record, &lags, progress.estimate, &states);
        }
        for listener in &mut self.listeners {
            listener.on_batch_completed(&completed, self.store.as_ref());
        }
        Ok(true)
    }

    /// While the job is paused no batch plans, so the partitions' offsets
    /// are fetched at each tick for the lag figures alone: lag keeps
    /// growing where operators watch it. A failed fetch keeps the figures
    /// of the last one.
    fn refresh_lags(&mut self, monitor: &Monitor, progress: &mut Progress) {
        match self.source.partitions() {
            Ok(offsets) => {
                progress.latest = offsets;
                monitor.offsets_fetched(&lags(progress));
            }
            Err(error) => {
                tracing::warn!(%error, "could not fetch the partitions' offsets while paused; the lag figures are those of the last fetch");
            }
        }
    }

    /// Discovers partitions, fetches their offsets and plans the ranges,
    /// riding out the source's transient failures with backoff. `None`:
    /// stop requested.
    fn plan(&mut self, progress: &mut Progress) -> Result<Option<(Plan, Option<RateLimit>)>> {
        let deadline = Instant::now() + self.settings.kafka_outage_timeout;
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.try_plan(progress) {
                Ok(plan) => return Ok(Some(plan)),
                Err(error) if error.is_transient() && Instant::now() < deadline => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "waiting for the source before planning the next batch");
                    if let Wake::Stop = self.wait_until(Instant::now() + backoff) {
                        return Ok(None);
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(error) => return Err(Error::from_source(error)),
            }
        }
    }

    fn try_plan(
        &mut self,
        progress: &mut Progress,
    ) -> sluice_core::Result<(Plan, Option<RateLimit>)> {
        let mut offsets = self.source.partitions()?;
        if self.monitor.is_some() {
            progress.latest.clone_from(&offsets);
        }
        if self.settings.bounded {
            let targets = progress
                .targets
                .get_or_insert_with(|| bounded::targets(&offsets));
            offsets = bounded::bound(&offsets, targets);
        }
        if progress.first_start {
            progress.positions = self.source.start_positions(&offsets)?;
            progress.first_start = false;
        }
        let lags: Vec<(TopicPartition, u64)> = offsets
            .iter()
            .map(|p| {
                let from = progress
                    .positions
                    .get(&p.tp)
                    .copied()
                    .unwrap_or(p.log_start);
                let from = from.clamp(p.log_start, p.latest.max(p.log_start));
                (p.tp.clone(), (p.latest - from).max(0) as u64)
            })
            .collect();
        let caps_within = |allowance| {
            batch_caps_within(
                &self.settings.rate_limits,
                progress.estimate,
                progress.first_batch,
                self.settings.batch_interval,
                &lags,
                allowance,
            )
        };
        let mut caps = caps_within(u64::MAX);
        if let (Some(bucket), Some(wanted)) = (&progress.max_rate, caps.total()) {
            // Batches catching up after an overrun get only what accrued.
            let granted = bucket.take(wanted);
            if granted < wanted {
                caps = caps_within(granted);
            }
        }
        let plan = self
            .source
            .plan(&progress.positions, &offsets, caps.caps.as_ref())?;
        Ok((plan, caps.limit))
    }

    /// Computes the batch, retrying it whole if the policy says so.
    fn compute(&self, info: &BatchInfo) -> Result<Computed> {
        let mut attempt = 1;
        loop {
            let env = BatchEnv::new(info.clone(), self.reader.clone(), self.pool.clone())
                .with_state(self.store.state_store())
                .with_cancel(self.cancel.clone());
            let result = self
                .begin_sinks(info)
                .and_then(|()| self.graph.run(env))
                .and_then(|output| {
                    if self.cancel.load(Ordering::SeqCst) {
                        return Ok(None);
                    }
                    self.sink_dead_letters(&output.dead_letters, info)?;
                    crash_point::reach(CrashPoint::BeforeSinks, info.id);
                    self.commit_sinks(info)?;
                    crash_point::reach(CrashPoint::AfterSinks, info.id);
                    Ok(Some(output))
                });
            let error = match result {
                Ok(Some(output)) => return Ok(Computed::Done(output)),
                Ok(None) => {
                    self.abort_sinks(info);
                    return Err(Error::Aborted { id: info.id });
                }
                Err(_) if self.cancel.load(Ordering::SeqCst) => {
                    self.abort_sinks(info);
                    return Err(Error::Aborted { id: info.id });
                }
                Err(error) => {
                    self.abort_sinks(info);
                    error
                }
            };
            if let Some(monitor) = &self.monitor {
                monitor.metrics.batch_failed();
            }
            let failed = |source| Error::Batch {
                id: info.id,
                time_ms: info.time_ms(),
                attempts: attempt,
                source,
            };
            if error.offset_out_of_range().is_some() {
                // Reading it again cannot help: the batch must be planned again.
                return Ok(Computed::OutOfRange(failed(error)));
            }
            match self.settings.on_batch_failure {
                BatchFailurePolicy::Retry {
                    backoff,
                    max_attempts,
                } if attempt < max_attempts => {
                    tracing::warn!(batch = info.id, attempt, %error, "batch failed, nothing committed; retrying it after backoff");
                    if let Wake::Stop = self.wait_until(Instant::now() + backoff) {
                        return Ok(Computed::Stopped);
                    }
                    attempt += 1;
                }
                _ => return Err(failed(error)),
            }
        }
    }
}

impl Driver {
    /// Asks every outside sink whether it already committed the batch that
    /// will be redone first (a crash between its commit and the
    /// checkpoint's); the sink then drops that batch's writes.
    fn recover_sinks(&self, progress: &Progress) -> Result<()> {
        let pending = progress.replay.as_ref().map(|replay| {
            BatchInfo::new(progress.next_id, replay.time, replay.plan.ranges.clone())
        });
        let start = SinkStart::new(
            &self.settings.app_id,
            self.settings.batch_interval,
            pending.as_ref(),
        );
        for sink in self.graph.outside_sinks() {
            let committed = sink.recover(&start).map_err(|source| Error::Sink {
                sink: sink.name().to_owned(),
                source,
            })?;
            if committed {
                tracing::info!(
                    sink = sink.name(),
                    batch = progress.next_id,
                    "the sink committed the batch before the restart; it is redone for the checkpoint only"
                );
            }
        }
        Ok(())
    }

    fn begin_sinks(&self, info: &BatchInfo) -> sluice_core::Result<()> {
        for sink in self.graph.outside_sinks() {
            sink.begin(info)
                .map_err(|source| sink_error(&*sink, source))?;
        }
        Ok(())
    }

    fn sink_dead_letters(
        &self,
        letters: &[sluice_core::DeadLetter],
        info: &BatchInfo,
    ) -> sluice_core::Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        for sink in self.graph.outside_sinks() {
            sink.write_dead_letters(letters, info)
                .map_err(|source| sink_error(&*sink, source))?;
        }
        Ok(())
    }

    /// Commits the sinks in the order they were registered. A sink that
    /// fails leaves the ones before it committed: they skip their writes
    /// when the batch is redone.
    fn commit_sinks(&self, info: &BatchInfo) -> sluice_core::Result<()> {
        for sink in self.graph.outside_sinks() {
            let started = Instant::now();
            sink.commit(info)
                .map_err(|source| sink_error(&*sink, source))?;
            if let Some(monitor) = &self.monitor {
                monitor
                    .metrics
                    .sink_committed(sink.name(), started.elapsed());
            }
        }
        Ok(())
    }

    fn abort_sinks(&self, info: &BatchInfo) {
        for sink in self.graph.outside_sinks() {
            sink.abort(info);
            if let Some(monitor) = &self.monitor {
                monitor.metrics.sink_aborted(sink.name());
            }
        }
    }
}

fn sink_error(sink: &dyn OutsideSink, source: sluice_core::BoxError) -> sluice_core::Error {
    sluice_core::Error::Sink {
        sink: format!("sink {:?}", sink.name()),
        source,
    }
}

/// How computing a batch ended, short of a failure that stops the job.
enum Computed {
    Done(BatchOutput),
    /// A stop request came in during a retry backoff.
    Stopped,
    /// A range's offsets are no longer in the log; the batch must be
    /// planned again. Holds the failure to report if planning gives the same
    /// ranges.
    OutOfRange(Error),
}

fn batch_record(
    info: &BatchInfo,
    plan: &Plan,
    output: &BatchOutput,
    processing: Duration,
    scheduling_delay: Duration,
) -> BatchRecord {
    // The planned record, with what running the batch measured.
    let mut record = write_ahead::record(info, plan);
    for (range, &records) in record.ranges.iter_mut().zip(&output.records_read) {
        range.records = records;
    }
    record.records = output.records_read.iter().sum();
    record.records_fetched = Some(output.records_fetched);
    record.processing_ms = processing.as_millis() as u64;
    record.processing_us = processing.as_micros() as u64;
    record.processed_at_ms = Some(now_ms());
    record.scheduling_delay_ms = scheduling_delay.as_millis() as u64;
    record.late_records = output.late_records.iter().map(Into::into).collect();
    record.min_timestamp_ms = output.min_timestamp;
    record.max_timestamp_ms = output.max_timestamp;
    record
}

/// Each partition's offsets as last fetched, with the job's position in it
/// (its log start when it has none yet).
fn lags(progress: &Progress) -> Vec<(PartitionOffsets, i64)> {
    progress
        .latest
        .iter()
        .map(|offsets| {
            let position = progress
                .positions
                .get(&offsets.tp)
                .copied()
                .unwrap_or(offsets.log_start);
            (offsets.clone(), position)
        })
        .collect()
}

/// Says which stored offsets were moved while the job was stopped (they
/// are not where the last batch left them), as a warning now and as a
/// control entry of the next batch record.
fn moved_while_stopped(
    last: &BatchRecord,
    positions: &BTreeMap<TopicPartition, i64>,
) -> Option<ControlRecord> {
    let moved = moved_offsets::moved(last, positions);
    if moved.is_empty() {
        return None;
    }
    let list = moved
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    tracing::warn!(
        batch = last.id, moved = %list,
        "stored offsets are not where the last batch left them (moved with `sluice offsets set`?); \
         the job reads on from the stored offsets, and the next batch record notes the move"
    );
    Some(ControlRecord::new(
        now_ms(),
        format!("offsets moved while stopped: {list}"),
    ))
}
