//! RocksDB's memory, bounded by one setting: a block cache shared by every
//! family, which also holds index and filter blocks and is charged for the
//! memtables, so state larger than memory stays on disk and the process
//! does not grow with the number of keys.

use rocksdb::{BlockBasedOptions, Cache, DataBlockIndexType, Options, WriteBufferManager};

use crate::merge;

/// The default of [`RocksCheckpointBuilder::cache_bytes`]: 128 MiB.
///
/// [`RocksCheckpointBuilder::cache_bytes`]: crate::RocksCheckpointBuilder::cache_bytes
pub const DEFAULT_CACHE_BYTES: usize = 128 << 20;

/// The smallest cache accepted: RocksDB needs a few blocks per family.
pub(crate) const MIN_CACHE_BYTES: usize = 4 << 20;

/// The options every family and the database are opened with.
#[derive(Clone)]
pub(crate) struct Memory {
    cache: Cache,
    write_buffers: WriteBufferManager,
    /// Memtable size of one family.
    write_buffer_bytes: usize,
}

impl Memory {
    pub(crate) fn new(cache_bytes: usize) -> Self {
        let cache = Cache::new_lru_cache(cache_bytes);
        // Memtables may take half the budget; what they take is charged to
        // the cache, so blocks are evicted to make room.
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            cache_bytes / 2,
            false,
            cache.clone(),
        );
        Self {
            cache,
            write_buffers,
            write_buffer_bytes: (cache_bytes / 8).clamp(1 << 20, 64 << 20),
        }
    }

    pub(crate) fn family_options(&self) -> Options {
        let mut options = Options::default();
        options.set_merge_operator_associative(merge::NAME, merge::add_i64);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        // State is read by key: a Bloom filter (10 bits a key, about 1 %
        // false positives) lets a lookup skip the files that lack its key.
        table.set_bloom_filter(10.0, false);
        // And a hash index inside each data block finds the key without a
        // binary search.
        table.set_data_block_index_type(DataBlockIndexType::BinaryAndHash);
        table.set_data_block_hash_ratio(0.75);
        options.set_block_based_table_factory(&table);
        options.set_write_buffer_size(self.write_buffer_bytes);
        // Most lookups of a batch are for keys written before the current
        // memtable: a Bloom filter over its whole keys skips the search.
        options.set_memtable_whole_key_filtering(true);
        options.set_memtable_prefix_bloom_ratio(0.05);
        options
    }

    pub(crate) fn db_options(&self, create: bool) -> Options {
        let mut options = self.family_options();
        options.create_if_missing(create);
        options.create_missing_column_families(create);
        options.set_write_buffer_manager(&self.write_buffers);
        // RocksDB keeps 1000 info logs by default; they are only for debugging.
        options.set_keep_log_file_num(10);
        options
    }
}
