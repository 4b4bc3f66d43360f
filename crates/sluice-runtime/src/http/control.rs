//! Runtime control: pause and resume intake, change the rate limits. The
//! HTTP handlers record requests here; the driver takes them between
//! batches, so a batch is never changed or stopped half way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer};
use sluice_checkpoint::ControlRecord;
use sluice_core::RateLimits;

/// Requests the driver has not taken yet, and the limits in force.
pub(crate) struct Control {
    paused: AtomicBool,
    /// Set with every change, so the driver's check between batches is one
    /// atomic load when nothing changed.
    changed: AtomicBool,
    state: Mutex<ControlState>,
}

struct ControlState {
    /// The limits as the last request left them (what the driver runs with
    /// once it took the changes).
    limits: RateLimits,
    /// Whether `limits` changed since the driver last took them.
    limits_changed: bool,
    /// Changes not yet recorded in a batch record.
    pending: Vec<ControlRecord>,
}

/// What the driver takes between batches.
pub(crate) struct Changes {
    /// New limits, if any request changed them.
    pub(crate) limits: Option<RateLimits>,
    /// Every change since the last take, for the next batch record.
    pub(crate) records: Vec<ControlRecord>,
}

/// The body of `POST /api/control/rate`. A field left out keeps its
/// setting; `null` removes a limit.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateChange {
    #[serde(default, deserialize_with = "present")]
    pub(crate) max_rate: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    pub(crate) max_rate_per_partition: Option<Option<f64>>,
    #[serde(default)]
    pub(crate) backpressure: Option<bool>,
}

impl RateChange {
    /// Reads a request body: a JSON object of the fields above, each at
    /// most once, nothing else (serde would take an array as the fields in
    /// order, so `[1]` would set `max_rate`; a map keeps the last of
    /// duplicate fields, so `{"max_rate":1,"max_rate":null}` would remove
    /// the limit it seems to set).
    pub(crate) fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)?;
        serde_json::from_slice(body)
    }
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

impl Control {
    pub(crate) fn new(limits: RateLimits) -> Self {
        Self {
            paused: AtomicBool::new(false),
            changed: AtomicBool::new(false),
            state: Mutex::new(ControlState {
                limits,
                limits_changed: false,
                pending: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// The limits the last request left (or the configured ones).
    pub(crate) fn limits(&self) -> RateLimits {
        self.lock().limits.clone()
    }

    /// Starts paused, as the checkpoint says the job was left: nothing is
    /// recorded, the pause is not new.
    pub(crate) fn start_paused(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    /// Pauses (`true`) or resumes intake; `false` when it already was so
    /// (nothing is recorded then).
    pub(crate) fn set_paused(&self, paused: bool) -> bool {
        let mut state = self.lock();
        if self.paused.swap(paused, Ordering::SeqCst) == paused {
            return false;
        }
        let change = if paused { "pause" } else { "resume" };
        tracing::info!(
            change,
            "control: intake {}",
            if paused {
                "paused after the batch in flight"
            } else {
                "resumed"
            }
        );
        state.pending.push(ControlRecord::new(now_ms(), change));
        self.changed.store(true, Ordering::SeqCst);
        true
    }

    /// Applies `change` to the limits if the result is valid; the error
    /// says which setting is wrong, and nothing changes then. Returns the
    /// description recorded.
    pub(crate) fn change_rate(&self, change: &RateChange) -> Result<String, String> {
        if change.max_rate.is_none()
            && change.max_rate_per_partition.is_none()
            && change.backpressure.is_none()
        {
            return Err(
                "nothing to change: give max_rate, max_rate_per_partition or backpressure"
                    .to_owned(),
            );
        }
        let mut state = self.lock();
        let mut limits = state.limits.clone();
        let mut parts = Vec::new();
        if let Some(rate) = change.max_rate {
            limits.max_rate = rate;
            parts.push(format!("max_rate={}", describe(rate)));
        }
        if let Some(rate) = change.max_rate_per_partition {
            limits.max_rate_per_partition = rate;
            parts.push(format!("max_rate_per_partition={}", describe(rate)));
        }
        if let Some(on) = change.backpressure {
            limits.backpressure = on;
            parts.push(format!("backpressure={}", if on { "on" } else { "off" }));
        }
        limits.validate().map_err(|e| e.to_string())?;
        let description = format!("rate {}", parts.join(" "));
        tracing::info!(change = %description, "control: rate limits changed from the next batch on");
        state.limits = limits;
        state.limits_changed = true;
        state
            .pending
            .push(ControlRecord::new(now_ms(), description.clone()));
        self.changed.store(true, Ordering::SeqCst);
        Ok(description)
    }

    /// Takes what changed since the last call; `None` when nothing did.
    pub(crate) fn take(&self) -> Option<Changes> {
        if !self.changed.swap(false, Ordering::SeqCst) {
            return None;
        }
        let mut state = self.lock();
        let limits = std::mem::take(&mut state.limits_changed).then(|| state.limits.clone());
        Some(Changes {
            limits,
            records: std::mem::take(&mut state.pending),
        })
    }
}

fn describe(rate: Option<f64>) -> String {
    rate.map_or_else(|| "none".to_owned(), |r| format!("{r}/s"))
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(json: &str) -> RateChange {
        RateChange::from_json(json.as_bytes()).unwrap()
    }

    /// Regression: `[1]` set max_rate to 1 record/s, and `[null, 7, true]`
    /// three settings, as serde reads a struct from an array too.
    #[test]
    fn a_rate_change_is_an_object_and_nothing_else() {
        for body in ["[1]", "[null, 7, true]", "1", "\"max_rate\"", "null", "[]"] {
            let error = RateChange::from_json(body.as_bytes()).unwrap_err();
            assert!(
                error.to_string().contains("expected a map"),
                "{body}: {error}"
            );
        }
        assert_eq!(change(r#"{"max_rate":1}"#).max_rate, Some(Some(1.0)));
    }

    /// Regression: the last of duplicate fields won, so a request could
    /// say one thing and do another.
    #[test]
    fn a_rate_change_with_a_field_twice_is_refused() {
        let error = RateChange::from_json(br#"{"max_rate":1,"max_rate":null}"#).unwrap_err();
        assert!(
            error.to_string().contains("duplicate field `max_rate`"),
            "{error}"
        );
    }

    #[test]
    fn a_valid_change_is_taken_once_with_its_record() {
        let control = Control::new(RateLimits::new().max_rate(100.0));
        let described = control
            .change_rate(&change(r#"{"max_rate":null,"max_rate_per_partition":50}"#))
            .unwrap();
        assert_eq!(described, "rate max_rate=none max_rate_per_partition=50/s");
        let taken = control.take().unwrap();
        let limits = taken.limits.unwrap();
        assert_eq!(
            (limits.max_rate, limits.max_rate_per_partition),
            (None, Some(50.0))
        );
        assert_eq!(taken.records[0].change, described);
        assert!(control.take().is_none());
    }

    #[test]
    fn an_invalid_change_changes_nothing() {
        let control = Control::new(RateLimits::new().min_rate_per_partition(10.0));
        let error = control
            .change_rate(&change(r#"{"max_rate_per_partition":5}"#))
            .unwrap_err();
        assert!(error.contains("min"), "{error}");
        assert!(control.change_rate(&change("{}")).is_err());
        assert!(control.change_rate(&change(r#"{"max_rate":-1}"#)).is_err());
        assert!(control.take().is_none());
        assert_eq!(control.limits().max_rate_per_partition, None);
        assert!(RateChange::from_json(br#"{"maxrate":1}"#).is_err());
    }

    #[test]
    fn pause_and_resume_are_recorded_once_each() {
        let control = Control::new(RateLimits::new());
        assert!(control.set_paused(true));
        assert!(!control.set_paused(true));
        assert!(control.is_paused());
        assert!(control.set_paused(false));
        let records: Vec<String> = control
            .take()
            .unwrap()
            .records
            .into_iter()
            .map(|r| r.change)
            .collect();
        assert_eq!(records, ["pause", "resume"]);
    }
}
