//! Memory against the backlog: the wordcount example, run as a child
//! process on a topic with twenty times the backlog, peaks at about the
//! same resident memory, both when rate limits size its batches and when
//! one batch reads the whole backlog.
//!
//! Each partition consumer prefetches up to `queued.max.messages.kbytes`
//! and fetches up to `max.partition.fetch.bytes` at a time (and
//! `fetch.max.bytes` per response); the children run with 1 MiB, 256 KiB
//! and 1 MiB, so those bounds are small next to the backlog.
//! The broker is tansu with memory storage: the in-process mock broker keeps
//! only about 5 MB per partition and drops older records.

use std::path::Path;

use crate::util::job::{self, WAIT};
use crate::util::kafka;
use crate::util::tansu::Tansu;
use crate::util::wordcount::{self, Wordcount};

const PARTITIONS: i32 = 4;
/// Records per partition of the small topic; the big one has `TIMES` as
/// many. Lines of 64 bytes: 6.4 MB against 128 MB of values.
const SMALL: usize = 25_000;
const TIMES: usize = 20;
const LINE: usize = 64;
/// What the bigger backlog may add to the peak: two fifths of the raw size
/// of the extra values, 49 MB. Holding the backlog would add more than all
/// of it (each record also costs its struct and allocation); bounded
/// memory differs between runs by up to about 20 MB (allocator arenas,
/// fetch buffers in flight).
const ALLOWED_GROWTH: u64 = ((TIMES - 1) * SMALL * PARTITIONS as usize * LINE * 2 / 5) as u64;

/// Bounds on what a partition consumer holds: its prefetch queue and the
/// fetch responses in flight.
const PREFETCH: &str = "queued.max.messages.kbytes=1024";
const FETCH_SIZE: &str = "max.partition.fetch.bytes=262144";
const FETCH_TOTAL: &str = "fetch.max.bytes=1048576";

/// 64-byte lines of words, so the counts stay few whatever the backlog.
fn lines(partition: i32, count: usize) -> impl Iterator<Item = String> {
    (0..count).map(move |i| {
        let mut line = job::line(i + partition as usize);
        line.push(' ');
        while line.len() < LINE {
            line.push('x');
        }
        line.truncate(LINE);
        line
    })
}

/// Creates `topic` and writes `per_partition` lines to each partition. The
/// last line of a partition goes in a request of its own: tansu's memory
/// storage reports the base offset of the last write + 1 as the latest
/// offset.
fn fill(broker: &Tansu, topic: &str, per_partition: usize) {
    broker.create_topic(topic, PARTITIONS);
    let bootstrap = broker.bootstrap();
    for partition in 0..PARTITIONS {
        let mut lines: Vec<String> = lines(partition, per_partition).collect();
        let last = lines.pop().expect("at least one line");
        kafka::produce(&bootstrap, topic, Some(partition), lines);
        kafka::produce(&bootstrap, topic, Some(partition), [last]);
    }
}

/// A broker with the topics `small` and `big`, `TIMES` larger.
fn small_and_big() -> Tansu {
    let broker = Tansu::start_in_memory();
    fill(&broker, "small", SMALL);
    fill(&broker, "big", SMALL * TIMES);
    broker
}

/// Runs the example on `topic` until `done` holds for the committed next
/// offsets, and returns its peak resident memory.
fn peak_memory(
    bootstrap: &str,
    topic: &str,
    dir: &Path,
    args: &[&str],
    what: &str,
    done: impl Fn(u64, i64) -> bool,
) -> u64 {
    let checkpoint = dir.join(topic);
    let log = dir.join(format!("{topic}.log"));
    let mut child = Wordcount::start_with_args(bootstrap, topic, &checkpoint, &log, 100, args);
    job::poll(
        what,
        WAIT,
        || {
            let (id, offsets) = wordcount::committed(&checkpoint)?;
            let read: i64 = offsets.values().sum();
            done(id, read).then_some(())
        },
        || child.log_tail(),
    );
    let peak = child.peak_memory();
    child.kill();
    peak
}

fn assert_flat(small: u64, big: u64, how: &str) {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    assert!(
        big <= small + ALLOWED_GROWTH,
        "{how}: peak memory {:.1} MiB with {TIMES} times the backlog, against {:.1} MiB \
         (allowed growth {:.1} MiB)",
        mib(big),
        mib(small),
        mib(ALLOWED_GROWTH)
    );
}

#[test]
fn peak_memory_under_rate_limits_does_not_grow_with_the_backlog() {
    let broker = small_and_big();
    let bootstrap = broker.bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--backpressure",
        "--initial-rate",
        "20000",
        "--max-rate-per-partition",
        "25000",
        "--set",
        PREFETCH,
        "--set",
        FETCH_SIZE,
        "--set",
        FETCH_TOTAL,
    ];
    // 10 batches of at most 10 000 records: under the small topic's 100 000,
    // so both runs read the same amount and only the backlog differs.
    let ten_batches = |id: u64, _| id >= 9;
    let small = peak_memory(
        &bootstrap,
        "small",
        dir.path(),
        &args,
        "10 batches",
        ten_batches,
    );
    let big = peak_memory(
        &bootstrap,
        "big",
        dir.path(),
        &args,
        "10 batches",
        ten_batches,
    );
    assert_flat(small, big, "rate limited");
}

#[test]
fn a_batch_reading_the_whole_backlog_holds_chunks_not_the_backlog() {
    let broker = small_and_big();
    let bootstrap = broker.bootstrap();
    let dir = tempfile::tempdir().unwrap();
    // No rate limit: the first batch reads everything.
    let args = ["--set", PREFETCH, "--set", FETCH_SIZE, "--set", FETCH_TOTAL];
    let all = |records: usize| move |_, read: i64| read >= (records * PARTITIONS as usize) as i64;
    let small = peak_memory(
        &bootstrap,
        "small",
        dir.path(),
        &args,
        "the whole topic",
        all(SMALL),
    );
    let big = peak_memory(
        &bootstrap,
        "big",
        dir.path(),
        &args,
        "the whole topic",
        all(SMALL * TIMES),
    );
    assert_flat(small, big, "unlimited");
}
