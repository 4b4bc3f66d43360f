//! Windowed operators, one family per file: the values of a batch-time
//! window (`window`), batch-time windowed reductions
//! (`reduce_by_key_and_window` and the operators built on it), and
//! event-time windows with watermarks (`event_time_window`).
//!
//! A window's contents are keyed state under the name the job gives it,
//! read and staged like the state of `map_with_state`; see
//! [`crate::window`] for what is emitted when.

mod batch_time;
mod batch_time_reduce;
mod event_time;
mod key_panes;

pub use event_time::{EventTimeSpec, LateCount, OutputMode, Windowed};

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::state::StateDescriptor;
use crate::window::panes::Panes;
use crate::window::BatchWindow;
use crate::{Error, StreamGraph};

/// Declares a batch-time window named `name` on `graph`: its state, kept
/// by the operator kind `kind` with key type `K`, state type `S` and as
/// parameters the length and slide and, when given, the `layout` of its
/// stored state; and its length and slide for the checks at start, whose
/// errors name `operator`, the method the job called. Returns its
/// geometry, or why the length or slide is refused — the graph then
/// refuses to start or run (see [`StreamGraph::check_states`]), so the
/// operator never runs with it.
fn declare<K: DeserializeOwned, S: DeserializeOwned>(
    graph: &StreamGraph,
    name: &str,
    (kind, operator): (&'static str, &'static str),
    (len, slide): (Duration, Duration),
    layout: Option<&str>,
) -> Result<Panes, String> {
    let mut params = Panes::params(len, slide);
    if let Some(layout) = layout {
        params = format!("{params} {layout}");
    }
    graph.declare_state(StateDescriptor::of::<K, S>(name, kind).with_params(params));
    graph.declare_window(BatchWindow {
        name: name.to_owned(),
        operator,
        len,
        slide,
    });
    Panes::new(len, slide)
}

/// The error of a window whose geometry was refused.
fn refused(name: &str, operator: &'static str, reason: &str) -> Error {
    Error::Window {
        name: name.to_owned(),
        operator,
        reason: reason.to_owned(),
    }
}
