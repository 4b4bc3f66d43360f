//! sluice-core: the engine's vocabulary and the `DStream` operator graph.
//! (Overview is completed as the operator modules land.)

mod batch;
mod error;
mod input;
mod offset;
mod record;
mod writes;

pub use batch::{Batch, BatchInfo};
pub use error::{BoxError, Error, Result};
pub use input::{InputReader, MemoryInput};
pub use offset::{OffsetRange, TopicPartition};
pub use record::Record;
pub use writes::{Write, WriteSet};
