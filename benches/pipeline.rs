//! The wordcount and empty-batch benches on the system allocator; see
//! `support/pipeline.rs`.
//!
//! ```text
//! cargo bench --bench pipeline
//! ```

#[path = "support/pipeline.rs"]
mod pipeline;

fn main() {
    pipeline::main("system");
}
