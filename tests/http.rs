//! The HTTP endpoint of a running job on a real broker: metrics and the
//! JSON API reflect the committed batches, control requests change the
//! next batch (and are recorded in its batch record), pause stops intake
//! between batches, the access token guards control, bad requests change
//! nothing, and the UI renders the job's real batches in Chromium.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use sluice::checkpoint::CheckpointStore;
use sluice::kafka::Delivery;
use sluice::prelude::*;

use crate::util::job::{self, RunningJob, APP_ID, WAIT};
use crate::util::tansu::Tansu;

const TOKEN: &str = "s3cret-token-for-tests";

/// A plain HTTP client for the job's endpoint; 4xx answers are answers.
struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    fn new(addr: SocketAddr) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Self {
            base: format!("http://{addr}"),
            agent,
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        let mut response = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }

    fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// POSTs `body` as JSON with `token` as Bearer token, if any.
    fn post(&self, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self
            .agent
            .post(format!("{}{path}", self.base))
            .content_type("application/json");
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let mut response = request
            .send(body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("POST {path} answered non-JSON ({e}): {text}"));
        (status, value)
    }

    /// The value of the sample `name` (with its labels, as written in the
    /// exposition) in `/metrics`.
    fn metric(&self, sample: &str) -> Option<f64> {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        body.lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
            .map(|v| v.trim().parse().unwrap())
    }
}

/// A job counting the values of `topic` with an HTTP endpoint on a free
/// loopback port, guarded by [`TOKEN`] when `token` is set.
fn start_job(
    broker: &Tansu,
    topic: &str,
    dir: &Path,
    limits: RateLimits,
    token: Option<&Path>,
) -> (RunningJob, Client) {
    let mut builder = job::context(dir).http("127.0.0.1:0").rate_limits(limits);
    if let Some(file) = token {
        builder = builder.http_token_file(file);
    }
    let ctx = Arc::new(builder.build().unwrap());
    let source = job::source(&broker.bootstrap())
        .subscribe([topic])
        .build()
        .unwrap();
    ctx.kafka_stream(source)
        .unwrap()
        .values_utf8()
        .count_by_value()
        .save_counts(job::COUNTS)
        .unwrap();
    let running = RunningJob::start_shared(Arc::clone(&ctx));
    let addr = ctx
        .http_addr()
        .expect("a started job with .http(..) listens");
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    (running, Client::new(addr))
}

fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    path
}

#[test]
fn metrics_and_the_json_api_reflect_the_committed_batches() {
    let broker = Tansu::start();
    broker.create_topic("events", 2);
    job::produce_numbered(&broker.bootstrap(), "events", 2, 0..150);
    let dir = tempfile::tempdir().unwrap();
    let (mut running, http) = start_job(&broker, "events", dir.path(), RateLimits::new(), None);
    running.wait_for_records(300, "the 300 records produced");

    // Counters are published before the listeners run, so once the
    // listener saw the records, a scrape must show them.
    assert_eq!(http.metric("sluice_records_read_total"), Some(300.0));
    // One output: each record fetched from the broker once.
    assert_eq!(http.metric("sluice_records_fetched_total"), Some(300.0));
    let before = running.batches().len() as f64;
    let committed = http.metric("sluice_batches_committed_total").unwrap();
    let processed = http
        .metric("sluice_batch_processing_seconds_count")
        .unwrap();
    let after = running.batches().len() as f64;
    assert!(
        before <= committed && committed <= after + 1.0,
        "{before} <= {committed} <= {after} + 1 (a batch may commit between listener and scrape)"
    );
    assert!(processed >= before, "{processed} >= {before}");
    assert_eq!(http.metric("sluice_batches_failed_total"), Some(0.0));
    assert_eq!(http.metric("sluice_dead_letters_total"), Some(0.0));
    assert_eq!(
        http.metric(&format!("sluice_job_info{{app_id=\"{APP_ID}\"}}")),
        Some(1.0)
    );
    for p in 0..2 {
        let lag = format!("sluice_partition_lag_records{{topic=\"events\",partition=\"{p}\"}}");
        assert_eq!(http.metric(&lag), Some(0.0), "{lag}");
    }
    let (_, exposition) = http.get("/metrics");
    assert!(exposition.contains("# UNIT sluice_batch_processing_seconds seconds"));
    assert!(exposition.contains("# TYPE sluice_batch_planning_seconds histogram"));
    let planned = http.metric("sluice_batch_planning_seconds_count").unwrap();
    assert!(planned >= before, "{planned} >= {before}");
    for batch in running.batches() {
        assert!(
            batch.planning > Duration::ZERO && batch.planning <= batch.processing,
            "batch {}: planning {:?} is a part of processing {:?}",
            batch.info.id,
            batch.planning,
            batch.processing
        );
    }
    assert!(exposition.contains("# TYPE sluice_batch_scheduling_delay_seconds histogram"));
    assert!(exposition.contains("sluice_checkpoint_commit_seconds_bucket{le="));
    assert!(
        !exposition.contains("sluice_rate_limit_records_per_second{"),
        "no limit set"
    );

    let overview = http.json("/api/overview");
    assert_eq!(overview["app_id"], APP_ID);
    assert_eq!(overview["status"]["state"], "running");
    assert_eq!(overview["records_read"], 300);
    assert_eq!(overview["batch_interval_ms"], 100);
    assert_eq!(overview["rate_limits"]["max_rate"], Value::Null);

    let partitions = http.json("/api/partitions");
    let partitions = partitions["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 2, "{partitions:?}");
    for p in partitions {
        assert_eq!(
            (p["topic"].as_str(), p["latest"].as_i64()),
            (Some("events"), Some(150))
        );
        assert_eq!(
            (p["position"].as_i64(), p["lag"].as_i64()),
            (Some(150), Some(0))
        );
    }

    // The batches the API lists are the job's: same ids, same ranges.
    let listed = http.json("/api/batches?limit=1000");
    let listed = listed["batches"].as_array().unwrap();
    let with_records: Vec<BatchCompleted> = running
        .batches()
        .into_iter()
        .filter(|b| b.records > 0)
        .collect();
    assert!(!with_records.is_empty());
    for batch in &with_records {
        let id = batch.info.id;
        assert!(listed.iter().any(|b| b["id"] == id), "batch {id} listed");
        let view = http.json(&format!("/api/batches/{id}"));
        assert_eq!(view["records"], batch.records);
        // One output: the batch record says each record was fetched once.
        assert_eq!(view["records_fetched"], batch.records);
        let ranges = view["ranges"].as_array().unwrap();
        assert_eq!(ranges.len(), batch.info.ranges.len());
        for (range, json) in batch.info.ranges.iter().zip(ranges) {
            assert_eq!(json["from"], range.from);
            assert_eq!(json["until"], range.until);
        }
        assert!(view["processing_seconds"].as_f64().unwrap() > 0.0);
        let processing_rate = batch.records as f64 / batch.processing.as_secs_f64();
        let shown = view["processing_rate"].as_f64().unwrap();
        assert!((shown - processing_rate).abs() < 1e-6 * processing_rate);
    }
    // The input rate: records per second since the batch before started
    // (Structured Streaming's input rows per second); none for the first.
    let mut in_order = listed.clone();
    in_order.sort_by_key(|b| b["id"].as_u64());
    let start_ms = |b: &Value| {
        b["processed_at_ms"].as_i64().unwrap() - b["processing_us"].as_i64().unwrap() / 1000
    };
    assert!(in_order[0]["input_rate"].is_null(), "{:?}", in_order[0]);
    for pair in in_order.windows(2) {
        let gap_ms = start_ms(&pair[1]) - start_ms(&pair[0]);
        assert!(gap_ms > 0, "{pair:?}");
        let expected = pair[1]["records"].as_f64().unwrap() / (gap_ms as f64 / 1e3);
        let shown = pair[1]["input_rate"].as_f64().unwrap();
        assert!(
            (shown - expected).abs() <= 1e-9 * expected.max(1.0),
            "{shown} vs {expected}"
        );
    }
    let (status, body) = http.get("/api/batches/abc");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not a batch id"), "{body}");
    let (status, body) = http.get("/api/batches/99999999");
    assert_eq!(status, 404, "{body}");
    // Regression (newuser9): a batch not committed yet was "not among the
    // last 1000 batches of this run".
    assert!(
        body.contains("no batch 99999999: the last committed batch is "),
        "{body}"
    );
    let (status, _) = http.get("/no/such/page");
    assert_eq!(status, 404);
    running.stop();
}

#[test]
fn end_to_end_latency_runs_from_the_oldest_records_timestamp_to_the_commit() {
    let broker = Tansu::start();
    broker.create_topic("aged", 2);
    let now_ms = || {
        let since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH);
        since.unwrap().as_millis() as i64
    };
    let produced_ms = now_ms();
    let (hour_ago, minute_ago, second_ago) = (
        produced_ms - 3_600_000,
        produced_ms - 60_000,
        produced_ms - 1_000,
    );
    crate::util::kafka::produce_timed(
        &broker.bootstrap(),
        "aged",
        &[
            (0, hour_ago, "oldest".to_owned()),
            (0, minute_ago, "older".to_owned()),
            (1, second_ago, "newest".to_owned()),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let (mut running, http) = start_job(&broker, "aged", dir.path(), RateLimits::new(), None);
    running.wait_for_records(3, "the 3 records produced");
    let checked_ms = now_ms();

    // Whichever batches the records came in, their timestamps are the
    // produced ones, and the latency is counted from the oldest record.
    let batches: Vec<BatchCompleted> = running
        .batches()
        .into_iter()
        .filter(|b| b.records > 0)
        .collect();
    let min = batches.iter().filter_map(|b| b.min_timestamp).min();
    let max = batches.iter().filter_map(|b| b.max_timestamp).max();
    assert_eq!((min, max), (Some(hour_ago), Some(second_ago)));
    let oldest = batches
        .iter()
        .find(|b| b.min_timestamp == Some(hour_ago))
        .unwrap();
    let latency = oldest.max_latency().unwrap().as_millis() as i64;
    assert!(
        (3_600_000..=checked_ms - hour_ago).contains(&latency),
        "an hour, and at most the time since: {latency} ms"
    );
    assert!(oldest.min_latency().unwrap() <= oldest.max_latency().unwrap());
    for batch in running.batches().iter().filter(|b| b.records == 0) {
        assert_eq!((batch.min_timestamp, batch.max_latency()), (None, None));
    }

    // Published once per batch with records; the API and the page show it.
    let observed = http
        .metric("sluice_batch_end_to_end_latency_seconds_count")
        .unwrap();
    assert_eq!(observed, batches.len() as f64);
    let sum = http
        .metric("sluice_batch_end_to_end_latency_seconds_sum")
        .unwrap();
    assert!(sum >= 3_600.0, "{sum}");
    let committed = http.metric("sluice_last_commit_timestamp_seconds").unwrap();
    // Full precision: the gauge has it (whole ms would be up to 1 ms early).
    let scraped = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (produced_ms as f64 / 1e3..=scraped).contains(&committed),
        "last commit at {committed}, between {produced_ms} ms and {scraped} s"
    );
    let view = http.json(&format!("/api/batches/{}", oldest.info.id));
    assert_eq!(view["min_timestamp_ms"], hour_ago);
    assert_eq!(
        view["max_latency_seconds"].as_f64(),
        Some(oldest.max_latency().unwrap().as_secs_f64())
    );
    let (status, page) = http.get(&format!("/batches/{}", oldest.info.id));
    assert_eq!(status, 200);
    assert!(page.contains(&format!("({hour_ago} to ")), "{page}");
    let fetched = format!("<td class=l id=fetched>{}</td>", oldest.records_fetched);
    assert!(page.contains(&fetched), "{fetched} in {page}");
    running.stop();

    // The batch record keeps the timestamps (for `sluice batches`).
    let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
    let record = checkpoint
        .batches()
        .unwrap()
        .into_iter()
        .find(|r| r.id == oldest.info.id)
        .unwrap();
    assert_eq!(record.min_timestamp_ms, Some(hour_ago));
    assert_eq!(record.max_timestamp_ms, oldest.max_timestamp);
    let stored = record.max_latency_ms().unwrap();
    assert!(
        (3_600_000..=latency).contains(&stored),
        "{stored} <= {latency}"
    );
}

/// Also pins the at-least-once abort: it used to purge the records in
/// flight, whose failed delivery reports then failed the redo too (and
/// tansu's sqlite storage panicked on the producer's sequence gap).
#[test]
fn sink_metrics_time_each_commit_and_count_the_aborted_batches() {
    let broker = Tansu::start();
    broker.create_topic("events", 2);
    broker.create_topic("copies", 1);
    job::produce_numbered(&broker.bootstrap(), "events", 2, 0..50);
    let dir = tempfile::tempdir().unwrap();
    let ctx = Arc::new(
        job::context(dir.path())
            .http("127.0.0.1:0")
            .on_batch_failure(sluice::BatchFailurePolicy::Retry {
                backoff: Duration::from_millis(10),
                max_attempts: 3,
            })
            .build()
            .unwrap(),
    );
    let source = job::source(&broker.bootstrap())
        .subscribe(["events"])
        .build()
        .unwrap();
    let records = ctx.kafka_stream(source).unwrap();
    // tansu has no transactions: the at-least-once sink.
    let sink = KafkaSink::builder("copies-out", "copies")
        .brokers(broker.bootstrap())
        .delivery(Delivery::AtLeastOnce)
        .build()
        .unwrap();
    records.map(KafkaRecord::from).sink(sink).unwrap();
    // The first batch with records fails once, after the sink wrote.
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    records
        .count()
        .foreach_batch(move |count, _| {
            let records: i64 = count.into_iter().sum();
            if records > 0 && !failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return Err(std::io::Error::other(
                    "the first batch with records fails once",
                ));
            }
            Ok(())
        })
        .unwrap();
    let mut running = RunningJob::start_shared(Arc::clone(&ctx));
    let http = Client::new(ctx.http_addr().unwrap());
    running.wait_for_records(100, "the 100 records produced");

    let committed = running.batches().len() as f64;
    let commits = http
        .metric("sluice_sink_commit_seconds_count{sink=\"copies-out\"}")
        .expect("the sink's commit histogram");
    assert!(
        commits >= committed,
        "{commits} sink commits for {committed} committed batches"
    );
    assert_eq!(
        http.metric("sluice_sink_aborts_total{sink=\"copies-out\"}"),
        Some(1.0),
        "the failed attempt's output was aborted once"
    );
    assert_eq!(http.metric("sluice_batches_failed_total"), Some(1.0));
    running.stop();
}

#[test]
fn state_size_metrics_follow_a_stateful_operators_keys() {
    let broker = Tansu::start();
    broker.create_topic("users", 2);
    let values = job::produce_numbered(&broker.bootstrap(), "users", 2, 0..100);
    let dir = tempfile::tempdir().unwrap();
    let ctx = Arc::new(
        job::context(dir.path())
            .http("127.0.0.1:0")
            .build()
            .unwrap(),
    );
    let source = job::source(&broker.bootstrap())
        .subscribe(["users"])
        .build()
        .unwrap();
    ctx.kafka_stream(source)
        .unwrap()
        .values_utf8()
        .map(|user| (user, ()))
        .map_with_state(
            "visits",
            StateSpec::function(|_: &String, _: Option<()>, visits: &mut State<u64>| {
                visits.update(visits.get().copied().unwrap_or(0) + 1);
            }),
        )
        .foreach_batch(|_, _| Ok::<_, std::io::Error>(()))
        .unwrap();
    let mut running = RunningJob::start_shared(Arc::clone(&ctx));
    let http = Client::new(ctx.http_addr().unwrap());
    running.wait_for_records(200, "the 200 records produced");

    // RocksDB's estimate counts the 200 keys plus the operator's own
    // entries (a marker per key partition).
    let keys = http.metric("sluice_state_keys{state=\"visits\"}").unwrap();
    assert!(
        (values.len() as f64..=values.len() as f64 + 16.0).contains(&keys),
        "{keys} keys"
    );
    let bytes = http.metric("sluice_state_bytes{state=\"visits\"}").unwrap();
    assert!(bytes > 0.0, "{bytes} bytes");
    let (_, exposition) = http.get("/metrics");
    assert!(
        exposition.contains("# UNIT sluice_state_bytes bytes"),
        "{exposition}"
    );
    running.stop();
}

#[test]
fn control_changes_the_next_batch_and_pause_stops_intake_between_batches() {
    let broker = Tansu::start();
    broker.create_topic("backlog", 2);
    // 40 batches' worth at 100 records per partition and batch.
    job::produce_numbered(&broker.bootstrap(), "backlog", 2, 0..4000);
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path());
    let ckpt = dir.path().join("ckpt");
    let limits = RateLimits::new().max_rate_per_partition(1000.0);
    let (mut running, http) = start_job(&broker, "backlog", &ckpt, limits, Some(&token));
    running.wait_for("a first batch with records", |p| {
        (p.records > 0).then_some(())
    });
    assert_eq!(
        http.metric("sluice_rate_limit_records_per_second{reason=\"max_rate_per_partition\"}"),
        Some(1000.0)
    );

    // Refused requests change nothing.
    let refused = [
        (
            r#"{"max_rate_per_partition": 50}"#,
            None,
            401,
            "access token",
        ),
        (
            r#"{"max_rate_per_partition": 50}"#,
            Some("wrong"),
            403,
            "wrong access token",
        ),
        (
            r#"{"max_rate_per_partition": -5}"#,
            Some(TOKEN),
            400,
            "max_rate_per_partition",
        ),
        (r#"{"max_rate": "fast"}"#, Some(TOKEN), 400, "invalid type"),
        (
            r#"{"maxrate": 10}"#,
            Some(TOKEN),
            400,
            "unknown field `maxrate`",
        ),
        (r#"{}"#, Some(TOKEN), 400, "nothing to change"),
        ("max_rate=10", Some(TOKEN), 400, "JSON"),
    ];
    for (body, token, status, message) in refused {
        let (got, answer) = http.post("/api/control/rate", body, token);
        assert_eq!(got, status, "{body} with {token:?}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(message), "{body}: {error}");
    }
    let (status, _) = http.post("/api/control/pause", "", None);
    assert_eq!(status, 401, "pause without the token");
    let overview = http.json("/api/overview");
    assert_eq!(overview["rate_limits"]["max_rate_per_partition"], 1000.0);
    assert_eq!(overview["paused"], false);

    // Reads never need the token.
    assert_eq!(http.get("/").0, 200);
    // Regression: a wrong method got 405 with an empty body, not the
    // documented JSON error; arrays were taken as the fields in order.
    let (status, body) = http.get("/api/control/pause");
    assert_eq!(status, 405, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert!(answer["error"].as_str().unwrap().contains("POST"), "{body}");
    // A control form's address opened in a browser gets a page, not JSON.
    let (status, body) = http.get("/control/pause");
    assert_eq!(status, 405, "{body}");
    assert_eq!(http.get("/control/bogus").0, 404);
    assert!(
        body.contains("<html") && body.contains("overview"),
        "{body}"
    );
    let (status, answer) = http.post("/api/control/rate", "[1]", Some(TOKEN));
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        http.json("/api/overview")["rate_limits"]["max_rate"],
        Value::Null
    );

    let (status, answer) = http.post(
        "/api/control/rate",
        r#"{"max_rate_per_partition": 400, "backpressure": false}"#,
        Some(TOKEN),
    );
    assert_eq!(status, 200, "{answer}");
    let change = "rate max_rate_per_partition=400/s backpressure=off";
    assert_eq!(answer["accepted"], change);
    let changed = running.wait_for("a batch under the new limit", |p| {
        p.batches
            .iter()
            .find(|b| {
                b.info
                    .rate_limit
                    .is_some_and(|l| l.records_per_second == 400.0)
            })
            .map(|b| b.info.id)
    });
    let records = job::open_checkpoint(&ckpt, APP_ID).batches().unwrap();
    let record = |id: u64| records.iter().find(|r| r.id == id).unwrap();
    let first = record(changed);
    assert_eq!(
        first.rate_limit.as_deref(),
        Some("max rate per partition 400/s")
    );
    assert_eq!(
        first
            .control
            .iter()
            .map(|c| c.change.as_str())
            .collect::<Vec<_>>(),
        [change],
        "the change is recorded in the first batch it applies to"
    );
    assert_eq!(
        record(changed - 1).rate_limit.as_deref(),
        Some("max rate per partition 1000/s"),
        "the batch before ran under the old limit"
    );
    for range in &first.ranges {
        assert!(
            range.until - range.from <= 40,
            "{range:?} within 400/s × 100 ms"
        );
    }

    // Pause: the batch in flight finishes, then no batch reads anything.
    let (status, answer) = http.post("/api/control/pause", "", Some(TOKEN));
    assert_eq!(
        (status, &answer["paused"]),
        (200, &Value::Bool(true)),
        "{answer}"
    );
    job::poll(
        "the paused status",
        WAIT,
        || (http.json("/api/overview")["status"]["state"] == "paused").then_some(()),
        || http.json("/api/overview").to_string(),
    );
    assert_eq!(http.metric("sluice_paused"), Some(1.0));
    let read_when_paused = running.wait_for("", |p| Some(p.records));
    let batches_when_paused = running.batches().len();
    // A fixed window is the claim itself here: 10 batch intervals pass and
    // nothing is read, with records waiting in the topic.
    std::thread::sleep(job::BATCH_INTERVAL * 10);
    assert_eq!(
        running.batches().len(),
        batches_when_paused,
        "no batch while paused"
    );
    assert_eq!(running.wait_for("", |p| Some(p.records)), read_when_paused);
    assert!(read_when_paused < 8000, "records were left to read");
    // Regression: the lag figures froze while paused, at their value of the
    // last batch. Records produced during the pause show as lag.
    job::produce_numbered(&broker.bootstrap(), "backlog", 2, 4000..4200);
    let lag = |partition: i32| {
        http.metric(&format!(
            "sluice_partition_lag_records{{topic=\"backlog\",partition=\"{partition}\"}}"
        ))
    };
    let expected = 8400 - read_when_paused as i64;
    job::poll(
        "the lag of the records produced during the pause",
        WAIT,
        || (lag(0).zip(lag(1)).map(|(a, b)| (a + b) as i64) == Some(expected)).then_some(()),
        || format!("{:?} {:?}, expected {expected} in all", lag(0), lag(1)),
    );
    let partitions = http.json("/api/partitions");
    let api_lag: i64 = partitions["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["lag"].as_i64().unwrap())
        .sum();
    assert_eq!(api_lag, expected, "{partitions}");
    assert_eq!(running.batches().len(), batches_when_paused, "still paused");

    let (status, _) = http.post("/api/control/resume", "", Some(TOKEN));
    assert_eq!(status, 200);
    running.wait_for_records(8400, "every record, after the resume");
    let records = job::open_checkpoint(&ckpt, APP_ID).batches().unwrap();
    let resumed = records
        .iter()
        .find(|r| r.control.iter().any(|c| c.change == "resume"))
        .expect("a batch record holds the resume");
    assert_eq!(
        resumed
            .control
            .iter()
            .map(|c| c.change.as_str())
            .collect::<Vec<_>>(),
        ["pause", "resume"]
    );
    assert!(resumed.records > 0);
    assert_eq!(http.metric("sluice_paused"), Some(0.0));
    assert_eq!(http.metric("sluice_records_read_total"), Some(8400.0));
    running.stop();
}

#[test]
fn an_endpoint_beyond_loopback_needs_an_access_token() {
    let dir = tempfile::tempdir().unwrap();
    std::env::remove_var("SLUICE_HTTP_TOKEN");
    let error = job::context(dir.path())
        .http("0.0.0.0:0")
        .build()
        .unwrap_err()
        .to_string();
    assert!(error.contains("access token"), "{error}");
    let ctx = job::context(&dir.path().join("ckpt"))
        .http("0.0.0.0:0")
        .http_token_file(token_file(dir.path()))
        .build();
    assert!(ctx.is_ok(), "{:?}", ctx.err());
    drop(ctx);
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let error = job::context(dir.path())
        .http("127.0.0.1:0")
        .http_token_file(&empty)
        .build()
        .unwrap_err()
        .to_string();
    assert!(error.contains("empty"), "{error}");
    let error = job::context(dir.path())
        .http("no-port")
        .build()
        .unwrap_err()
        .to_string();
    assert!(error.contains("host:port"), "{error}");
}

/// Chromium, if installed (`make setup` installs Debian's `chromium`).
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        })
}

/// Runs headless Chromium on `url` with `args` and returns its stdout.
fn headless(chromium: &Path, profile: &Path, args: &[&str], url: &str) -> String {
    let output = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("running chromium");
    assert!(
        output.status.success(),
        "chromium {args:?} {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_web_ui_shows_the_jobs_real_batches_in_a_browser() {
    let Some(chromium) = chromium() else {
        eprintln!("SKIPPED: no chromium on PATH; `make setup` installs Debian's chromium");
        return;
    };
    let broker = Tansu::start();
    broker.create_topic("clicks", 2);
    job::produce_numbered(&broker.bootstrap(), "clicks", 2, 0..500);
    let dir = tempfile::tempdir().unwrap();
    let limits = RateLimits::new().max_rate_per_partition(2000.0);
    let (mut running, http) = start_job(&broker, "clicks", dir.path(), limits, None);
    running.wait_for_records(1000, "the 1000 records produced");
    let batches: Vec<BatchCompleted> = running
        .batches()
        .into_iter()
        .filter(|b| b.records > 0)
        .collect();
    assert!(batches.len() >= 2, "the rate limit splits the backlog");

    let profile = tempfile::tempdir().unwrap();
    let dom = headless(
        &chromium,
        profile.path(),
        &["--dump-dom"],
        &format!("{}/", http.base),
    );
    for metric in [
        "input-rate",
        "processing",
        "scheduling-delay",
        "total-delay",
        "max-latency",
    ] {
        assert!(
            dom.contains(&format!("<svg class=\"timeline\" data-metric=\"{metric}\""))
                && dom.contains(&format!(
                    "<svg class=\"histogram\" data-metric=\"{metric}\""
                )),
            "a timeline and a distribution of {metric}"
        );
    }
    for batch in &batches {
        let id = batch.info.id;
        assert!(
            dom.contains(&format!("<circle data-batch=\"{id}\"")),
            "batch {id} charted"
        );
        assert!(
            dom.contains(&format!("<tr data-batch=\"{id}\">")),
            "batch {id} in the table"
        );
    }
    assert!(dom.contains("max rate per partition 2000/s"));
    assert!(
        dom.contains("id=\"status\" class=\"running\""),
        "running status"
    );

    // The drill-down of a real batch shows its ranges.
    let batch = &batches[0];
    let page = headless(
        &chromium,
        profile.path(),
        &["--dump-dom"],
        &format!("{}/batches/{}", http.base, batch.info.id),
    );
    assert!(page.contains(&format!("<h1>Batch {}</h1>", batch.info.id)));
    for range in &batch.info.ranges {
        let row = format!(
            "<tr class=\"range\"><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td>",
            range.topic, range.partition, range.from, range.until
        );
        assert!(page.contains(&row), "{row} in {page}");
    }

    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui");
    std::fs::create_dir_all(&artifacts).unwrap();
    for (name, url) in [
        ("overview.png", format!("{}/", http.base)),
        (
            "batch.png",
            format!("{}/batches/{}", http.base, batch.info.id),
        ),
    ] {
        let file = artifacts.join(name);
        let _ = std::fs::remove_file(&file);
        headless(
            &chromium,
            profile.path(),
            &[
                &format!("--screenshot={}", file.display()),
                "--window-size=1280,2200",
                "--hide-scrollbars",
            ],
            &url,
        );
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "a screenshot of {url} in {}", file.display());
        eprintln!("screenshot of {url}: {}", file.display());
    }
    running.stop();
}

/// Regression: a pause lasted for the process only: a crash or a redeploy
/// of a job paused for a downstream outage resumed its intake. A pause is
/// now kept in the checkpoint until a resume.
#[test]
fn a_pause_lasts_across_a_restart_until_a_resume() {
    let broker = Tansu::start();
    broker.create_topic("held", 2);
    job::produce_numbered(&broker.bootstrap(), "held", 2, 0..500);
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let limits = || RateLimits::new().max_rate_per_partition(1000.0);
    let (mut running, http) = start_job(&broker, "held", &ckpt, limits(), None);
    running.wait_for("a first batch with records", |p| {
        (p.records > 0).then_some(())
    });
    let (status, answer) = http.post("/api/control/pause", "", None);
    assert_eq!(status, 200, "{answer}");
    job::poll(
        "the paused status",
        WAIT,
        || (http.json("/api/overview")["status"]["state"] == "paused").then_some(()),
        || http.json("/api/overview").to_string(),
    );
    let read_before = running.stop().records;
    assert!(read_before < 1000, "records were left to read");
    assert!(job::open_checkpoint(&ckpt, APP_ID)
        .paused_since()
        .unwrap()
        .is_some());

    // Restarted, it starts paused and reads nothing.
    let (running, http) = start_job(&broker, "held", &ckpt, limits(), None);
    let overview = http.json("/api/overview");
    assert_eq!(overview["status"]["state"], "paused", "{overview}");
    assert_eq!(overview["paused"], true, "{overview}");
    // A fixed window is the claim itself: 10 intervals pass, no batch runs.
    std::thread::sleep(job::BATCH_INTERVAL * 10);
    assert!(running.batches().is_empty(), "a batch ran while paused");

    // Resumed, it reads the rest; the next restart is not paused.
    let (status, _) = http.post("/api/control/resume", "", None);
    assert_eq!(status, 200);
    let mut running = running;
    running.wait_for_records(1000 - read_before, "the rest, after the resume");
    running.stop();
    // The batch after the resume records the pause of the run before.
    let records = job::open_checkpoint(&ckpt, APP_ID).batches().unwrap();
    let resumed = records
        .iter()
        .find(|r| r.control.iter().any(|c| c.change == "resume"))
        .expect("a batch record holds the resume");
    let changes: Vec<&str> = resumed.control.iter().map(|c| c.change.as_str()).collect();
    assert_eq!(
        changes,
        ["pause (kept in the checkpoint across a restart)", "resume"]
    );
    assert_eq!(
        job::open_checkpoint(&ckpt, APP_ID).paused_since().unwrap(),
        None
    );
}
