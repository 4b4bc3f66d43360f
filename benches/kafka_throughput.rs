//! End-to-end throughput against a real broker: sluice reading Kafka next
//! to a hand-written rdkafka consumer draining the same topic.
//!
//! Starts a `tansu` broker (memory storage) on a free loopback port,
//! pre-fills a 4-partition topic with `SLUICE_BENCH_RECORDS` text lines
//! (default 1,000,000; nine 6-letter words, 62 bytes each), then measures,
//! interleaved and `SLUICE_BENCH_REPEATS` times each (default 3, median
//! reported):
//!
//! - `bare drain`: one `BaseConsumer` assigned to the 4 partitions from
//!   offset 0, polling until it has seen every record;
//! - `sluice pass-through`: `kafka_stream(..).count().foreach_batch(..)`,
//!   from `start()` until a listener sees every record committed;
//! - `sluice wordcount`: `values_utf8().count_keys(words)
//!   .save_counts(..)`, timed the same way;
//! - `sluice pass + http`: the pass-through job with its HTTP endpoint on
//!   (`.http("127.0.0.1:0")`) and a client scraping `/metrics`, `/` and
//!   `/api/batches` every second, compared with the pass-through without
//!   an endpoint (goal ≥ 0.97×).
//!
//! Then the fixed cost of a batch: `SLUICE_BENCH_EMPTY_BATCHES` batches
//! (default 2000) at a 1 ms interval on an empty 4-partition topic, with
//! `checkpoint_sync(false)` and then `checkpoint_sync(true)`.
//!
//! Every consumer (bare and sluice) gets the same client settings,
//! [`CONSUMER_SETTINGS`] plus the ones sluice forces, printed with the
//! results. `SLUICE_BENCH_MAX_RATE_PER_PARTITION` (records/s) caps sluice
//! batches; by default the pre-filled topic is read in one batch.
//! `SLUICE_BENCH_ONLY=bare,pass,wordcount,outputs,http,empty,synced` runs a subset (for
//! profiling); `SLUICE_BENCH_PARTITIONS` sets the topics' partitions (default 4). The broker binary is `$TANSU_BIN`, `tansu` on `PATH` or
//! `~/.cargo/bin/tansu` (`make setup` installs it); `SLUICE_TEST_BROKER=nisshi`
//! runs nisshi instead (`$NISSHI_BIN`, `nisshi`).
//!
//! ```text
//! cargo bench --bench kafka_throughput
//! ```
//!
//! Under `cargo test` (no `--bench` argument) the defaults shrink to
//! 100,000 records, one repeat and 100 empty batches: a check that every
//! job runs and counts right, not a measurement.

use std::hint::black_box;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use sluice::prelude::*;
use tempfile::TempDir;

// The integration tests' broker launcher; the bench uses part of it.
#[allow(dead_code)]
#[path = "../tests/util/tansu.rs"]
mod tansu;
use tansu::Tansu;

/// Partitions of the bench's topics: `SLUICE_BENCH_PARTITIONS`, 4 by
/// default.
static PARTITIONS: OnceLock<i32> = OnceLock::new();

fn partitions() -> i32 {
    *PARTITIONS.get().unwrap_or(&4)
}
const WORDS_PER_LINE: usize = 9;
const VOCABULARY: usize = 1000;
const BATCH_INTERVAL: Duration = Duration::from_millis(100);
const WORKERS: usize = 2;
/// How long one measured run may take before the bench gives up.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);
/// Empty batches dropped from the statistics: the first ones create the
/// consumers and warm the checkpoint (and then the catch-up that follows).
const WARMUP_BATCHES: usize = 5;
/// Batch interval of the empty-batch measurement.
const EMPTY_INTERVAL: Duration = Duration::from_millis(1);

/// Client settings of every consumer in the bench, bare and sluice alike:
/// fetch big chunks, keep a deep prefetch queue, and do not let the broker
/// sit on a fetch for long when a partition is drained.
const CONSUMER_SETTINGS: [(&str, &str); 5] = [
    ("fetch.wait.max.ms", "10"),
    ("fetch.min.bytes", "1"),
    ("max.partition.fetch.bytes", "4194304"),
    ("queued.min.messages", "200000"),
    ("queued.max.messages.kbytes", "262144"),
];

/// What sluice sets on its consumers (forced, or its defaults); the bare
/// drain gets them too.
const SLUICE_FORCED: [(&str, &str); 5] = [
    ("fetch.queue.backoff.ms", "10"),
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("enable.partition.eof", "true"),
    ("auto.offset.reset", "error"),
];

fn main() -> Result<()> {
    // Off unless asked for: `SLUICE_BENCH_LOG=sluice=debug` shows where a
    // run spends its time.
    if let Ok(filter) = std::env::var("SLUICE_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    // `cargo bench` passes `--bench`; `cargo test` runs this binary without
    // it, as a quick check that every measured job still works.
    let measuring = std::env::args().any(|arg| arg == "--bench");
    let (records, repeats, empty_batches) = if measuring {
        (1_000_000, 3, 2000)
    } else {
        (100_000, 1, 100)
    };
    let records = env_u64("SLUICE_BENCH_RECORDS", records)?;
    let repeats = env_u64("SLUICE_BENCH_REPEATS", repeats)?.max(1) as usize;
    let empty_batches = env_u64("SLUICE_BENCH_EMPTY_BATCHES", empty_batches)?.max(1) as usize;
    let count = i32::try_from(env_u64("SLUICE_BENCH_PARTITIONS", 4)?)
        .ok()
        .filter(|p| *p > 0)
        .context("SLUICE_BENCH_PARTITIONS must be a partition count, 1 or more")?;
    PARTITIONS.get_or_init(|| count);
    let max_rate = std::env::var("SLUICE_BENCH_MAX_RATE_PER_PARTITION")
        .ok()
        .map(|v| v.parse::<f64>())
        .transpose()
        .context("SLUICE_BENCH_MAX_RATE_PER_PARTITION must be a number")?;
    let only = std::env::var("SLUICE_BENCH_ONLY").ok();
    let runs = |what: &str| {
        only.as_deref()
            .is_none_or(|list| list.split(',').any(|w| w.trim() == what))
    };
    ensure!(
        records >= partitions() as u64,
        "SLUICE_BENCH_RECORDS must be at least {}",
        partitions()
    );

    if !measuring {
        println!("quick check under `cargo test`: the figures below are not measurements");
    }
    let broker = Tansu::start_in_memory();
    let bootstrap = broker.bootstrap();
    println!("{} (memory storage) on {bootstrap}", broker.kind().name());

    broker.create_topic("lines", partitions());
    let started = Instant::now();
    prefill(&bootstrap, "lines", records)?;
    let elapsed = started.elapsed();
    println!(
        "pre-filled 'lines' ({} partitions) with {records} records of {} bytes in {:.2} s ({:.0} records/s)",
        partitions(),
        line_bytes(),
        elapsed.as_secs_f64(),
        records as f64 / elapsed.as_secs_f64()
    );

    let bench = Bench {
        bootstrap: bootstrap.clone(),
        topic: "lines".to_owned(),
        records,
        max_rate,
    };
    let mut bare = Vec::new();
    let mut pass = Vec::new();
    let mut words = Vec::new();
    let mut two = Vec::new();
    let mut three = Vec::new();
    let mut http = Vec::new();
    for run in 0..repeats {
        if runs("bare") {
            bare.push(bench.bare_drain(run)?);
            eprintln!("run {run}: bare drain {:.3} s", bare[run].as_secs_f64());
        }
        if runs("pass") {
            pass.push(bench.sluice(run, Job::PassThrough)?);
            eprintln!(
                "run {run}: sluice pass-through {:.3} s",
                pass[run].as_secs_f64()
            );
        }
        if runs("http") {
            http.push(bench.sluice(run, Job::PassThroughHttp)?);
            eprintln!(
                "run {run}: sluice pass-through with HTTP scraped {:.3} s",
                http[run].as_secs_f64()
            );
        }
        if runs("wordcount") {
            words.push(bench.sluice(run, Job::WordCount)?);
            eprintln!(
                "run {run}: sluice wordcount {:.3} s",
                words[run].as_secs_f64()
            );
        }
        if runs("outputs") {
            // In turns, so neither job is always the one that runs after the
            // small-memory jobs (the first to keep a whole batch maps fresh
            // memory).
            if run % 2 == 0 {
                two.push(bench.sluice(run, Job::MoreOutputs(1))?);
                three.push(bench.sluice(run, Job::MoreOutputs(2))?);
            } else {
                three.push(bench.sluice(run, Job::MoreOutputs(2))?);
                two.push(bench.sluice(run, Job::MoreOutputs(1))?);
            }
            eprintln!(
                "run {run}: sluice pass-through with 2 and 3 outputs {:.3} s, {:.3} s",
                two[run].as_secs_f64(),
                three[run].as_secs_f64()
            );
        }
    }

    println!();
    println!("consumer settings (bare drain and sluice alike):");
    for (key, value) in CONSUMER_SETTINGS.iter().chain(&SLUICE_FORCED) {
        println!("  {key}={value}");
    }
    println!(
        "sluice: batch interval {BATCH_INTERVAL:?}, {WORKERS} workers, checkpoint_sync(false), {}",
        match max_rate {
            Some(rate) => format!("max {rate} records/s per partition"),
            None => "no rate limit".to_owned(),
        }
    );
    println!();
    println!(
        "{:<22} {:>14} {:>10} {:>8}   runs (s)",
        "measure", "records/s", "vs bare", "goal"
    );
    let baseline = median_rate(&bare, records);
    for (name, times, goal) in [
        ("bare drain", &bare, None),
        ("sluice pass-through", &pass, Some(0.9)),
        ("sluice wordcount", &words, Some(0.7)),
        ("pass-through, 2 outputs", &two, None),
        ("pass-through, 3 outputs", &three, None),
        ("sluice pass + http", &http, None),
    ] {
        if times.is_empty() {
            continue;
        }
        let rate = median_rate(times, records);
        let ratio = baseline.map(|b| rate.unwrap_or(0.0) / b);
        println!(
            "{name:<22} {:>14.0} {:>10} {:>8}   {}",
            rate.unwrap_or(0.0),
            ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x")),
            goal.map_or_else(
                || "".to_owned(),
                |g: f64| match ratio {
                    Some(r) if r >= g => format!(">={g} ok"),
                    Some(_) => format!(">={g} MISS"),
                    None => format!(">={g}"),
                }
            ),
            times
                .iter()
                .map(|t| format!("{:.3}", t.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }

    if let Some(one) = median_rate(&pass, records) {
        for (outputs, times) in [(2, &two), (3, &three)] {
            if let Some(rate) = median_rate(times, records) {
                println!(
                    "{outputs} outputs on one input vs 1: {:.2}x (goal >= 0.8)",
                    rate / one
                );
            }
        }
    }
    if let (Some(off), Some(on)) = (median_rate(&pass, records), median_rate(&http, records)) {
        let ratio = on / off;
        println!(
            "HTTP endpoint on and scraped every second vs off: {ratio:.3}x (goal >=0.97 {})",
            if ratio >= 0.97 { "ok" } else { "MISS" }
        );
    }

    if runs("empty") || runs("synced") {
        broker.create_topic("empty", partitions());
        println!();
        println!(
            "empty batches: {empty_batches} batches at a 1 ms interval on an empty \
             {}-partition topic (the first {WARMUP_BATCHES} and the catch-up after the first dropped), times in ms",
            partitions()
        );
        println!(
            "{:<34} {:>8} {:>8} {:>8} {:>8}",
            "measure", "mean", "p50", "p99", "max"
        );
        if runs("empty") {
            let stats = bench.empty_batches(false, empty_batches)?;
            println!(
                "{:<34} {:>8.3}",
                "first batch (connects)",
                stats.first.as_secs_f64() * 1e3
            );
            print_stats("processing + commit (no sync)", &stats.total);
            print_stats("  processing (plan + run)", &stats.processing);
            print_stats("  commit (no sync)", &stats.commit);
            print_stats("  scheduling delay", &stats.scheduling_delay);
        }
        if runs("synced") {
            let stats = bench.empty_batches(true, empty_batches)?;
            print_stats("commit (checkpoint_sync(true))", &stats.commit);
            print_stats("processing + commit (synced)", &stats.total);
        }
    }
    Ok(())
}

/// A client reading the job's endpoint every second, as Prometheus and an
/// open browser tab would.
struct Scraper {
    stop: mpsc::Sender<()>,
    thread: thread::JoinHandle<Result<u64>>,
}

impl Scraper {
    fn start(addr: std::net::SocketAddr) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::spawn(move || -> Result<u64> {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into();
            let mut scrapes = 0;
            loop {
                for path in ["/metrics", "/", "/api/batches"] {
                    let body = agent
                        .get(format!("http://{addr}{path}"))
                        .call()?
                        .body_mut()
                        .read_to_string()?;
                    black_box(body);
                }
                scrapes += 1;
                match stopped.recv_timeout(Duration::from_secs(1)) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return Ok(scrapes),
                }
            }
        });
        Self { stop, thread }
    }

    fn stop(self) -> Result<u64> {
        let _ = self.stop.send(());
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the scraper panicked"))?
    }
}

/// The jobs measured against the bare drain.
#[derive(Clone, Copy)]
enum Job {
    PassThrough,
    /// The pass-through with its HTTP endpoint on, scraped every second.
    PassThroughHttp,
    WordCount,
    /// The pass-through with this many more outputs on the same input, each
    /// counting the batch's records and looking at its offset ranges (as an
    /// output logging what each batch read would).
    MoreOutputs(usize),
}

struct Bench {
    bootstrap: String,
    topic: String,
    records: u64,
    max_rate: Option<f64>,
}

impl Bench {
    /// The hand-written baseline: one consumer, every partition, poll until
    /// every record was seen. Touches each payload so nothing is skipped.
    fn bare_drain(&self, run: usize) -> Result<Duration> {
        let started = Instant::now();
        let consumer: BaseConsumer = consumer_config(&self.bootstrap)
            .set("group.id", format!("bench-bare-{run}"))
            .set("client.id", "bench-bare")
            .create()
            .context("creating the bare consumer")?;
        let mut tpl = TopicPartitionList::new();
        for partition in 0..partitions() {
            tpl.add_partition_offset(&self.topic, partition, Offset::Offset(0))?;
        }
        consumer.assign(&tpl)?;
        let deadline = started + RUN_TIMEOUT;
        let (mut seen, mut bytes) = (0u64, 0usize);
        while seen < self.records {
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(msg)) => {
                    seen += 1;
                    bytes += msg.payload().map_or(0, <[u8]>::len);
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(e)) => return Err(e).context("bare drain"),
            }
            ensure!(
                Instant::now() < deadline,
                "bare drain saw {seen} of {} records in {RUN_TIMEOUT:?}",
                self.records
            );
        }
        let elapsed = started.elapsed();
        black_box(bytes);
        Ok(elapsed)
    }

    fn source(&self) -> Result<KafkaSource> {
        let mut builder = KafkaSource::builder()
            .brokers(&self.bootstrap)
            .subscribe([self.topic.as_str()]);
        for (key, value) in CONSUMER_SETTINGS {
            builder = builder.set(key, value);
        }
        Ok(builder.build()?)
    }

    /// From `start()` until a listener saw every record committed.
    fn sluice(&self, run: usize, job: Job) -> Result<Duration> {
        let name = match job {
            Job::PassThrough => "pass",
            Job::PassThroughHttp => "http",
            Job::WordCount => "wordcount",
            Job::MoreOutputs(_) => "outputs",
        };
        let dir = TempDir::new()?;
        let mut limits = RateLimits::new();
        if let Some(rate) = self.max_rate {
            limits = limits.max_rate_per_partition(rate);
        }
        let mut builder = StreamingContext::builder()
            .app_id(format!("bench-{name}-{run}"))
            .batch_interval(BATCH_INTERVAL)
            .checkpoint_dir(dir.path())
            .checkpoint_sync(false)
            .stop_on_signals(false)
            .workers(WORKERS)
            .rate_limits(limits);
        if let Job::PassThroughHttp = job {
            builder = builder.http("127.0.0.1:0");
        }
        if let Job::MoreOutputs(_) = job {
            // Keep the whole batch for the later outputs: with no rate
            // limit the first batch holds the whole topic, past the default
            // bound, and tansu's memory storage answers a fetch that starts
            // inside a record batch from the next batch on, so a chunk read
            // again from Kafka would miss records.
            builder = builder.shared_input_bytes(usize::MAX);
        }
        let ctx = builder.build()?;
        let stream = ctx.kafka_stream(self.source()?)?;
        let counted = Arc::new(AtomicI64::new(0));
        match job {
            Job::PassThrough | Job::PassThroughHttp | Job::MoreOutputs(_) => {
                let counted = Arc::clone(&counted);
                stream.count().foreach_batch(move |batch, _| {
                    counted.fetch_add(batch.iter().sum::<i64>(), Ordering::Relaxed);
                    Ok::<_, std::io::Error>(())
                })?;
                let more = match job {
                    Job::MoreOutputs(more) => more,
                    _ => 0,
                };
                for _ in 0..more {
                    stream.count().foreach_batch(|batch, info| {
                        std::hint::black_box((batch.iter().sum::<i64>(), info.ranges.len()));
                        Ok::<_, std::io::Error>(())
                    })?;
                }
            }
            Job::WordCount => stream
                .values_utf8()
                .count_keys(|line: &String, count| line.split_ascii_whitespace().for_each(count))
                .save_counts("words")?,
        }
        let (done, finished) = mpsc::channel();
        let target = self.records;
        let mut committed = 0u64;
        let mut fetched = 0u64;
        let words_total = Arc::clone(&counted);
        ctx.add_listener(move |batch: &BatchCompleted, store: &dyn CheckpointStore| {
            if committed >= target {
                return;
            }
            committed += batch.records;
            fetched += batch.records_fetched;
            if committed >= target {
                let at = Instant::now();
                if let Job::WordCount = job {
                    // After the clock stopped: a sanity check of the counts.
                    let total = store
                        .counters("words")
                        .map_or(-1, |c| c.iter().map(|(_, n)| n).sum());
                    words_total.store(total, Ordering::Relaxed);
                }
                let _ = done.send((at, committed, fetched));
            }
        })?;
        let started = Instant::now();
        ctx.start()?;
        let scraper = ctx.http_addr().map(Scraper::start);
        let outcome = finished.recv_timeout(RUN_TIMEOUT);
        if let Some(scraper) = scraper {
            let scrapes = scraper.stop()?;
            eprintln!("  {scrapes} scrapes of /metrics, / and /api/batches");
        }
        ctx.stop(true)?;
        let (at, committed, fetched) = outcome.map_err(|_| {
            anyhow::anyhow!("sluice {name} did not commit {target} records in {RUN_TIMEOUT:?}")
        })?;
        ensure!(
            committed == target,
            "sluice {name} committed {committed} records, expected {target}"
        );
        // However many outputs: each record taken from Kafka once (the
        // jobs keep every chunk for their later outputs). Only a failed and
        // retried task could read a range twice: the run is not what it
        // measures then.
        ensure!(
            fetched == committed,
            "sluice {name} fetched {fetched} records from Kafka for the {committed} it read: a \
             range was read twice (a task retried after a failure? see the log)"
        );
        let expected = match job {
            Job::PassThrough | Job::PassThroughHttp | Job::MoreOutputs(_) => target as i64,
            Job::WordCount => (target * WORDS_PER_LINE as u64) as i64,
        };
        let got = counted.load(Ordering::Relaxed);
        ensure!(
            got == expected,
            "sluice {name} counted {got}, expected {expected}"
        );
        Ok(at - started)
    }

    /// Runs `batches` batches on the empty topic at a 1 ms interval.
    fn empty_batches(&self, sync: bool, batches: usize) -> Result<EmptyStats> {
        let dir = TempDir::new()?;
        let ctx = StreamingContext::builder()
            .app_id(format!("bench-empty-{sync}"))
            .batch_interval(EMPTY_INTERVAL)
            .checkpoint_dir(dir.path())
            .checkpoint_sync(sync)
            .stop_on_signals(false)
            .workers(WORKERS)
            .build()?;
        let source = {
            let mut builder = KafkaSource::builder()
                .brokers(&self.bootstrap)
                .subscribe(["empty"]);
            for (key, value) in CONSUMER_SETTINGS {
                builder = builder.set(key, value);
            }
            builder.build()?
        };
        let counted = Arc::new(AtomicI64::new(0));
        let total = Arc::clone(&counted);
        ctx.kafka_stream(source)?
            .count()
            .foreach_batch(move |batch, _| {
                total.fetch_add(batch.iter().sum::<i64>(), Ordering::Relaxed);
                Ok::<_, std::io::Error>(())
            })?;
        let (done, finished) = mpsc::channel();
        let mut seen = Vec::with_capacity(batches);
        let mut done = Some(done);
        ctx.add_listener(move |batch: &BatchCompleted, _: &dyn CheckpointStore| {
            seen.push((batch.processing, batch.commit, batch.scheduling_delay));
            if seen.len() == batches {
                if let Some(done) = done.take() {
                    let _ = done.send(std::mem::take(&mut seen));
                }
            }
        })?;
        ctx.start()?;
        let outcome = finished.recv_timeout(RUN_TIMEOUT);
        ctx.stop(true)?;
        let seen = outcome
            .map_err(|_| anyhow::anyhow!("{batches} empty batches took over {RUN_TIMEOUT:?}"))?;
        ensure!(
            counted.load(Ordering::Relaxed) == 0,
            "the empty topic had records"
        );
        // The first batch connects and creates the consumers, so it overruns
        // the 1 ms interval and the batches due meanwhile run late, back to
        // back: drop those too.
        let first = seen[0].0 + seen[0].1;
        let catch_up = first.as_nanos().div_ceil(EMPTY_INTERVAL.as_nanos()) as usize;
        let seen = &seen[(WARMUP_BATCHES + catch_up).min(seen.len() - 1)..];
        Ok(EmptyStats {
            first,
            processing: seen.iter().map(|s| s.0).collect(),
            commit: seen.iter().map(|s| s.1).collect(),
            scheduling_delay: seen.iter().map(|s| s.2).collect(),
            total: seen.iter().map(|s| s.0 + s.1).collect(),
        })
    }
}

struct EmptyStats {
    /// Processing and commit of the first batch.
    first: Duration,
    processing: Vec<Duration>,
    commit: Vec<Duration>,
    scheduling_delay: Vec<Duration>,
    total: Vec<Duration>,
}

fn print_stats(name: &str, samples: &[Duration]) {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    println!(
        "{name:<34} {mean:>8.3} {:>8.3} {:>8.3} {:>8.3}",
        at(0.5),
        at(0.99),
        ms[ms.len() - 1]
    );
}

/// Records per second of the median run.
fn median_rate(times: &[Duration], records: u64) -> Option<f64> {
    let mut times = times.to_vec();
    times.sort();
    let median = times.get(times.len() / 2)?;
    Some(records as f64 / median.as_secs_f64())
}

fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in CONSUMER_SETTINGS.iter().chain(&SLUICE_FORCED) {
        config.set(*key, *value);
    }
    config
}

/// Word `i` of the vocabulary: three syllables, six letters.
fn word(i: usize) -> String {
    const SYLLABLES: [&str; 10] = ["ka", "lo", "mi", "su", "te", "ra", "no", "vi", "de", "pu"];
    [i / 100, i / 10 % 10, i % 10]
        .map(|d| SYLLABLES[d])
        .concat()
}

fn line_bytes() -> usize {
    WORDS_PER_LINE * 7 - 1
}

/// Produces `records` lines round-robin over the partitions. The last
/// record of each partition goes in a batch of its own: tansu 0.6's memory
/// storage reports the high watermark as the last batch's base offset + 1,
/// which is then the true end of the partition.
fn prefill(bootstrap: &str, topic: &str, records: u64) -> Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("acks", "1")
        .create()
        .context("creating the producer")?;
    let vocabulary: Vec<String> = (0..VOCABULARY).map(word).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut line = String::with_capacity(line_bytes());
    let mut next_line = || {
        line.clear();
        for w in 0..WORDS_PER_LINE {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if w > 0 {
                line.push(' ');
            }
            line.push_str(&vocabulary[(state % VOCABULARY as u64) as usize]);
        }
        line.clone()
    };
    let bulk = records - partitions() as u64;
    for i in 0..records {
        if i == bulk {
            producer.flush(Duration::from_secs(60))?;
        }
        let payload = next_line();
        let partition = (i % partitions() as u64) as i32;
        let mut record = BaseRecord::<(), str>::to(topic)
            .partition(partition)
            .payload(payload.as_str());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e).context("producing"),
            }
        }
        if i >= bulk {
            producer.flush(Duration::from_secs(60))?;
        }
    }
    producer.flush(Duration::from_secs(60))?;

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let mut total = 0;
    for partition in 0..partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        total += high - low;
    }
    ensure!(
        total == records as i64,
        "the broker reports {total} records in '{topic}', not {records}"
    );
    Ok(())
}

fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .replace('_', "")
            .parse()
            .with_context(|| format!("{name}={value} is not a count")),
        Err(_) => Ok(default),
    }
}
