//! The source's configuration: [`KafkaSource`] and its builder.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::config::NativeClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;
use regex::Regex;
use sluice_core::{DataLossPolicy, TopicPartition};

use crate::security::check_security;
use crate::strategy::invalid_topic_name;
use crate::{ConsumerStrategy, Error, Result, StartOffsets};

/// Defaults that suit how sluice reads, below the user's own settings.
///
/// A partition's consumer keeps fetching between batches and while its
/// task waits for a worker. Once its queue is full, librdkafka's default
/// pauses that partition's fetching for a whole second
/// (`fetch.queue.backoff.ms=1000`), which would stall the next read.
///
/// librdkafka sizes its prefetch queue for one consumer of many partitions
/// (64 MiB); sluice has a consumer per partition, so that would be 64 MiB
/// per partition. 8 MiB keeps reads fed (measured no slower in the
/// throughput bench) at an eighth of the memory.
const DEFAULTS: [(&str, &str); 2] = [
    ("fetch.queue.backoff.ms", "10"),
    ("queued.max.messages.kbytes", "8192"),
];

/// Settings every consumer of the crate gets, whatever the user set; the
/// builder refuses contradicting values.
const FORCED: [(&str, &str); 4] = [
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("enable.partition.eof", "true"),
    ("auto.offset.reset", "error"),
];

/// What a fetch response needs beyond `fetch.max.bytes` for its framing.
const FRAMING_BYTES: i64 = 512;

/// A validated Kafka Direct source: where the brokers are, which partitions
/// to read, and what to do on first start and on data loss.
///
/// Built with [`KafkaSource::builder`]; a job reads it through
/// `StreamingContext::kafka_stream`.
#[derive(Debug, Clone)]
pub struct KafkaSource {
    brokers: String,
    group_id: Option<String>,
    strategy: ConsumerStrategy,
    settings: BTreeMap<String, String>,
    start_from: StartOffsets,
    discovery_interval: Duration,
    on_data_loss: DataLossPolicy,
    poll_timeout: Duration,
    metadata_timeout: Duration,
    mirror_offsets: bool,
}

impl KafkaSource {
    /// Starts configuring a source.
    pub fn builder() -> KafkaSourceBuilder {
        KafkaSourceBuilder::new()
    }

    /// Uses `id` as the consumer group id unless one was configured; the
    /// runtime passes the application id.
    #[doc(hidden)]
    pub fn with_default_group_id(mut self, id: impl Into<String>) -> Self {
        if self.group_id.is_none() {
            self.group_id = Some(id.into());
        }
        self
    }

    /// Bootstrap brokers, `host:port` separated by commas.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// The consumer `group.id`, if configured or defaulted.
    pub fn group_id(&self) -> Option<&str> {
        self.group_id.as_deref()
    }

    /// Which partitions are read.
    pub fn strategy(&self) -> &ConsumerStrategy {
        &self.strategy
    }

    /// librdkafka settings passed through to every consumer (without
    /// `bootstrap.servers`, `group.id` and the settings sluice forces).
    pub fn settings(&self) -> &BTreeMap<String, String> {
        &self.settings
    }

    /// Where partitions start when the checkpoint holds no offsets.
    pub fn start_from(&self) -> &StartOffsets {
        &self.start_from
    }

    /// How often partitions are discovered; zero means every batch.
    pub fn discovery_interval(&self) -> Duration {
        self.discovery_interval
    }

    /// What to do when stored offsets no longer exist in Kafka.
    pub fn on_data_loss(&self) -> DataLossPolicy {
        self.on_data_loss
    }

    /// How long one read waits for its records before failing.
    pub fn poll_timeout(&self) -> Duration {
        self.poll_timeout
    }

    /// Whether committed offsets are mirrored to the consumer group.
    pub fn mirrors_offsets(&self) -> bool {
        self.mirror_offsets
    }

    /// How long metadata and offset requests may take.
    pub fn metadata_timeout(&self) -> Duration {
        self.metadata_timeout
    }

    /// The client configuration of every consumer the crate creates.
    pub(crate) fn client_config(&self, group_id: Option<&str>) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config.set("client.id", "sluice");
        for (key, value) in DEFAULTS {
            config.set(key, value);
        }
        for (key, value) in &self.settings {
            config.set(key, value);
        }
        for (key, value) in FORCED {
            config.set(key, value);
        }
        if let Some(group_id) = group_id {
            config.set("group.id", group_id);
        }
        config
    }
}

/// Builds a [`KafkaSource`]; [`build`](Self::build) validates everything.
///
/// ```
/// use std::time::Duration;
/// use sluice_core::DataLossPolicy;
/// use sluice_kafka::{KafkaSource, StartOffsets};
///
/// let source = KafkaSource::builder()
///     .brokers("localhost:9092")
///     .subscribe_pattern("^events-.*")
///     .start_from(StartOffsets::Latest)
///     .discovery_interval(Duration::from_secs(30))
///     .on_data_loss(DataLossPolicy::ResetToEarliest)
///     .set("isolation.level", "read_committed")
///     .build()?;
/// assert_eq!(source.group_id(), None); // the runtime defaults it to the app id
///
/// let err = KafkaSource::builder()
///     .brokers("localhost:9092")
///     .subscribe(["events"])
///     .set("enable.auto.commit", "true")
///     .build()
///     .unwrap_err();
/// assert!(err.to_string().contains("auto-commit"));
/// # Ok::<(), sluice_kafka::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct KafkaSourceBuilder {
    brokers: Option<String>,
    group_id: Option<String>,
    strategies: Vec<Draft>,
    settings: BTreeMap<String, String>,
    start_from: StartOffsets,
    discovery_interval: Duration,
    on_data_loss: DataLossPolicy,
    poll_timeout: Duration,
    metadata_timeout: Duration,
    mirror_offsets: bool,
}

/// A strategy as given, validated by `build`.
#[derive(Debug, Clone)]
enum Draft {
    Subscribe(Vec<String>),
    Pattern(String),
    Assign(Vec<(TopicPartition, i64)>),
}

impl Default for KafkaSourceBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl KafkaSourceBuilder {
    /// A builder with every default; brokers and one strategy must be set.
    pub fn new() -> Self {
        Self {
            brokers: None,
            group_id: None,
            strategies: Vec::new(),
            settings: BTreeMap::new(),
            start_from: StartOffsets::Earliest,
            discovery_interval: Duration::from_secs(1),
            on_data_loss: DataLossPolicy::Fail,
            poll_timeout: Duration::from_secs(30),
            metadata_timeout: Duration::from_secs(10),
            mirror_offsets: false,
        }
    }

    /// Bootstrap brokers, `host:port` separated by commas. Required (or
    /// `bootstrap.servers` through [`set`](Self::set)).
    pub fn brokers(mut self, brokers: impl Into<String>) -> Self {
        self.brokers = Some(brokers.into());
        self
    }

    /// The consumer `group.id`. Default: none, and the runtime sets the
    /// application id. sluice never joins the group to read (it assigns
    /// partitions itself); the id names the consumers to the brokers and is
    /// where offsets are mirrored for lag tools.
    pub fn group_id(mut self, id: impl Into<String>) -> Self {
        self.group_id = Some(id.into());
        self
    }

    /// Reads every partition of `topics`, including partitions added later.
    pub fn subscribe<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let topics = topics.into_iter().map(Into::into).collect();
        self.strategies.push(Draft::Subscribe(topics));
        self
    }

    /// Reads every partition of every topic matching `pattern` (a `regex`
    /// crate expression, matched as written: anchor it with `^`/`$` for a
    /// whole-name match), including topics created later.
    pub fn subscribe_pattern(mut self, pattern: impl Into<String>) -> Self {
        self.strategies.push(Draft::Pattern(pattern.into()));
        self
    }

    /// Reads exactly `partitions`, starting each from its offset when the
    /// checkpoint holds none.
    pub fn assign<I>(mut self, partitions: I) -> Self
    where
        I: IntoIterator<Item = (TopicPartition, i64)>,
    {
        self.strategies
            .push(Draft::Assign(partitions.into_iter().collect()));
        self
    }

    /// Passes a librdkafka client setting through untouched. Settings that
    /// would let Kafka own offsets (`enable.auto.commit=true`, ...), and
    /// size limits librdkafka would refuse only at start
    /// (`receive.message.max.bytes` below `fetch.max.bytes` + 512, ...),
    /// are refused by [`build`](Self::build).
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.insert(key.into(), value.into());
        self
    }

    /// Where partitions start on the first start. Default:
    /// [`StartOffsets::Earliest`].
    pub fn start_from(mut self, start: StartOffsets) -> Self {
        self.start_from = start;
        self
    }

    /// How often partitions and topics are discovered: a batch asks the
    /// broker for metadata again once this long has passed since it last
    /// did. Default: 1 second. Zero asks every batch, which costs every
    /// batch a metadata round trip.
    pub fn discovery_interval(mut self, interval: Duration) -> Self {
        self.discovery_interval = interval;
        self
    }

    /// What to do when stored offsets no longer exist. Default:
    /// [`DataLossPolicy::Fail`].
    pub fn on_data_loss(mut self, policy: DataLossPolicy) -> Self {
        self.on_data_loss = policy;
        self
    }

    /// How long one read waits for its records before failing. A task
    /// reads its range a few thousand offsets at a time, so this bounds a
    /// stall, not the whole range. Default: 30 s.
    pub fn poll_timeout(mut self, timeout: Duration) -> Self {
        self.poll_timeout = timeout;
        self
    }

    /// After every batch commits to the checkpoint, also commit its next
    /// offsets to the consumer group (`group.id`, by default the app id),
    /// so standard lag tools (`kafka-consumer-groups.sh --describe`, Burrow,
    /// exporters) see the job's progress. Asynchronous and best effort; on
    /// start the checkpoint stays the source of truth and the group's
    /// offsets are never read. Default: off.
    pub fn mirror_offsets_to_group(mut self, enabled: bool) -> Self {
        self.mirror_offsets = enabled;
        self
    }

    /// How long a metadata or offset request may take. Default: 10 s.
    pub fn metadata_timeout(mut self, timeout: Duration) -> Self {
        self.metadata_timeout = timeout;
        self
    }

    /// Validates the configuration.
    ///
    /// Fails with [`Error::Config`] naming the setting at fault.
    pub fn build(self) -> Result<KafkaSource> {
        let mut settings = self.settings;
        if let Some(key) = settings.keys().find(|k| k.trim().is_empty()) {
            return Err(Error::config(key.clone(), "a setting name cannot be empty"));
        }
        let brokers = take_brokers(self.brokers, &mut settings)?;
        let group_id = take_group_id(self.group_id, &mut settings)?;
        check_forced(&mut settings)?;
        let strategy = build_strategy(self.strategies)?;
        check_start(&self.start_from)?;
        if self.poll_timeout.is_zero() {
            return Err(Error::config(
                "poll_timeout",
                "must be positive: every non-empty read would time out",
            ));
        }
        if self.metadata_timeout.is_zero() {
            return Err(Error::config("metadata_timeout", "must be positive"));
        }
        let source = KafkaSource {
            brokers,
            group_id,
            strategy,
            settings,
            start_from: self.start_from,
            discovery_interval: self.discovery_interval,
            on_data_loss: self.on_data_loss,
            poll_timeout: self.poll_timeout,
            metadata_timeout: self.metadata_timeout,
            mirror_offsets: self.mirror_offsets,
        };
        // librdkafka knows its settings best: unknown names and bad values
        // fail here, before anything connects, and the checks below read
        // the values as librdkafka parsed them.
        let native = source
            .client_config(source.group_id.as_deref())
            .create_native_config()
            .map_err(client_setting_error)?;
        check_security(&native, &source.settings)?;
        check_fetch_sizes(&FetchSizes::read(&native, &source.settings)?)
            .map_err(|e| with_readings(e, &native, &source.settings))?;
        Ok(source)
    }
}

fn take_brokers(
    brokers: Option<String>,
    settings: &mut BTreeMap<String, String>,
) -> Result<String> {
    let mut given = brokers
        .map(|b| ("brokers", b))
        .into_iter()
        .collect::<Vec<_>>();
    for key in ["bootstrap.servers", "metadata.broker.list"] {
        if let Some(value) = settings.remove(key) {
            given.push((key, value));
        }
    }
    let Some((setting, brokers)) = given.first().cloned() else {
        return Err(Error::config(
            "brokers",
            "no brokers: call .brokers(\"host:port,...\")",
        ));
    };
    if let Some((other, _)) = given.iter().find(|(_, b)| *b != brokers) {
        return Err(Error::config(
            *other,
            format!("contradicts `{setting}`: give the brokers once"),
        ));
    }
    let list: Vec<&str> = brokers.split(',').map(str::trim).collect();
    if list.iter().any(|b| b.is_empty()) {
        return Err(Error::config(
            setting,
            format!("'{brokers}' is not a comma-separated list of host:port"),
        ));
    }
    Ok(list.join(","))
}

fn take_group_id(
    group_id: Option<String>,
    settings: &mut BTreeMap<String, String>,
) -> Result<Option<String>> {
    let from_settings = settings.remove("group.id");
    let group_id = match (group_id, from_settings) {
        (Some(a), Some(b)) if a != b => {
            return Err(Error::config(
                "group.id",
                format!("set to '{b}' but .group_id(\"{a}\") says otherwise"),
            ))
        }
        (a, b) => a.or(b),
    };
    if group_id.as_deref().is_some_and(|g| g.trim().is_empty()) {
        return Err(Error::config("group_id", "cannot be empty"));
    }
    Ok(group_id)
}

/// Maps librdkafka's refusal of a setting to an error naming it.
fn client_setting_error(error: KafkaError) -> Error {
    match error {
        KafkaError::ClientConfig(_, reason, key, _) => {
            let hint = match key.as_str() {
                _ if reason.contains("at build time") => {
                    "; librdkafka was built without the system library it needs: \
                     install what `scripts/setup.sh --system` installs, then rebuild \
                     it (`cargo clean -p curl-sys -p rdkafka-sys`)"
                }
                "security.protocol" => " (plaintext, ssl, sasl_plaintext or sasl_ssl)",
                _ => "",
            };
            Error::config(key, format!("{reason}{hint}"))
        }
        other => Error::config("client settings", other.to_string()),
    }
}

/// `value` of `key` as librdkafka reads it: an integer in decimal, a bool
/// as `true`/`false`, a named value by its first name. librdkafka reads
/// integers with `strtol(.., 0)`, so `0x2000` is 8192, `010` is 8 and
/// `1000kb` is 1000; comparing what it read, never the text, keeps sluice's
/// checks in step with what the consumers get.
fn librdkafka_reads(key: &str, value: &str) -> Result<String> {
    let mut config = ClientConfig::new();
    config.set(key, value);
    let native = config
        .create_native_config()
        .map_err(client_setting_error)?;
    // A `topic.` prefix addresses the default topic configuration; reading
    // back takes the property's own name.
    let name = key.strip_prefix("topic.").unwrap_or(key);
    native.get(name).map_err(client_setting_error)
}

/// Refuses settings that contradict [`FORCED`]; drops the agreeing ones.
/// `auto.offset.reset` is a topic property, which librdkafka also takes as
/// `topic.auto.offset.reset`; the others are global, and their `topic.`
/// forms name other (legacy) properties or none.
fn check_forced(settings: &mut BTreeMap<String, String>) -> Result<()> {
    for (key, forced) in FORCED {
        let topic_form = (key == "auto.offset.reset").then(|| format!("topic.{key}"));
        for name in std::iter::once(key.to_owned()).chain(topic_form) {
            let Some(value) = settings.remove(&name) else {
                continue;
            };
            if librdkafka_reads(&name, &value)? == librdkafka_reads(key, forced)? {
                continue;
            }
            let reason = match key {
                "enable.auto.commit" => {
                    "sluice stores offsets in its checkpoint; auto-commit would commit offsets \
                     of unprocessed records"
                }
                "enable.auto.offset.store" => {
                    "sluice stores offsets in its checkpoint; storing offsets in the client \
                     would mark unprocessed records as done"
                }
                "enable.partition.eof" => {
                    "readers need end-of-partition events to finish ranges that end on a \
                     transaction marker or a compacted gap"
                }
                _ => {
                    "sluice never jumps silently: use .start_from(..) for the first start and \
                     .on_data_loss(..) for offsets deleted from the log"
                }
            };
            return Err(Error::config(
                name,
                format!("'{value}' is not allowed ({reason})"),
            ));
        }
    }
    Ok(())
}

/// The size limits [`check_fetch_sizes`] relates, as librdkafka parsed
/// them. `fetch` and `receive` are `None` when the user left them unset:
/// librdkafka then derives them instead of checking them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FetchSizes {
    message: i64,
    queued_kbytes: i64,
    fetch: Option<i64>,
    receive: Option<i64>,
}

impl FetchSizes {
    /// Reads the sizes from the consumers' native configuration; `settings`
    /// tells which ones the user set.
    fn read(native: &NativeClientConfig, settings: &BTreeMap<String, String>) -> Result<Self> {
        let int = |key: &str| -> Result<i64> {
            let value = native.get(key).map_err(client_setting_error)?;
            value.trim().parse().map_err(|_| {
                Error::config(
                    key,
                    format!("librdkafka reads it as '{value}', which is not an integer"),
                )
            })
        };
        let user_set = |key: &str| settings.contains_key(key).then(|| int(key)).transpose();
        Ok(Self {
            message: int("message.max.bytes")?,
            queued_kbytes: int("queued.max.messages.kbytes")?,
            fetch: user_set("fetch.max.bytes")?,
            receive: user_set("receive.message.max.bytes")?,
        })
    }
}

/// Adds to a size error how librdkafka read the sizes the user wrote
/// differently (`0x2000`, `1000kb`, ...), so the numbers it quotes make
/// sense.
fn with_readings(
    error: Error,
    native: &NativeClientConfig,
    settings: &BTreeMap<String, String>,
) -> Error {
    let Error::Config {
        setting,
        mut reason,
    } = error
    else {
        return error;
    };
    for key in SIZE_SETTINGS {
        let (Some(written), Ok(read)) = (settings.get(key), native.get(key)) else {
            continue;
        };
        if written.trim() != read {
            reason.push_str(&format!(
                "; librdkafka reads `{key}` = '{written}' as {read}"
            ));
        }
    }
    Error::Config { setting, reason }
}

/// The settings [`check_fetch_sizes`] relates.
const SIZE_SETTINGS: [&str; 4] = [
    "message.max.bytes",
    "queued.max.messages.kbytes",
    "fetch.max.bytes",
    "receive.message.max.bytes",
];

/// Refuses the size limits that librdkafka refuses only when a consumer
/// is created, at start, with its own rules: `fetch.max.bytes` below
/// `message.max.bytes`, and `receive.message.max.bytes` below
/// `fetch.max.bytes` + 512 (where an unset `fetch.max.bytes` is derived
/// from librdkafka's 50 MB default, `queued.max.messages.kbytes` and
/// `message.max.bytes`).
fn check_fetch_sizes(sizes: &FetchSizes) -> Result<()> {
    /// librdkafka's default `fetch.max.bytes`, the start of its derivation.
    const FETCH_MAX_BYTES: i64 = 50 * 1024 * 1024;
    let message = sizes.message;
    let fetch = match sizes.fetch {
        Some(fetch) if fetch < message => {
            return Err(Error::config(
                "fetch.max.bytes",
                format!(
                    "{fetch} is below `message.max.bytes` ({message}), which librdkafka refuses: \
                     raise it or lower `message.max.bytes`"
                ),
            ))
        }
        Some(fetch) => fetch,
        None => FETCH_MAX_BYTES
            .min(sizes.queued_kbytes.saturating_mul(1024))
            .max(message),
    };
    match sizes.receive {
        Some(receive) if receive < fetch.saturating_add(FRAMING_BYTES) => Err(Error::config(
            "receive.message.max.bytes",
            format!(
                "{receive} is below `fetch.max.bytes` + 512 ({}), which librdkafka refuses: \
                 lower `fetch.max.bytes` with it, and keep it above the largest record batch \
                 the topics hold, or that batch can never be read",
                fetch.saturating_add(FRAMING_BYTES)
            ),
        )),
        _ => Ok(()),
    }
}

fn build_strategy(drafts: Vec<Draft>) -> Result<ConsumerStrategy> {
    let mut drafts = drafts.into_iter();
    let (Some(draft), None) = (drafts.next(), drafts.next()) else {
        return Err(Error::config(
            "strategy",
            "call exactly one of .subscribe(..), .subscribe_pattern(..) or .assign(..), once",
        ));
    };
    match draft {
        Draft::Subscribe(topics) => {
            if topics.is_empty() {
                return Err(Error::config("subscribe", "the topic list is empty"));
            }
            let mut seen = BTreeSet::new();
            for topic in &topics {
                if let Some(why) = invalid_topic_name(topic) {
                    return Err(Error::config("subscribe", format!("'{topic}': {why}")));
                }
                seen.insert(topic.clone());
            }
            let mut unique = topics;
            unique.retain(|t| seen.remove(t));
            Ok(ConsumerStrategy::Subscribe(unique))
        }
        Draft::Pattern(pattern) => {
            Regex::new(&pattern)
                .map(ConsumerStrategy::Pattern)
                .map_err(|e| {
                    Error::config(
                        "subscribe_pattern",
                        format!("invalid regex '{pattern}': {e}"),
                    )
                })
        }
        Draft::Assign(partitions) => {
            if partitions.is_empty() {
                return Err(Error::config("assign", "the partition list is empty"));
            }
            let mut assigned = BTreeMap::new();
            for (tp, offset) in partitions {
                if let Some(why) = invalid_topic_name(&tp.topic) {
                    return Err(Error::config("assign", format!("'{}': {why}", tp.topic)));
                }
                if tp.partition < 0 || offset < 0 {
                    return Err(Error::config(
                        "assign",
                        format!("{tp} at offset {offset}: partitions and offsets are >= 0"),
                    ));
                }
                if assigned.insert(tp.clone(), offset).is_some() {
                    return Err(Error::config("assign", format!("{tp} is listed twice")));
                }
            }
            Ok(ConsumerStrategy::Assign(assigned))
        }
    }
}

fn check_start(start: &StartOffsets) -> Result<()> {
    match start {
        StartOffsets::Timestamp(ts) if *ts < 0 => Err(Error::config(
            "start_from",
            format!("timestamp {ts} is before the Unix epoch"),
        )),
        StartOffsets::Offsets(map) => match map.iter().find(|(_, o)| **o < 0) {
            Some((tp, o)) => Err(Error::config(
                "start_from",
                format!("offset {o} of {tp} is negative"),
            )),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn base() -> KafkaSourceBuilder {
        KafkaSource::builder().brokers("localhost:9092")
    }

    fn config_err(builder: KafkaSourceBuilder) -> (String, String) {
        match builder.build() {
            Err(Error::Config { setting, reason }) => (setting, reason),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let s = base().subscribe(["a", "b", "a"]).build().unwrap();
        assert!(matches!(s.strategy(), ConsumerStrategy::Subscribe(t) if t == &["a", "b"]));
        assert_eq!(s.start_from(), &StartOffsets::Earliest);
        assert_eq!(s.discovery_interval(), Duration::from_secs(1));
        assert_eq!(s.on_data_loss(), DataLossPolicy::Fail);
        assert_eq!(s.poll_timeout(), Duration::from_secs(30));
        assert_eq!(s.group_id(), None);
        assert_eq!(s.with_default_group_id("app").group_id(), Some("app"));
    }

    #[test]
    fn explicit_group_id_beats_the_default() {
        let s = base().subscribe(["a"]).group_id("mine").build().unwrap();
        assert_eq!(s.with_default_group_id("app").group_id(), Some("mine"));
        let s = base()
            .subscribe(["a"])
            .set("group.id", "g")
            .build()
            .unwrap();
        assert_eq!(s.group_id(), Some("g"));
    }

    #[test]
    fn auto_commit_is_refused() {
        let (setting, reason) =
            config_err(base().subscribe(["a"]).set("enable.auto.commit", "true"));
        assert_eq!(setting, "enable.auto.commit");
        assert!(
            reason.contains("sluice stores offsets in its checkpoint"),
            "{reason}"
        );
        assert!(reason.contains("auto-commit would commit offsets of unprocessed records"));
        // Agreeing values are accepted.
        base()
            .subscribe(["a"])
            .set("enable.auto.commit", "false")
            .build()
            .unwrap();
    }

    #[test]
    fn client_side_offset_store_and_offset_reset_are_refused() {
        let (setting, _) = config_err(base().subscribe(["a"]).set("enable.auto.offset.store", "1"));
        assert_eq!(setting, "enable.auto.offset.store");
        let (setting, reason) =
            config_err(base().subscribe(["a"]).set("auto.offset.reset", "earliest"));
        assert_eq!(setting, "auto.offset.reset");
        assert!(reason.contains("start_from"), "{reason}");
        let (setting, _) = config_err(base().subscribe(["a"]).set("enable.partition.eof", "false"));
        assert_eq!(setting, "enable.partition.eof");
    }

    #[test]
    fn exactly_one_strategy() {
        let (setting, reason) = config_err(base());
        assert_eq!(setting, "strategy");
        assert!(reason.contains("exactly one"), "{reason}");
        let (setting, _) = config_err(base().subscribe(["a"]).subscribe_pattern("b.*"));
        assert_eq!(setting, "strategy");
    }

    #[test]
    fn bad_regex_and_empty_lists() {
        let (setting, reason) = config_err(base().subscribe_pattern("events-("));
        assert_eq!(setting, "subscribe_pattern");
        assert!(reason.contains("events-("), "{reason}");
        let (setting, _) = config_err(base().subscribe(Vec::<String>::new()));
        assert_eq!(setting, "subscribe");
        let (setting, _) = config_err(base().subscribe(["bad topic"]));
        assert_eq!(setting, "subscribe");
        let (setting, _) = config_err(base().assign([]));
        assert_eq!(setting, "assign");
        let tp = TopicPartition::new("a", 0);
        let (_, reason) = config_err(base().assign([(tp.clone(), 1), (tp, 2)]));
        assert!(reason.contains("twice"), "{reason}");
    }

    #[test]
    fn brokers_are_required_and_given_once() {
        let (setting, _) = config_err(KafkaSource::builder().subscribe(["a"]));
        assert_eq!(setting, "brokers");
        let (setting, _) = config_err(KafkaSource::builder().brokers("  ").subscribe(["a"]));
        assert_eq!(setting, "brokers");
        let s = KafkaSource::builder()
            .set("bootstrap.servers", "h1:1, h2:2")
            .subscribe(["a"])
            .build()
            .unwrap();
        assert_eq!(s.brokers(), "h1:1,h2:2");
        let (setting, _) = config_err(base().set("bootstrap.servers", "other:1").subscribe(["a"]));
        assert_eq!(setting, "bootstrap.servers");
    }

    #[test]
    fn contradicting_group_ids_are_refused() {
        let (setting, reason) =
            config_err(base().subscribe(["a"]).group_id("x").set("group.id", "y"));
        assert_eq!(setting, "group.id");
        assert!(reason.contains('x') && reason.contains('y'), "{reason}");
    }

    #[test]
    fn librdkafka_checks_unknown_settings() {
        let (setting, _) = config_err(base().subscribe(["a"]).set("no.such.setting", "1"));
        assert_eq!(setting, "no.such.setting");
        base()
            .subscribe(["a"])
            .set("isolation.level", "read_committed")
            .build()
            .unwrap();
    }

    #[test]
    fn start_offsets_and_timeouts_are_checked() {
        let (setting, _) = config_err(
            base()
                .subscribe(["a"])
                .start_from(StartOffsets::Timestamp(-5)),
        );
        assert_eq!(setting, "start_from");
        let (setting, _) = config_err(base().subscribe(["a"]).poll_timeout(Duration::ZERO));
        assert_eq!(setting, "poll_timeout");
    }

    #[test]
    fn size_limits_librdkafka_would_refuse_at_start_are_refused_by_build() {
        let (setting, reason) = config_err(
            base()
                .subscribe(["a"])
                .set("receive.message.max.bytes", "2000000"),
        );
        // Unset, fetch.max.bytes follows sluice's 8 MiB queue.
        assert_eq!(setting, "receive.message.max.bytes");
        assert!(reason.contains("(8389120)"), "{reason}");
        let (setting, reason) = config_err(
            base()
                .subscribe(["a"])
                .set("fetch.max.bytes", "1000000")
                .set("receive.message.max.bytes", "1000511"),
        );
        assert_eq!(setting, "receive.message.max.bytes");
        assert!(reason.contains("(1000512)"), "{reason}");
        let (setting, _) = config_err(
            base()
                .subscribe(["a"])
                .set("message.max.bytes", "2000000")
                .set("fetch.max.bytes", "1999999"),
        );
        assert_eq!(setting, "fetch.max.bytes");
        // An unset fetch.max.bytes follows the queue size and the message size.
        let (_, reason) = config_err(
            base()
                .subscribe(["a"])
                .set("queued.max.messages.kbytes", "1024")
                .set("message.max.bytes", "3000000")
                .set("receive.message.max.bytes", "3000000"),
        );
        assert!(reason.contains("(3000512)"), "{reason}");
        for (fetch, receive) in [("1048576", "2097152"), ("52428800", "52429312")] {
            base()
                .subscribe(["a"])
                .set("fetch.max.bytes", fetch)
                .set("receive.message.max.bytes", receive)
                .build()
                .unwrap();
        }
        base()
            .subscribe(["a"])
            .set("queued.max.messages.kbytes", "1024")
            .set("receive.message.max.bytes", "1049088")
            .build()
            .unwrap();
    }

    #[test]
    fn queue_size_in_hex_octal_or_with_a_suffix_is_read_as_librdkafka_reads_it() {
        // librdkafka reads integers with strtol(.., 0): these built a source
        // whose size check panicked or quoted a limit the consumers never had.
        for queue in ["0x2000", "020000", "8192kb", " 8192"] {
            base()
                .subscribe(["a"])
                .set("queued.max.messages.kbytes", queue)
                .build()
                .unwrap_or_else(|e| panic!("queued.max.messages.kbytes={queue:?}: {e}"));
        }
        // 0x400 is 1024 KiB, so the derived fetch.max.bytes is 1 MiB.
        let (setting, reason) = config_err(
            base()
                .subscribe(["a"])
                .set("queued.max.messages.kbytes", "0x400")
                .set("receive.message.max.bytes", "1049087"),
        );
        assert_eq!(setting, "receive.message.max.bytes");
        assert!(reason.contains("(1049088)"), "{reason}");
        assert!(
            reason.contains("reads `queued.max.messages.kbytes` = '0x400' as 1024"),
            "{reason}"
        );
        base()
            .subscribe(["a"])
            .set("queued.max.messages.kbytes", "0x400")
            .set("receive.message.max.bytes", "1049088")
            .build()
            .unwrap();
        // librdkafka reads '1000kb' as 1000 bytes, below message.max.bytes.
        let (setting, reason) =
            config_err(base().subscribe(["a"]).set("fetch.max.bytes", "1000kb"));
        assert_eq!(setting, "fetch.max.bytes");
        assert!(
            reason.starts_with("1000 is below `message.max.bytes` (1000000)"),
            "{reason}"
        );
        assert!(reason.contains("'1000kb' as 1000"), "{reason}");
    }

    #[test]
    fn size_values_librdkafka_cannot_read_are_refused_naming_the_setting() {
        for value in ["", "kb", "-1", "0", "99999999999999999999", "08", "0x"] {
            for key in SIZE_SETTINGS {
                let (setting, _) = config_err(base().subscribe(["a"]).set(key, value));
                assert_eq!(setting, key, "{key}={value:?}");
            }
        }
    }

    #[test]
    fn forced_settings_are_compared_as_librdkafka_reads_them() {
        for agreeing in ["false", "FALSE", "f", "0"] {
            base()
                .subscribe(["a"])
                .set("enable.auto.commit", agreeing)
                .build()
                .unwrap_or_else(|e| panic!("enable.auto.commit={agreeing:?}: {e}"));
        }
        for refused in ["TRUE", "t", "1", "no", " false", ""] {
            let (setting, _) =
                config_err(base().subscribe(["a"]).set("enable.auto.commit", refused));
            assert_eq!(setting, "enable.auto.commit", "{refused:?}");
        }
        base()
            .subscribe(["a"])
            .set("auto.offset.reset", "ERROR")
            .set("topic.auto.offset.reset", "error")
            .build()
            .unwrap();
        // The topic-level form would override the forced value.
        let (setting, reason) = config_err(
            base()
                .subscribe(["a"])
                .set("topic.auto.offset.reset", "earliest"),
        );
        assert_eq!(setting, "topic.auto.offset.reset");
        assert!(reason.contains("start_from"), "{reason}");
    }

    /// Whether librdkafka itself creates a consumer from what `build`
    /// accepted, which is where it checks the fetch sizes.
    fn librdkafka_accepts(builder: &KafkaSourceBuilder) -> std::result::Result<(), String> {
        let source = KafkaSource {
            settings: builder.settings.clone(),
            ..base().subscribe(["a"]).build().unwrap()
        };
        source
            .client_config(None)
            .create::<rdkafka::consumer::BaseConsumer>()
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Size values as people write them, and as librdkafka's strtol reads
    /// them: decimal, hex, octal, with units, signs, blanks, overflowing.
    fn size_value() -> impl Strategy<Value = String> {
        let n = prop_oneof![0i64..4_000, 900_000i64..1_100_000, 0i64..i64::MAX];
        prop_oneof![
            n.clone().prop_map(|n| n.to_string()),
            n.clone().prop_map(|n| format!("{n:#x}")),
            n.clone().prop_map(|n| format!("0{n:o}")),
            (
                n.clone(),
                prop::sample::select(vec!["kb", "k", " MB", "e3", ".5"])
            )
                .prop_map(|(n, unit)| format!("{n}{unit}")),
            n.prop_map(|n| format!("-{n}")),
            prop::sample::select(vec!["", " ", "0x", "08", "abc", "+1000000", " 1048576"])
                .prop_map(str::to_owned),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn build_accepts_exactly_the_sizes_librdkafka_accepts_and_never_panics(
            sizes in prop::collection::vec(
                (prop::sample::select(SIZE_SETTINGS.to_vec()), size_value()),
                0..4,
            )
        ) {
            let builder = sizes
                .iter()
                .fold(base().subscribe(["a"]), |b, (key, value)| b.set(*key, value.as_str()));
            let built = builder.clone().build();
            let created = librdkafka_accepts(&builder);
            match (&built, &created) {
                (Ok(_), Ok(())) => {}
                (Err(Error::Config { setting, .. }), Err(_)) => {
                    prop_assert!(SIZE_SETTINGS.contains(&setting.as_str()), "{setting}");
                }
                _ => prop_assert!(
                    false,
                    "build: {built:?}, librdkafka creating a consumer: {created:?}"
                ),
            }
        }
    }

    #[test]
    fn consumers_get_the_forced_settings() {
        let s = base()
            .subscribe(["a"])
            .set("fetch.wait.max.ms", "10")
            .build()
            .unwrap();
        let c = s.client_config(Some("g"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("enable.partition.eof"), Some("true"));
        assert_eq!(c.get("auto.offset.reset"), Some("error"));
        assert_eq!(c.get("fetch.wait.max.ms"), Some("10"));
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("8192"));
        assert_eq!(c.get("group.id"), Some("g"));
        assert_eq!(c.get("bootstrap.servers"), Some("localhost:9092"));
    }
}
