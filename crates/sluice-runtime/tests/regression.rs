//! Regressions, each named after the fault it pins.

use std::time::Duration;

use sluice_checkpoint::{CheckpointStore, RocksCheckpoint};
use sluice_core::state::{State, StateSpec};
use sluice_core::MemorySource;
use sluice_runtime::Error;

use crate::util::{context, values, CountingJob, APP_ID};

/// A restarted `MemorySource` holds only what the new process appended, so
/// stored offsets can be past its latest; the error's hint named
/// `on_data_loss`, a `KafkaSource` method, for it.
#[test]
fn an_offset_ahead_of_a_memory_source_names_its_data_loss_setter() {
    let dir = tempfile::tempdir().unwrap();
    let source = MemorySource::new();
    source.append("words", 0, values("a", 0..10));
    let job = CountingJob::new(context(dir.path()).build().unwrap(), source).start();
    job.wait_for_records(10);
    job.stop();

    // A new process: a new source, with fewer records than were read.
    let forgetful = MemorySource::new();
    forgetful.append("words", 0, values("b", 0..3));
    let job = CountingJob::new(context(dir.path()).build().unwrap(), forgetful).start();
    let error = job.context().await_termination().unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Source(sluice_core::Error::OffsetAhead {
                stored: 10,
                latest: 3,
                ..
            })
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("MemorySource::with_data_loss_policy"),
        "{message}"
    );
}

/// `--batch-interval-ms 0` was refused as "0ns is too short".
#[test]
fn a_too_short_batch_interval_is_reported_in_milliseconds() {
    let dir = tempfile::tempdir().unwrap();
    for (interval, shown) in [
        (Duration::ZERO, "0 ms is too short"),
        (Duration::from_micros(500), "0.5 ms is too short"),
    ] {
        let error = context(dir.path())
            .batch_interval(interval)
            .build()
            .unwrap_err();
        let message = error.to_string();
        assert!(message.contains(shown), "{message}");
    }
}

/// A port in use was reported as "could not bind the HTTP endpoint's
/// address", without the address.
#[test]
fn a_busy_http_port_is_refused_naming_the_address() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path()).http(addr.to_string()).build().unwrap();
    let job = CountingJob::new(ctx, MemorySource::new());
    let error = job.context().start().unwrap_err();
    assert!(
        matches!(&error, Error::HttpBind { addr: at, .. } if *at == addr),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&addr.to_string()), "{message}");
}

/// newuser2 report, item 8c: `StateSpec::timeout(Duration::ZERO)` and
/// `.ttl(Duration::ZERO)` were accepted silently.
#[test]
fn a_zero_state_timeout_or_ttl_is_refused_at_start_naming_the_state_and_setting() {
    type Spec = StateSpec<String, u64, u64, ()>;
    type Setting = fn(Spec) -> Spec;
    let count = |_: &String, _: Option<u64>, state: &mut State<u64>| {
        state.update(state.get().copied().unwrap_or(0) + 1);
    };
    let settings: [(Setting, &str); 3] = [
        (|spec| spec.timeout(Duration::ZERO), "timeout (0 ms)"),
        (|spec| spec.ttl(Duration::ZERO), "ttl (0 ms)"),
        (|spec| spec.ttl(Duration::from_micros(500)), "ttl (0.5 ms)"),
    ];
    for (set, named) in settings {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path()).build().unwrap();
        let source = MemorySource::new();
        source.append("clicks", 0, values("u", 0..3));
        ctx.stream(source)
            .unwrap()
            .values_utf8()
            .map(|user| (user, 1u64))
            .map_with_state("user_clicks", set(StateSpec::function(count)))
            .foreach_batch(|_, _| Ok::<_, std::io::Error>(()))
            .unwrap();
        let message = ctx.start().unwrap_err().to_string();
        assert!(
            message.contains("map_with_state(\"user_clicks\")")
                && message.contains(named)
                && message.contains("shorter than 1 ms"),
            "{message}"
        );
        drop(ctx);
        let checkpoint = RocksCheckpoint::open_read_only(dir.path(), APP_ID).unwrap();
        assert!(checkpoint.states().unwrap().is_empty());
        assert!(checkpoint.last_batch().unwrap().is_none());
    }
}

/// A task after a cached stream that fails once is retried and reads the
/// cached values again. (A first version handed a cached partition over to
/// its last reader by count, so a retry took a read of the output after
/// it, which then failed the batch.)
#[test]
fn a_retried_task_after_cache_reads_the_cached_values_again() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let source = MemorySource::new();
    source.append("words", 0, values("a", 0..20));
    let ctx = context(dir.path()).task_attempts(2).build().unwrap();
    let failed = Arc::new(AtomicBool::new(false));
    let once = Arc::clone(&failed);
    let words = ctx.stream(source).unwrap().values_utf8().cache();
    words
        .map(move |word| {
            assert!(
                once.swap(true, Ordering::SeqCst),
                "a failure the retry does not meet"
            );
            word
        })
        .count_by_value()
        .save_counts("first")
        .unwrap();
    words.count_by_value().save_counts("second").unwrap();
    ctx.run_until_caught_up().unwrap();
    assert!(failed.load(Ordering::SeqCst), "the task failed once");
    let store = crate::util::checkpoint(dir.path());
    let first = store.counters("first").unwrap();
    assert_eq!(first.iter().map(|(_, n)| n).sum::<i64>(), 20, "{first:?}");
    assert_eq!(store.counters("second").unwrap(), first);
}
