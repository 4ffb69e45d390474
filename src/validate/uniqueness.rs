//! How validate finds the keys that occur more than once.
//!
//! Most deliveries have none, so the file is read once: the main pass carries
//! each key's fingerprint ([`super::rules::key_fingerprint`]) and a
//! [`KeyTracker`] remembers the keys as the rows stream past, before any of
//! them is committed. The first key seen twice, or a key set that outgrows its
//! share of the memory pool, stops that pass (both Delta writes are aborted,
//! nothing is committed) and the file is validated again the exact way: a
//! key-only pre-pass whose aggregate spills finds the duplicated keys, and the
//! main pass joins them. A file the header says is too large for the key set
//! goes to the pre-pass at once, and so does the delivery of a dataset whose
//! last validation found a repeated key (`meta.validation_log.duplicated_rows`):
//! the read stopped at the first repeat would be waste, up to a whole read.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Decimal128Type;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};

/// How a validate pass finds duplicated keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPass {
    /// The dataset has no key.
    None,
    /// Keys are remembered as the main pass streams ([`KeyTracker`]).
    InPass,
    /// A key-only pre-pass finds the duplicated keys first.
    PrePass,
}

impl KeyPass {
    /// The plan to start with for `keys` keys over about `rows` rows, when the
    /// key sets may take `budget` bytes.
    pub fn choose(keys: usize, rows: Option<u64>, budget: usize) -> KeyPass {
        match (keys, rows) {
            (0, _) => KeyPass::None,
            (k, Some(rows)) if k.saturating_mul(set_bytes(rows as usize)) > budget => {
                KeyPass::PrePass
            }
            _ => KeyPass::InPass,
        }
    }

    /// Its name in the report and logs (`duplicate_check`).
    pub fn name(self) -> &'static str {
        match self {
            KeyPass::None => "none",
            KeyPass::InPass => "in_pass",
            KeyPass::PrePass => "pre_pass",
        }
    }
}

/// The column of the validated rows carrying key `k`'s fingerprint in an
/// [`KeyPass::InPass`] plan.
pub fn fingerprint_column(k: usize) -> String {
    format!("__k{k}")
}

/// Why the in-pass check stopped: the file must be validated with a pre-pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stop {
    #[error("key {0} occurs more than once")]
    Duplicate(usize),
    #[error("the keys outgrow {} MiB of the memory pool", .0 >> 20)]
    Full(usize),
}

/// The fingerprints seen so far of each key, in a reservation of the session's
/// memory pool of at most `budget` bytes.
///
/// Only 64 of a fingerprint's 128 bits are kept: two different keys sharing
/// them (a chance near n²/2⁶⁵) only send the file to the exact pre-pass, they
/// never flag a row.
pub struct KeyTracker {
    seen: Vec<HashSet<u64, BuildHasherDefault<Fingerprint>>>,
    reservation: MemoryReservation,
    budget: usize,
}

impl KeyTracker {
    /// Sized up front for `rows` rows when the header gave an estimate.
    pub fn new(
        keys: usize,
        rows: Option<u64>,
        pool: &Arc<dyn MemoryPool>,
        budget: usize,
    ) -> Result<KeyTracker, Stop> {
        let mut tracker = KeyTracker {
            seen: (0..keys).map(|_| HashSet::default()).collect(),
            reservation: MemoryConsumer::new("uniqueness keys").register(pool),
            budget,
        };
        if let Some(rows) = rows {
            for k in 0..keys {
                tracker.make_room(k, rows as usize)?;
            }
        }
        Ok(tracker)
    }

    /// Remembers the fingerprints in `batch`'s [`fingerprint_column`]s (a null
    /// one is a key with a missing part, which takes no part in uniqueness).
    pub fn add(&mut self, batch: &RecordBatch) -> Result<(), Stop> {
        for k in 0..self.seen.len() {
            let column = batch
                .column_by_name(&fingerprint_column(k))
                .expect("an in-pass plan carries every key's fingerprint");
            let fingerprints = column.as_primitive::<Decimal128Type>();
            self.make_room(k, fingerprints.len() - fingerprints.null_count())?;
            let seen = &mut self.seen[k];
            for fp in fingerprints.iter().flatten() {
                if !seen.insert(fp as u64) {
                    return Err(Stop::Duplicate(k));
                }
            }
        }
        Ok(())
    }

    /// Grows key `k`'s set to hold `more` fingerprints, within the budget and
    /// the pool (the old and the new table are both held while it grows).
    fn make_room(&mut self, k: usize, more: usize) -> Result<(), Stop> {
        let set = &mut self.seen[k];
        let wanted = set.len() + more;
        if wanted <= set.capacity() {
            return Ok(());
        }
        let old = table_bytes(set.capacity());
        let new = set_bytes(wanted.max(set.capacity() + 1));
        let peak = self.reservation.size() + new;
        if peak > self.budget || self.reservation.try_resize(peak).is_err() {
            return Err(Stop::Full(self.budget));
        }
        set.reserve(more);
        let now = self.reservation.size() - old - new + table_bytes(set.capacity());
        self.reservation.resize(now);
        Ok(())
    }
}

/// The bytes of a set grown to hold `items` fingerprints: a power of two of
/// buckets at most 7/8 full, each 8 bytes and a control byte.
fn set_bytes(items: usize) -> usize {
    if items == 0 {
        return 0;
    }
    let buckets = (items.saturating_mul(8) / 7).max(4).next_power_of_two();
    buckets.saturating_mul(9)
}

/// The bytes of a set whose capacity is `capacity`.
fn table_bytes(capacity: usize) -> usize {
    if capacity == 0 {
        0
    } else {
        set_bytes(capacity)
    }
}

/// Fingerprints are hashes already: the set uses their bits as they are.
#[derive(Default)]
struct Fingerprint(u64);

impl Hasher for Fingerprint {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Decimal128Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    fn batch(fingerprints: &[Option<i128>]) -> RecordBatch {
        let array = Decimal128Array::from(fingerprints.to_vec())
            .with_data_type(DataType::Decimal128(38, 0));
        let schema = Schema::new(vec![Field::new(
            fingerprint_column(0),
            DataType::Decimal128(38, 0),
            true,
        )]);
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(array)]).expect("batch")
    }

    fn pool(bytes: usize) -> Arc<dyn MemoryPool> {
        Arc::new(GreedyMemoryPool::new(bytes))
    }

    #[test]
    fn a_key_seen_twice_stops_even_across_batches() {
        let mut t = KeyTracker::new(1, None, &pool(1 << 20), 1 << 20).expect("room");
        t.add(&batch(&[Some(1), Some(2), None, None]))
            .expect("distinct");
        assert_eq!(t.add(&batch(&[Some(3), Some(2)])), Err(Stop::Duplicate(0)));
    }

    #[test]
    fn missing_keys_are_never_duplicates() {
        let mut t = KeyTracker::new(1, None, &pool(1 << 20), 1 << 20).expect("room");
        t.add(&batch(&[None, None, Some(7)])).expect("nulls skip");
        t.add(&batch(&[None])).expect("nulls skip");
    }

    #[test]
    fn the_keys_stop_at_the_budget_and_at_the_pool() {
        let many: Vec<Option<i128>> = (0..10_000).map(Some).collect();
        // 10 000 keys take 16 384 buckets of 9 bytes.
        let mut t = KeyTracker::new(1, None, &pool(1 << 20), 64 << 10).expect("room");
        assert_eq!(t.add(&batch(&many)), Err(Stop::Full(64 << 10)));
        let mut t = KeyTracker::new(1, None, &pool(64 << 10), 1 << 20).expect("room");
        assert_eq!(t.add(&batch(&many)), Err(Stop::Full(1 << 20)));
        let mut t = KeyTracker::new(1, None, &pool(1 << 20), 1 << 20).expect("room");
        t.add(&batch(&many)).expect("fits");
        assert!(t.reservation.size() >= set_bytes(10_000));
        // Sized for an estimate the budget cannot hold: it says so at once.
        assert!(KeyTracker::new(1, Some(1 << 20), &pool(1 << 20), 1 << 20).is_err());
    }

    #[test]
    fn the_plan_follows_the_estimate() {
        assert_eq!(KeyPass::choose(0, Some(1 << 30), 1), KeyPass::None);
        assert_eq!(KeyPass::choose(1, None, 1), KeyPass::InPass);
        // 3 million keys: 4 Mi buckets, 36 MiB.
        assert_eq!(set_bytes(3_000_000), 9 << 22);
        assert_eq!(
            KeyPass::choose(1, Some(3_000_000), 64 << 20),
            KeyPass::InPass
        );
        assert_eq!(
            KeyPass::choose(2, Some(3_000_000), 64 << 20),
            KeyPass::PrePass
        );
        assert_eq!(
            KeyPass::choose(1, Some(10_000_000), 64 << 20),
            KeyPass::PrePass
        );
    }
}
