//! sluice's integration tests, one binary. Shared helpers live in `util`.

mod util;

mod bad_input;
mod broker_harness;
mod client_features;
mod exactly_once;
mod faults;
mod memory;
mod offsets;
mod poison;
mod rate;
