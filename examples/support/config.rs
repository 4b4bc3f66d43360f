//! `--config FILE`: a job's settings in a TOML file, for the examples.
//! Command-line flags override the file.
//!
//! ```toml
//! brokers = "127.0.0.1:9092"
//! topic = "lines"
//! checkpoint_dir = "/var/lib/wordcount"
//! batch_interval_ms = 500
//!
//! [kafka]                      # librdkafka consumer settings, passed through
//! "security.protocol" = "ssl"
//! "fetch.wait.max.ms" = 10      # numbers and booleans as librdkafka writes them
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Parser;
use serde::Deserialize;

/// The settings a config file may hold; each is the command-line option of
/// the same name (`batch_interval_ms` is `--batch-interval-ms`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobConfig {
    /// Kafka bootstrap servers, `HOST:PORT[,HOST:PORT...]`; absent: the
    /// embedded broker.
    pub(crate) brokers: Option<String>,
    /// Topic to read.
    pub(crate) topic: Option<String>,
    /// Checkpoint directory.
    pub(crate) checkpoint_dir: Option<PathBuf>,
    /// Batch interval, in milliseconds.
    pub(crate) batch_interval_ms: Option<u64>,
    /// Kafka consumer group id.
    pub(crate) group: Option<String>,
    /// Worker threads.
    pub(crate) workers: Option<usize>,
    /// Most records per second each partition reads (wordcount only).
    pub(crate) max_rate_per_partition: Option<f64>,
    /// Most records per second the whole job reads (wordcount only).
    pub(crate) max_rate: Option<f64>,
    /// Size batches by processing speed (wordcount only).
    pub(crate) backpressure: Option<bool>,
    /// Records per second of the first batches (wordcount only).
    pub(crate) initial_rate: Option<f64>,
    /// Address of the web UI and HTTP API (wordcount only).
    pub(crate) http: Option<String>,
    /// librdkafka consumer settings, passed through untouched (`--set`):
    /// strings, or integers, floats and booleans in their string form.
    #[serde(default)]
    pub(crate) kafka: BTreeMap<String, KafkaValue>,
}

/// The value of a librdkafka setting: librdkafka takes strings, so a TOML
/// integer, float or boolean becomes the string librdkafka would read the
/// same way (`10`, `0.5`, `true`).
#[derive(Debug, PartialEq)]
pub(crate) struct KafkaValue(pub(crate) String);

impl<'de> Deserialize<'de> for KafkaValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = KafkaValue;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, integer, float or boolean")
            }

            fn visit_str<E>(self, value: &str) -> Result<KafkaValue, E> {
                Ok(KafkaValue(value.to_owned()))
            }

            fn visit_i64<E>(self, value: i64) -> Result<KafkaValue, E> {
                Ok(KafkaValue(value.to_string()))
            }

            fn visit_u64<E>(self, value: u64) -> Result<KafkaValue, E> {
                Ok(KafkaValue(value.to_string()))
            }

            fn visit_f64<E>(self, value: f64) -> Result<KafkaValue, E> {
                Ok(KafkaValue(value.to_string()))
            }

            fn visit_bool<E>(self, value: bool) -> Result<KafkaValue, E> {
                Ok(KafkaValue(value.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JobConfig {
    /// Reads and checks `path`.
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in the config file {}", path.display()))
    }

    /// Checks a config file's `text`.
    fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The file's settings as command-line arguments, to go before the
    /// real ones (which then override them).
    fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut flag = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                args.push(format!("--{name}").into());
                args.push(value.into());
            }
        };
        flag("brokers", self.brokers.clone());
        flag("topic", self.topic.clone());
        flag(
            "checkpoint-dir",
            self.checkpoint_dir
                .as_ref()
                .map(|d| d.display().to_string()),
        );
        flag(
            "batch-interval-ms",
            self.batch_interval_ms.map(|v| v.to_string()),
        );
        flag("group", self.group.clone());
        flag("workers", self.workers.map(|v| v.to_string()));
        flag(
            "max-rate-per-partition",
            self.max_rate_per_partition.map(|v| v.to_string()),
        );
        flag("max-rate", self.max_rate.map(|v| v.to_string()));
        flag("initial-rate", self.initial_rate.map(|v| v.to_string()));
        flag("http", self.http.clone());
        if self.backpressure == Some(true) {
            args.push("--backpressure".into());
        }
        for (key, KafkaValue(value)) in &self.kafka {
            args.push("--set".into());
            args.push(format!("{key}={value}").into());
        }
        args
    }
}

/// Parses the command line into `A`, with the settings of `--config FILE`
/// (when given) under it: a flag on the command line wins over the file.
pub(crate) fn parse_with_config<A: Parser>() -> Result<A> {
    let cli: Vec<OsString> = std::env::args_os().collect();
    let config = config_path(&cli)
        .map(|path| JobConfig::load(&path))
        .transpose()?
        .unwrap_or_default();
    let mut args = cli[..1].to_vec();
    args.extend(config.to_args());
    args.extend(cli[1..].iter().cloned());
    let matches = A::command()
        .args_override_self(true)
        .try_get_matches_from(args)
        .unwrap_or_else(|error| error.exit());
    Ok(A::from_arg_matches(&matches)?)
}

/// The value of `--config FILE` or `--config=FILE`, if given.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy();
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `"fetch.wait.max.ms" = 10` was refused: `[kafka]` took only strings.
    #[test]
    fn kafka_settings_take_integers_floats_and_booleans_as_their_string_form() {
        let config = JobConfig::parse(
            r#"
            [kafka]
            "security.protocol" = "ssl"
            "fetch.wait.max.ms" = 10
            "socket.timeout.ms" = -1
            "some.ratio" = 0.5
            "whole.float" = 2.0
            "enable.partition.eof" = false
            "#,
        )
        .unwrap();
        let set: Vec<String> = config
            .to_args()
            .chunks(2)
            .map(|pair| {
                assert_eq!(pair[0], "--set");
                pair[1].to_string_lossy().into_owned()
            })
            .collect();
        assert_eq!(
            set,
            [
                "enable.partition.eof=false",
                "fetch.wait.max.ms=10",
                "security.protocol=ssl",
                "socket.timeout.ms=-1",
                "some.ratio=0.5",
                "whole.float=2",
            ]
        );
    }

    #[test]
    fn a_kafka_setting_that_is_not_a_scalar_is_refused_naming_it() {
        let error = JobConfig::parse("[kafka]\n\"bootstrap.servers\" = [\"a\", \"b\"]\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("bootstrap.servers"), "{error}");
        assert!(
            error.contains("a string, integer, float or boolean"),
            "{error}"
        );
    }
}
