//! The `pipeline` benches with mimalloc as the global allocator: the same
//! code, so a run of both binaries shows what the allocator is worth to a
//! job that allocates per value (the `flat_map` form allocates a `String`
//! per word). See `support/pipeline.rs`.
//!
//! ```text
//! cargo bench --bench pipeline_mimalloc
//! ```

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/pipeline.rs"]
mod pipeline;

fn main() {
    pipeline::main("mimalloc");
}
