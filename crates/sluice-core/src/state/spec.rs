//! What `map_with_state` is given: the [`StateSpec`] and the [`State`]
//! handle its function works on.

use std::sync::Arc;
use std::time::Duration;

/// The function of `map_with_state`: called with the key, the new value
/// (`None` when the key is timing out) and the key's state.
pub(crate) type MappingFn<K, V, S, U> = dyn Fn(&K, Option<V>, &mut State<S>) -> U + Send + Sync;

/// How `map_with_state` keeps its state: the mapping function, an idle
/// timeout, a time to live and the initial state — Spark's `StateSpec`.
///
/// ```
/// use std::time::Duration;
/// use sluice_core::state::{State, StateSpec};
///
/// // A running count per key; a key idle for 30 s is dropped, and its
/// // last count emitted.
/// let spec = StateSpec::function(|_key: &String, click: Option<u64>, state: &mut State<u64>| {
///     match click {
///         Some(_) => {
///             let count = state.get().copied().unwrap_or(0) + 1;
///             state.update(count);
///             None
///         }
///         None => state.get().copied(), // timing out
///     }
/// })
/// .timeout(Duration::from_secs(30));
/// ```
pub struct StateSpec<K, V, S, U> {
    pub(crate) function: Arc<MappingFn<K, V, S, U>>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) initial: Arc<Vec<(K, S)>>,
}

impl<K, V, S, U> StateSpec<K, V, S, U> {
    /// A spec calling `function` for every new value of a key, in the order
    /// the values arrived, and for every key whose timeout expired. No
    /// timeout, no TTL and no initial state by default.
    pub fn function<F>(function: F) -> Self
    where
        F: Fn(&K, Option<V>, &mut State<S>) -> U + Send + Sync + 'static,
    {
        Self {
            function: Arc::new(function),
            timeout: None,
            ttl: None,
            initial: Arc::new(Vec::new()),
        }
    }

    /// Idle timeout: a key that gets no value for `timeout` of batch time
    /// is called once more with no value and
    /// [`State::is_timing_out`] true, in the first batch whose time is at
    /// least its last value's batch time plus `timeout` — whether or not
    /// that batch has data for the key's partition — and its state is then
    /// removed. Checked every batch through an index by expiry time, not a
    /// scan of the state. Spark's `StateSpec.timeout`.
    ///
    /// Deadlines are kept in whole milliseconds: a timeout shorter than
    /// 1 ms (zero included) would time every key out in the batch after
    /// its value, and the job is refused at start with an error naming
    /// the state and the setting. Leave the timeout out for none.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Time to live: a state not updated for `ttl` of batch time is removed
    /// without calling the function, in the first batch at or past that
    /// time, as Flink's state TTL (`OnCreateAndWrite`, never returning an
    /// expired value) does. A key that gets a value after its TTL passed
    /// starts with no state.
    ///
    /// As for [`timeout`](Self::timeout), a TTL shorter than 1 ms (zero
    /// included) is refused at start, naming the state and the setting;
    /// leave it out for none.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The state keys start with: loaded in the first batch that runs the
    /// operator on a checkpoint without it, before that batch's values, as
    /// Spark's `StateSpec.initialState`. Later starts ignore it. Timeouts
    /// and TTLs of initial keys count from that first batch.
    pub fn initial_state(mut self, initial: impl IntoIterator<Item = (K, S)>) -> Self {
        self.initial = Arc::new(initial.into_iter().collect());
        self
    }
}

impl<K, V, S, U> StateSpec<K, V, S, U> {
    /// Why the spec's settings cannot run, if they cannot.
    pub(crate) fn invalid_setting(&self) -> Option<String> {
        let too_short = |setting: &str, value: Option<Duration>| {
            value.filter(|d| d.as_millis() == 0).map(|d| {
                format!(
                    "the StateSpec's {setting} ({} ms) is shorter than 1 ms; give one of at \
                     least 1 ms, or leave it out for none",
                    d.as_secs_f64() * 1000.0
                )
            })
        };
        too_short("timeout", self.timeout).or_else(|| too_short("ttl", self.ttl))
    }
}

impl<K, V, S, U> Clone for StateSpec<K, V, S, U> {
    fn clone(&self) -> Self {
        Self {
            function: Arc::clone(&self.function),
            timeout: self.timeout,
            ttl: self.ttl,
            initial: Arc::clone(&self.initial),
        }
    }
}

impl<K, V, S, U> std::fmt::Debug for StateSpec<K, V, S, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSpec")
            .field("timeout", &self.timeout)
            .field("ttl", &self.ttl)
            .field("initial_keys", &self.initial.len())
            .finish_non_exhaustive()
    }
}

/// One key's state, as the function of `map_with_state` sees it — Spark's
/// `State`.
#[derive(Debug)]
pub struct State<S> {
    value: Option<S>,
    changed: bool,
    timing_out: bool,
    updated_while_timing_out: bool,
}

impl<S> State<S> {
    pub(crate) fn new(value: Option<S>, timing_out: bool) -> Self {
        Self {
            value,
            changed: false,
            timing_out,
            updated_while_timing_out: false,
        }
    }

    /// True when the key has state.
    pub fn exists(&self) -> bool {
        self.value.is_some()
    }

    /// The key's state, if it has one.
    pub fn get(&self) -> Option<&S> {
        self.value.as_ref()
    }

    /// Sets the key's state, committed with the batch. Restarts the key's
    /// timeout and TTL. A key that is timing out cannot be updated: its
    /// state is removed after this call, and updating it fails the batch
    /// (as in Spark).
    pub fn update(&mut self, state: S) {
        if self.timing_out {
            self.updated_while_timing_out = true;
        }
        self.value = Some(state);
        self.changed = true;
    }

    /// Removes the key's state, committed with the batch.
    pub fn remove(&mut self) {
        self.value = None;
        self.changed = true;
    }

    /// True when the function is called because the key's timeout expired
    /// (it then gets no value).
    pub fn is_timing_out(&self) -> bool {
        self.timing_out
    }

    pub(crate) fn changed(&self) -> bool {
        self.changed
    }

    pub(crate) fn updated_while_timing_out(&self) -> bool {
        self.updated_while_timing_out
    }

    pub(crate) fn into_value(self) -> Option<S> {
        self.value
    }
}
