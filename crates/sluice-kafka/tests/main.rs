//! Integration tests of sluice-kafka against librdkafka's in-process mock
//! broker (`rdkafka::mocking::MockCluster`), one per test.

mod discovery;
mod offsets;
mod reader;
mod sink;
mod util;
