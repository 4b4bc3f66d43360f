//! sluice's integration tests, one binary. Shared helpers live in `util`.

mod util;

mod bad_input;
mod bounded;
mod broker_harness;
mod cli;
mod clicks;
mod client_features;
mod config;
mod data_loss;
mod exactly_once;
mod examples;
mod faults;
mod http;
mod memory;
mod metadata;
mod offsets;
mod poison;
mod rate;
mod regression;
mod sink;
mod state;
mod trending;
mod watermark;
mod windows;
