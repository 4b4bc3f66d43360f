//! Behaviour of the RocksDB checkpoint, on real databases in temporary
//! directories.

mod commit;
mod open;
mod plan;
mod read_only;
mod restore;
mod shuffle;
mod state;
mod util;
