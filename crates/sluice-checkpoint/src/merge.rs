//! The counter merge operator behind `Write::Add`.

use rocksdb::MergeOperands;

use crate::keys::{counter_value, decode_counter};

/// Name RocksDB records for the operator; changing it makes old
/// checkpoints refuse to open.
pub(crate) const NAME: &str = "sluice.i64_add";

/// Sums the existing counter and every delta, wrapping on overflow.
///
/// Wrapping keeps the operation associative, which partial merges rely on.
/// A value that is not 8 bytes (a `Put` of other data) counts as zero
/// rather than failing: this runs inside RocksDB's flushes and compactions,
/// where a failure would stop the whole store. Reading such a key as a
/// counter is reported as an error instead.
pub(crate) fn add_i64(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    Some(counter_value(sum(existing, operands.iter())).to_vec())
}

fn sum<'a>(existing: Option<&[u8]>, deltas: impl Iterator<Item = &'a [u8]>) -> i64 {
    deltas.fold(existing.and_then(decode_counter).unwrap_or(0), |acc, d| {
        acc.wrapping_add(decode_counter(d).unwrap_or(0))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(n: i64) -> Vec<u8> {
        n.to_le_bytes().to_vec()
    }

    #[test]
    fn absent_counts_as_zero() {
        let deltas = [le(3), le(-5)];
        assert_eq!(sum(None, deltas.iter().map(Vec::as_slice)), -2);
    }

    #[test]
    fn adds_to_existing() {
        let deltas = [le(1)];
        assert_eq!(sum(Some(&le(41)), deltas.iter().map(Vec::as_slice)), 42);
    }

    #[test]
    fn malformed_existing_value_restarts_from_zero() {
        let deltas = [le(7)];
        assert_eq!(sum(Some(b"text"), deltas.iter().map(Vec::as_slice)), 7);
    }

    #[test]
    fn overflow_wraps_instead_of_panicking_across_ffi() {
        let deltas = [le(1)];
        assert_eq!(
            sum(Some(&le(i64::MAX)), deltas.iter().map(Vec::as_slice)),
            i64::MIN
        );
    }
}
