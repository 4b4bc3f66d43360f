//! Crash points for tests: the environment variable
//! `SLUICE_CRASH_POINT=<point>:<batch id>` makes the process abort — no
//! cleanup, no flush, like `kill -9` — when that batch reaches that point.
//! The crash tests use them to stop a job exactly between its two commits.
//! Unset (always, outside tests), a check costs one load.

use std::sync::OnceLock;

/// Where in a batch a process may be made to crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrashPoint {
    /// The batch was computed and its outside sinks were written, not yet
    /// committed (`before-sink-commit`).
    BeforeSinks,
    /// The outside sinks committed, the checkpoint did not
    /// (`after-sink-commit`).
    AfterSinks,
    /// Both committed (`after-checkpoint-commit`).
    AfterCheckpoint,
}

impl CrashPoint {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "before-sink-commit" => Some(Self::BeforeSinks),
            "after-sink-commit" => Some(Self::AfterSinks),
            "after-checkpoint-commit" => Some(Self::AfterCheckpoint),
            _ => None,
        }
    }
}

/// The variable naming the crash point.
const VARIABLE: &str = "SLUICE_CRASH_POINT";

/// Aborts the process if `batch` at `point` is the configured crash point.
pub(crate) fn reach(point: CrashPoint, batch: u64) {
    static CONFIGURED: OnceLock<Option<(CrashPoint, u64)>> = OnceLock::new();
    let configured = CONFIGURED.get_or_init(|| {
        let value = std::env::var(VARIABLE).ok()?;
        let parsed = parse(&value);
        if parsed.is_none() {
            tracing::warn!(
                value,
                "{VARIABLE} is not <point>:<batch id> with a point of before-sink-commit, \
                 after-sink-commit or after-checkpoint-commit; ignored"
            );
        }
        parsed
    });
    if *configured == Some((point, batch)) {
        tracing::error!(?point, batch, "{VARIABLE}: aborting the process here");
        std::process::abort();
    }
}

fn parse(value: &str) -> Option<(CrashPoint, u64)> {
    let (point, batch) = value.split_once(':')?;
    Some((CrashPoint::parse(point)?, batch.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_point_names_its_point_and_batch() {
        assert_eq!(
            parse("after-sink-commit:3"),
            Some((CrashPoint::AfterSinks, 3))
        );
        assert_eq!(parse("after-sink-commit"), None);
        assert_eq!(parse("mid-air:3"), None);
        assert_eq!(parse("after-sink-commit:x"), None);
    }
}
