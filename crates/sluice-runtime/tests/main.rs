//! Integration tests of sluice-runtime: the driver itself, on in-memory
//! input (`sluice_core::MemorySource`) and a real RocksDB checkpoint in a
//! temporary directory. No broker needed.

mod driver;
mod regression;
mod sink;
mod util;
