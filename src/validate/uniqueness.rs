//! How validate finds the keys that occur more than once.
//!
//! Most deliveries have none, so the file is read once: the main pass carries
//! each key's fingerprint ([`super::rules::key_fingerprint`]) and a
//! [`KeyTracker`] remembers the keys as the rows stream past, before any of
//! them is committed. Its hash set and the room to sort it take at most a
//! quarter of the memory pool; when it is full its keys are written to a
//! temporary file as one sorted run, and at the end of the read the runs are
//! merged, so the check's memory is bounded whatever the file's size. The
//! first key seen twice (in the set as the rows stream, or
//! across runs in the merge) aborts both Delta writes (nothing is committed)
//! and the file is validated again the exact way: a key-only pre-pass whose
//! aggregate spills finds the duplicated keys, and the main pass joins them.
//! The delivery of a dataset whose last validation found a repeated key
//! (`meta.validation_log.duplicated_rows`) takes the pre-pass at once: the read
//! stopped at the first repeat would be waste, up to a whole read.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufReader, BufWriter, Read, Write};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Decimal128Type;
use datafusion::execution::disk_manager::DiskManager;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::execution::spill_file::SpillFile;

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
    /// The plan to start with for `keys` keys: the pre-pass when the dataset's
    /// last validation found a repeated key.
    pub fn choose(keys: usize, repeated_last_time: bool) -> KeyPass {
        match (keys, repeated_last_time) {
            (0, _) => KeyPass::None,
            (_, true) => KeyPass::PrePass,
            (_, false) => KeyPass::InPass,
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
    #[error("the pool has no room for the keys within {} MiB", .0 >> 20)]
    Full(usize),
    #[error("the keys could not be written to a temporary file: {0}")]
    Spill(String),
}

/// The fingerprints seen so far of each key: a hash set in a reservation of the
/// session's memory pool of at most `budget` bytes (with the room to sort it),
/// and the sorted runs it was written to each time it filled.
///
/// Only 64 of a fingerprint's 128 bits are kept: two different keys sharing
/// them (a chance near n²/2⁶⁵) only send the file to the exact pre-pass, they
/// never flag a row.
pub struct KeyTracker {
    keys: Vec<Keys>,
    reservation: MemoryReservation,
    budget: usize,
    disk: Arc<DiskManager>,
}

#[derive(Default)]
struct Keys {
    seen: HashSet<u64, BuildHasherDefault<Fingerprint>>,
    runs: Vec<Arc<dyn SpillFile>>,
}

impl KeyTracker {
    /// Sized up front for `rows` rows (as far as the budget allows) when the
    /// header gave an estimate: growing by doubling holds the old and the new
    /// table at once (3 M keys: 20 MiB more peak RSS, the same time).
    pub fn new(
        keys: usize,
        rows: Option<u64>,
        pool: &Arc<dyn MemoryPool>,
        disk: Arc<DiskManager>,
        budget: usize,
    ) -> Result<KeyTracker, Stop> {
        let mut tracker = KeyTracker {
            keys: (0..keys).map(|_| Keys::default()).collect(),
            reservation: MemoryConsumer::new("uniqueness keys").register(pool),
            budget,
            disk,
        };
        if let Some(rows) = rows.filter(|_| keys > 0) {
            let fits = items_within(budget / keys);
            for k in 0..keys {
                tracker.make_room(k, (rows as usize).min(fits))?;
            }
        }
        Ok(tracker)
    }

    /// Remembers the fingerprints in `batch`'s [`fingerprint_column`]s (a null
    /// one is a key with a missing part, which takes no part in uniqueness).
    pub fn add(&mut self, batch: &RecordBatch) -> Result<(), Stop> {
        for k in 0..self.keys.len() {
            let column = batch
                .column_by_name(&fingerprint_column(k))
                .expect("an in-pass plan carries every key's fingerprint");
            let fingerprints = column.as_primitive::<Decimal128Type>();
            let more = fingerprints.len() - fingerprints.null_count();
            if let Err(full) = self.make_room(k, more) {
                if self.keys[k].seen.is_empty() {
                    return Err(full);
                }
                self.spill(k)?;
                self.make_room(k, more)?;
            }
            let seen = &mut self.keys[k].seen;
            for fp in fingerprints.iter().flatten() {
                if !seen.insert(fp as u64) {
                    return Err(Stop::Duplicate(k));
                }
            }
        }
        Ok(())
    }

    /// At the end of the read: a key in two runs is a repeated key.
    pub fn finish(mut self) -> Result<(), Stop> {
        for k in 0..self.keys.len() {
            if self.keys[k].runs.is_empty() {
                continue;
            }
            let last = self.sorted(k)?;
            let spill = |e: std::io::Error| Stop::Spill(e.to_string());
            let mut runs: Vec<Box<dyn Iterator<Item = std::io::Result<u64>>>> =
                vec![Box::new(last.into_iter().map(Ok))];
            for run in &self.keys[k].runs {
                let path = run.path().expect("runs are local files");
                let file = std::fs::File::open(path).map_err(spill)?;
                runs.push(Box::new(read_run(file)));
            }
            let mut heap = BinaryHeap::new();
            for (i, run) in runs.iter_mut().enumerate() {
                if let Some(fp) = run.next().transpose().map_err(spill)? {
                    heap.push(Reverse((fp, i)));
                }
            }
            let mut previous = None;
            while let Some(Reverse((fp, i))) = heap.pop() {
                if previous == Some(fp) {
                    return Err(Stop::Duplicate(k));
                }
                previous = Some(fp);
                if let Some(next) = runs[i].next().transpose().map_err(spill)? {
                    heap.push(Reverse((next, i)));
                }
            }
        }
        Ok(())
    }

    /// Writes key `k`'s set to a temporary file as one sorted run and empties
    /// it (its table stays allocated for the next run).
    fn spill(&mut self, k: usize) -> Result<(), Stop> {
        let run = self.sorted(k)?;
        let spill = |e: &dyn std::fmt::Display| Stop::Spill(e.to_string());
        let file = self
            .disk
            .create_tmp_file("uniqueness keys")
            .map_err(|e| spill(&e))?;
        let path = file.path().ok_or_else(|| spill(&"not a local file"))?;
        let mut out = BufWriter::new(std::fs::File::create(path).map_err(|e| spill(&e))?);
        run.iter()
            .try_for_each(|fp| out.write_all(&fp.to_le_bytes()))
            .and_then(|()| out.flush())
            .map_err(|e| spill(&e))?;
        self.keys[k].runs.push(file);
        Ok(())
    }

    /// Key `k`'s set drained into a sorted vector (its room is reserved with
    /// the set's, see [`set_cost`]).
    fn sorted(&mut self, k: usize) -> Result<Vec<u64>, Stop> {
        let mut run: Vec<u64> = self.keys[k].seen.drain().collect();
        run.sort_unstable();
        Ok(run)
    }

    /// Grows key `k`'s set to hold `more` fingerprints, within the budget and
    /// the pool.
    fn make_room(&mut self, k: usize, more: usize) -> Result<(), Stop> {
        let set = &mut self.keys[k].seen;
        let wanted = set.len() + more;
        if wanted <= set.capacity() {
            return Ok(());
        }
        let others = self.reservation.size() - set_cost(set.capacity());
        let planned = set_cost(wanted.max(set.capacity() + 1));
        if others + planned > self.budget || self.reservation.try_resize(others + planned).is_err()
        {
            return Err(Stop::Full(self.budget));
        }
        set.reserve(more);
        self.reservation.resize(others + set_cost(set.capacity()));
        Ok(())
    }
}

/// The fingerprints of a run file, in order.
fn read_run(file: std::fs::File) -> impl Iterator<Item = std::io::Result<u64>> {
    let mut reader = BufReader::new(file);
    std::iter::from_fn(move || {
        let mut bytes = [0u8; 8];
        match reader.read_exact(&mut bytes) {
            Ok(()) => Some(Ok(u64::from_le_bytes(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
            Err(e) => Some(Err(e)),
        }
    })
}

/// The most fingerprints a set sized for them at once can hold when it and its
/// sort buffer take at most `bytes` ([`set_cost`]).
fn items_within(bytes: usize) -> usize {
    let buckets = bytes / 16;
    if buckets < 8 {
        return 0;
    }
    let buckets = 1usize << (usize::BITS - 1 - buckets.leading_zeros());
    buckets / 8 * 7
}

/// The bytes a set grown to hold `items` fingerprints may take: a power of two
/// of buckets at most 7/8 full, each 8 bytes and a control byte, and the vector
/// of 8 bytes a key its keys are sorted into when it spills — 16 bytes a bucket.
/// (While the table grows, the old and the new one fit in the same bytes.)
fn set_cost(items: usize) -> usize {
    if items == 0 {
        return 0;
    }
    let buckets = (items.saturating_mul(8) / 7).max(4).next_power_of_two();
    buckets.saturating_mul(16)
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

    fn tracker(pool_bytes: usize, budget: usize) -> Result<KeyTracker, Stop> {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(pool_bytes));
        let disk = Arc::new(DiskManager::builder().build().expect("disk manager"));
        KeyTracker::new(1, None, &pool, disk, budget)
    }

    fn keys(range: std::ops::Range<i128>) -> RecordBatch {
        batch(&range.map(Some).collect::<Vec<_>>())
    }

    #[test]
    fn a_key_seen_twice_stops_even_across_batches() {
        let mut t = tracker(1 << 20, 1 << 20).expect("room");
        t.add(&batch(&[Some(1), Some(2), None, None]))
            .expect("distinct");
        assert_eq!(t.add(&batch(&[Some(3), Some(2)])), Err(Stop::Duplicate(0)));
    }

    #[test]
    fn missing_keys_are_never_duplicates() {
        let mut t = tracker(1 << 20, 1 << 20).expect("room");
        t.add(&batch(&[None, None, Some(7)])).expect("nulls skip");
        t.add(&batch(&[None])).expect("nulls skip");
        t.finish().expect("no repeat");
    }

    #[test]
    fn a_full_set_spills_sorted_runs_and_the_merge_finds_a_repeat_across_them() {
        // 64 KiB: at most 4 096 buckets, 3 584 keys a run.
        assert_eq!(items_within(64 << 10), 3584);
        assert_eq!(set_cost(3584), 64 << 10);
        let mut t = tracker(1 << 20, 64 << 10).expect("room");
        for start in (0..20_000).step_by(1000) {
            t.add(&keys(start..start + 1000)).expect("distinct");
        }
        assert!(t.keys[0].runs.len() >= 4, "{} runs", t.keys[0].runs.len());
        assert!(t.reservation.size() <= 64 << 10);
        t.finish().expect("no key twice");

        // Key 5 is in the first run when it comes again: only the merge sees it.
        let mut t = tracker(1 << 20, 64 << 10).expect("room");
        for start in (0..20_000).step_by(1000) {
            t.add(&keys(start..start + 1000)).expect("distinct so far");
        }
        t.add(&keys(5..6)).expect("not in the current set");
        assert_eq!(t.finish(), Err(Stop::Duplicate(0)));
    }

    #[test]
    fn a_pool_without_room_stops_the_in_pass_check() {
        // 1 000 keys take 2 048 buckets, 32 KiB: more than a 16 KiB pool.
        let mut t = tracker(16 << 10, 1 << 20).expect("an empty set");
        assert_eq!(t.add(&keys(0..1000)), Err(Stop::Full(1 << 20)));
        // Sized up front for an estimate within the budget, never past it.
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 30));
        let disk = Arc::new(DiskManager::builder().build().expect("disk manager"));
        let t = KeyTracker::new(1, Some(1 << 30), &pool, disk, 64 << 10).expect("room");
        assert_eq!(t.keys[0].seen.capacity(), 3584);
    }

    #[test]
    fn the_plan_follows_the_dataset_history() {
        assert_eq!(KeyPass::choose(0, true), KeyPass::None);
        assert_eq!(KeyPass::choose(1, false), KeyPass::InPass);
        assert_eq!(KeyPass::choose(2, true), KeyPass::PrePass);
        // 3 million keys: 4 Mi buckets, 36 MiB of table and 28 MiB to sort them in.
        assert_eq!(set_cost(3_000_000), 64 << 20);
    }
}
