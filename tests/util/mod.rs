//! Helpers shared by the integration tests: brokers to run against and
//! ways to put records into them.

// Each test uses only some of the helpers.
#![allow(dead_code)]

pub(crate) mod job;
pub(crate) mod kafka;
pub(crate) mod oidc;
pub(crate) mod tansu;
pub(crate) mod tls;
pub(crate) mod wordcount;
