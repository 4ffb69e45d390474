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
//! and the file is validated again the exact way: a key-only pre-pass
//! ([`super::key_scan`]) collects the duplicated fingerprints ([`Duplicates`],
//! which spills the same way), and the main pass looks each row's key up in them.
//! The delivery of a dataset whose last validation found a repeated key
//! (`meta.validation_log.duplicated_rows`) takes the pre-pass at once: the read
//! stopped at the first repeat would be waste, up to a whole read.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufReader, BufWriter, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, AsArray, Decimal128Array, RecordBatch};
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

/// A key fingerprint as a set keeps it: the in-pass check keeps 64 of its 128
/// bits (a collision only sends the file to the exact pre-pass), the pre-pass's
/// [`Duplicates`] all of them (a collision there would flag a row).
pub trait Kept: Copy + Ord + std::hash::Hash + Send + 'static {
    const BYTES: usize;
    fn of(fingerprint: i128) -> Self;
    fn write(self, out: &mut impl Write) -> std::io::Result<()>;
    fn read(input: &mut impl Read) -> std::io::Result<Self>;
}

/// [`Kept`] for an unsigned integer type (little-endian on disk).
macro_rules! kept {
    ($t:ty) => {
        impl Kept for $t {
            const BYTES: usize = std::mem::size_of::<$t>();
            fn of(fingerprint: i128) -> $t {
                fingerprint as $t
            }
            fn write(self, out: &mut impl Write) -> std::io::Result<()> {
                out.write_all(&self.to_le_bytes())
            }
            fn read(input: &mut impl Read) -> std::io::Result<$t> {
                let mut bytes = [0u8; std::mem::size_of::<$t>()];
                input.read_exact(&mut bytes)?;
                Ok(<$t>::from_le_bytes(bytes))
            }
        }
    };
}

kept!(u64);
kept!(u128);

/// The fingerprints seen so far of each key: a hash set in a reservation of the
/// session's memory pool of at most `budget` bytes (with the room to sort it),
/// and the sorted runs it was written to each time it filled.
///
/// The in-pass check ([`KeyTracker::add`]) keeps 64 of a fingerprint's 128 bits:
/// two different keys sharing them (a chance near n²/2⁶⁵) only send the file to
/// the exact pre-pass, they never flag a row.
pub struct KeyTracker<T: Kept = u64> {
    keys: Vec<Keys<T>>,
    reservation: MemoryReservation,
    budget: usize,
    disk: Arc<DiskManager>,
}

struct Keys<T> {
    seen: HashSet<T, BuildHasherDefault<Bits>>,
    runs: Vec<Arc<dyn SpillFile>>,
}

impl<T> Default for Keys<T> {
    fn default() -> Keys<T> {
        Keys {
            seen: HashSet::default(),
            runs: Vec::new(),
        }
    }
}

impl<T: Kept> KeyTracker<T> {
    /// Sized up front for `rows` rows (as far as the budget allows) when the
    /// header gave an estimate: growing by doubling holds the old and the new
    /// table at once (3 M keys: 20 MiB more peak RSS, the same time).
    pub fn new(
        keys: usize,
        rows: Option<u64>,
        pool: &Arc<dyn MemoryPool>,
        disk: Arc<DiskManager>,
        budget: usize,
    ) -> Result<KeyTracker<T>, Stop> {
        let mut tracker = KeyTracker {
            keys: (0..keys).map(|_| Keys::default()).collect(),
            reservation: MemoryConsumer::new("uniqueness keys").register(pool),
            budget,
            disk,
        };
        if let Some(rows) = rows.filter(|_| keys > 0) {
            let fits = items_within::<T>(budget / keys);
            for k in 0..keys {
                tracker.make_room(k, (rows as usize).min(fits))?;
            }
        }
        Ok(tracker)
    }

    /// Remembers key `k`'s `more` fingerprints; `repeat` is told of each one
    /// already in the set.
    fn insert(
        &mut self,
        k: usize,
        (more, fingerprints): (usize, impl Iterator<Item = i128>),
        mut repeat: impl FnMut(T) -> Result<(), Stop>,
    ) -> Result<(), Stop> {
        if let Err(full) = self.make_room(k, more) {
            if self.keys[k].seen.is_empty() {
                return Err(full);
            }
            self.spill(k)?;
            self.make_room(k, more)?;
        }
        let seen = &mut self.keys[k].seen;
        for fp in fingerprints {
            let fp = T::of(fp);
            if !seen.insert(fp) {
                repeat(fp)?;
            }
        }
        Ok(())
    }

    /// At the end of the read: `repeat` is told of each fingerprint found in two
    /// of key `k`'s sorted runs (the set counting as the last one).
    fn merge(&mut self, mut repeat: impl FnMut(usize, T) -> Result<(), Stop>) -> Result<(), Stop> {
        for k in 0..self.keys.len() {
            if self.keys[k].runs.is_empty() {
                continue;
            }
            let last = self.sorted(k);
            let spill = |e: std::io::Error| Stop::Spill(e.to_string());
            let mut runs: Vec<Box<dyn Iterator<Item = std::io::Result<T>>>> =
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
                    repeat(k, fp)?;
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
        let run = self.sorted(k);
        let spill = |e: &dyn std::fmt::Display| Stop::Spill(e.to_string());
        let file = self
            .disk
            .create_tmp_file("uniqueness keys")
            .map_err(|e| spill(&e))?;
        let path = file.path().ok_or_else(|| spill(&"not a local file"))?;
        let mut out = BufWriter::new(std::fs::File::create(path).map_err(|e| spill(&e))?);
        run.iter()
            .try_for_each(|fp| fp.write(&mut out))
            .and_then(|()| out.flush())
            .map_err(|e| spill(&e))?;
        self.keys[k].runs.push(file);
        Ok(())
    }

    /// Key `k`'s set drained into a sorted vector (its room is reserved with
    /// the set's, see [`set_cost`]).
    fn sorted(&mut self, k: usize) -> Vec<T> {
        let mut run: Vec<T> = self.keys[k].seen.drain().collect();
        run.sort_unstable();
        run
    }

    /// Grows key `k`'s set to hold `more` fingerprints, within the budget and
    /// the pool.
    fn make_room(&mut self, k: usize, more: usize) -> Result<(), Stop> {
        let set = &mut self.keys[k].seen;
        let wanted = set.len() + more;
        if wanted <= set.capacity() {
            return Ok(());
        }
        let others = self.reservation.size() - set_cost::<T>(set.capacity());
        let planned = set_cost::<T>(wanted.max(set.capacity() + 1));
        if others + planned > self.budget || self.reservation.try_resize(others + planned).is_err()
        {
            return Err(Stop::Full(self.budget));
        }
        set.reserve(more);
        self.reservation
            .resize(others + set_cost::<T>(set.capacity()));
        Ok(())
    }
}

impl KeyTracker {
    /// Remembers the fingerprints in `batch`'s [`fingerprint_column`]s; the
    /// first one seen twice stops the check.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<(), Stop> {
        for k in 0..self.keys.len() {
            let column = batch
                .column_by_name(&fingerprint_column(k))
                .expect("an in-pass plan carries every key's fingerprint");
            // A null fingerprint is a key with a missing part: no part in uniqueness.
            let fingerprints = column.as_primitive::<Decimal128Type>();
            let more = fingerprints.len() - fingerprints.null_count();
            self.insert(k, (more, fingerprints.iter().flatten()), |_| {
                Err(Stop::Duplicate(k))
            })?;
        }
        Ok(())
    }

    /// At the end of the read: a key in two runs is a repeated key.
    pub fn finish(mut self) -> Result<(), Stop> {
        self.merge(|k, _| Err(Stop::Duplicate(k)))
    }
}

/// The pre-pass's collection of each key's duplicated fingerprints: every
/// fingerprint is kept whole in a [`KeyTracker`] (spilling sorted runs when its
/// budget is full), and each one seen again is collected, up to `budget` bytes
/// of them ([`TooManyDuplicates`]).
///
/// Shared by the threads of a ranged read: the fingerprints are split by their
/// high bits among [`SHARDS`] trackers, each behind its own lock, so the
/// threads insert at once (a set that size misses the cache on every insert:
/// behind one lock the inserts were the pre-pass's slowest step).
pub struct Duplicates {
    shards: Vec<Mutex<Shard>>,
    found: AtomicUsize,
    budget: usize,
}

/// How many ways [`Duplicates`] splits the fingerprints: at 3 M keys a shard's
/// set is about 256 KiB, which a core's cache holds while a [`Batch`] of its
/// fingerprints goes in.
pub const SHARDS: usize = 256;

/// The fingerprints a [`Batch`] holds for a shard before it adds them at once.
const BATCH: usize = 1024;

type Found = HashSet<u128, BuildHasherDefault<Bits>>;

struct Shard {
    tracker: KeyTracker<u128>,
    found: Vec<Found>,
}

impl Duplicates {
    /// `keys_budget` for the fingerprints seen, `budget` for the duplicated
    /// ones; `rows` (the header's guess) sizes the sets up front.
    pub fn new(
        keys: usize,
        rows: Option<u64>,
        pool: &Arc<dyn MemoryPool>,
        disk: Arc<DiskManager>,
        (keys_budget, budget): (usize, usize),
    ) -> Result<Duplicates, Stop> {
        let shard_rows = rows.map(|r| r / SHARDS as u64 + 1);
        let shards = (0..SHARDS)
            .map(|_| {
                Ok(Mutex::new(Shard {
                    tracker: KeyTracker::new(
                        keys,
                        shard_rows,
                        pool,
                        disk.clone(),
                        keys_budget / SHARDS,
                    )?,
                    found: (0..keys).map(|_| Found::default()).collect(),
                }))
            })
            .collect::<Result<_, Stop>>()?;
        Ok(Duplicates {
            shards,
            found: AtomicUsize::new(0),
            budget,
        })
    }

    /// Key `k`'s fingerprints of some rows (nulls take no part), added at once.
    #[cfg(test)]
    fn add(&self, k: usize, fingerprints: &Decimal128Array) -> Result<(), Duplicated> {
        let mut batch = self.batch();
        batch.add(k, fingerprints)?;
        batch.flush()
    }

    /// A thread's buffer in front of the shards (see [`Batch`]).
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            into: self,
            held: Vec::new(),
        }
    }

    /// Key `k`'s fingerprints of one shard.
    fn add_to(&self, k: usize, shard: usize, fps: &mut Vec<i128>) -> Result<(), Duplicated> {
        let mut guard = self.shards[shard].lock().expect("not poisoned");
        let Shard { tracker, found } = &mut *guard;
        let mut full = None;
        let result = tracker.insert(k, (fps.len(), fps.drain(..)), |fp| {
            self.collect(&mut found[k], fp).map_err(|too_many| {
                full = Some(too_many);
                Stop::Duplicate(k)
            })
        });
        outcome(result, full)
    }

    /// Each key's duplicated fingerprints, once all rows were added.
    pub fn finish(self) -> Result<Vec<Vec<i128>>, Duplicated> {
        let mut all: Vec<Vec<i128>> = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock().expect("not poisoned");
            let Shard { tracker, found } = &mut *shard;
            let mut full = None;
            let result = tracker.merge(|k, fp| {
                self.collect(&mut found[k], fp).map_err(|too_many| {
                    full = Some(too_many);
                    Stop::Duplicate(k)
                })
            });
            outcome(result, full)?;
            all.resize_with(found.len(), Vec::new);
            for (k, set) in found.iter().enumerate() {
                all[k].extend(set.iter().map(|&fp| fp as i128));
            }
        }
        Ok(all)
    }

    /// Adds a duplicated fingerprint, within `budget` bytes for all of them.
    fn collect(&self, found: &mut Found, fp: u128) -> Result<(), TooManyDuplicates> {
        if found.insert(fp) {
            let keys = self.found.fetch_add(1, Ordering::Relaxed) + 1;
            if super::rules::repeated_key_bytes(keys) > self.budget {
                return Err(TooManyDuplicates {
                    keys,
                    budget: self.budget,
                });
            }
        }
        Ok(())
    }
}

/// One thread's fingerprints on their way into [`Duplicates`], held by shard
/// and added [`BATCH`] at a time: a batch of rows added at once put a few of
/// them into every shard's set, each insert a miss of the cache (a 3 M-key
/// pre-pass spent a third of its time there). Repeats are found as the held
/// fingerprints go in, at the latest by [`Batch::flush`], which every batch
/// must get before [`Duplicates::finish`] (what is still held is not seen).
/// What a batch holds is outside the pool's reservation: at most [`SHARDS`] ×
/// [`BATCH`] fingerprints a key, 4 MiB, per thread.
pub struct Batch<'a> {
    into: &'a Duplicates,
    /// Each key's held fingerprints, by shard.
    held: Vec<Vec<Vec<i128>>>,
}

impl Batch<'_> {
    /// Key `k`'s fingerprints of some rows (nulls take no part).
    pub fn add(&mut self, k: usize, fingerprints: &Decimal128Array) -> Result<(), Duplicated> {
        if self.held.len() <= k {
            self.held.resize_with(k + 1, || vec![Vec::new(); SHARDS]);
        }
        for fp in fingerprints.iter().flatten() {
            let shard = shard(fp);
            let held = &mut self.held[k][shard];
            held.push(fp);
            if held.len() >= BATCH {
                self.into.add_to(k, shard, held)?;
            }
        }
        Ok(())
    }

    /// Adds every fingerprint still held.
    pub fn flush(&mut self) -> Result<(), Duplicated> {
        for (k, shards) in self.held.iter_mut().enumerate() {
            for (shard, held) in shards.iter_mut().enumerate() {
                if !held.is_empty() {
                    self.into.add_to(k, shard, held)?;
                }
            }
        }
        Ok(())
    }
}

/// A shard's insert or merge: too many duplicates wins over the stop it caused.
fn outcome(result: Result<(), Stop>, full: Option<TooManyDuplicates>) -> Result<(), Duplicated> {
    match (result, full) {
        (_, Some(too_many)) => Err(Duplicated::TooMany(too_many)),
        (Err(stop), None) => Err(Duplicated::Stop(stop)),
        (Ok(()), None) => Ok(()),
    }
}

/// The shard of a fingerprint: its high bits (the sets hash the low ones).
fn shard(fp: i128) -> usize {
    ((fp as u128) >> (128 - SHARDS.trailing_zeros())) as usize
}

/// Why [`Duplicates`] gave up.
#[derive(Debug)]
pub enum Duplicated {
    /// More duplicated keys than the budget holds: the file cannot be validated
    /// within the memory limit.
    TooMany(TooManyDuplicates),
    /// The pool or the temporary files failed the key set.
    Stop(Stop),
}

/// More duplicated keys than the pool can hold for the uniqueness check.
#[derive(Debug, thiserror::Error)]
#[error(
    "at least {keys} keys occur more than once in the file: they outgrow {} MiB, \
     a quarter of limits.memory_bytes; raise limits.memory_bytes",
    budget >> 20
)]
pub struct TooManyDuplicates {
    pub keys: usize,
    pub budget: usize,
}

/// The fingerprints of a run file, in order.
fn read_run<T: Kept>(file: std::fs::File) -> impl Iterator<Item = std::io::Result<T>> {
    let mut reader = BufReader::new(file);
    std::iter::from_fn(move || match T::read(&mut reader) {
        Ok(fp) => Some(Ok(fp)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
        Err(e) => Some(Err(e)),
    })
}

/// The most fingerprints a set sized for them at once can hold when it and its
/// sort buffer take at most `bytes` ([`set_cost`]).
fn items_within<T: Kept>(bytes: usize) -> usize {
    let buckets = bytes / (2 * T::BYTES);
    if buckets < 8 {
        return 0;
    }
    let buckets = 1usize << (usize::BITS - 1 - buckets.leading_zeros());
    buckets / 8 * 7
}

/// The bytes a set grown to hold `items` fingerprints may take: a power of two
/// of buckets at most 7/8 full, each a fingerprint and a control byte, and the
/// vector its fingerprints are sorted into when it spills — twice a
/// fingerprint's bytes a bucket. (While the table grows, the old and the new
/// one fit in the same bytes.)
fn set_cost<T: Kept>(items: usize) -> usize {
    if items == 0 {
        return 0;
    }
    let buckets = (items.saturating_mul(8) / 7).max(4).next_power_of_two();
    buckets.saturating_mul(2 * T::BYTES)
}

/// Fingerprints are hashes already: the set uses their low bits as they are.
#[derive(Default)]
struct Bits(u64);

impl Hasher for Bits {
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
    fn write_u128(&mut self, x: u128) {
        self.0 = x as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(items_within::<u64>(64 << 10), 3584);
        assert_eq!(set_cost::<u64>(3584), 64 << 10);
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

    /// A pool and a disk with room for every test's keys.
    fn room() -> (Arc<dyn MemoryPool>, Arc<DiskManager>) {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 30));
        (
            pool,
            Arc::new(DiskManager::builder().build().expect("disk manager")),
        )
    }

    /// Key `i`'s fingerprint, spread over every shard as hashes are.
    fn fp(i: i128) -> i128 {
        (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) as i128
    }

    /// The fingerprints of keys `range`.
    fn many(range: std::ops::Range<i128>) -> Decimal128Array {
        Decimal128Array::from(range.map(fp).collect::<Vec<_>>())
            .with_data_type(DataType::Decimal128(38, 0))
    }

    /// The pre-pass's collection finds exactly the repeated fingerprints, in
    /// the set or across the sorted runs its shards spilled, and fails past its
    /// budget for them.
    #[test]
    fn duplicates_are_collected_across_shards_and_spilled_runs() {
        let (pool, disk) = room();
        // 1 MiB for the 256 shards: 4 KiB, 112 keys, each before it spills a run.
        let d = Duplicates::new(1, None, &pool, disk.clone(), (1 << 20, 1 << 20)).expect("room");
        for start in (0..40_000).step_by(1000) {
            d.add(0, &many(start..start + 1000)).expect("within budget");
        }
        d.add(0, &many(7..8)).expect("a repeat of an early key");
        d.add(0, &many(39_999..40_001))
            .expect("a repeat in the set");
        let spilled: usize = d
            .shards
            .iter()
            .map(|s| s.lock().unwrap().tracker.keys[0].runs.len())
            .sum();
        assert!(spilled >= 16, "{spilled} runs");
        let used = d
            .shards
            .iter()
            .filter(|s| !s.lock().unwrap().tracker.keys[0].runs.is_empty());
        assert_eq!(used.count(), SHARDS, "every shard spilled");
        let mut found = d.finish().expect("found");
        found[0].sort_unstable();
        let mut want = vec![fp(7), fp(39_999)];
        want.sort_unstable();
        assert_eq!(found, vec![want]);

        // Room for 8 duplicated keys' lookup at most: the 9th fails.
        let d = Duplicates::new(
            1,
            None,
            &pool,
            disk,
            (1 << 20, super::super::rules::repeated_key_bytes(8)),
        )
        .expect("room");
        d.add(0, &many(0..100)).expect("distinct");
        assert!(matches!(d.add(0, &many(0..100)), Err(Duplicated::TooMany(t)) if t.keys == 9));
    }

    /// Two threads' batches hold their fingerprints by shard: what they add
    /// in the end is what adding each batch of rows at once would have added,
    /// a repeat across threads included.
    #[test]
    fn held_fingerprints_find_the_repeats_once_flushed() {
        let (pool, disk) = room();
        let d = Duplicates::new(1, None, &pool, disk, (64 << 20, 1 << 20)).expect("room");
        let (mut first, mut second) = (d.batch(), d.batch());
        first.add(0, &many(0..300_000)).expect("distinct");
        second.add(0, &many(300_000..600_000)).expect("distinct");
        second.add(0, &many(5..6)).expect("held: not seen yet");
        first.add(0, &many(599_999..600_000)).expect("held");
        let held: usize = first.held[0]
            .iter()
            .chain(&second.held[0])
            .map(Vec::len)
            .sum();
        assert!(held > 0 && held < SHARDS * BATCH, "{held} held");
        first.flush().expect("within budget");
        second.flush().expect("within budget");
        drop((first, second));
        let mut found = d.finish().expect("found");
        found[0].sort_unstable();
        let mut want = vec![fp(5), fp(599_999)];
        want.sort_unstable();
        assert_eq!(found, vec![want]);
    }

    #[test]
    fn a_pool_without_room_stops_the_in_pass_check() {
        // 1 000 keys take 2 048 buckets, 32 KiB: more than a 16 KiB pool.
        let mut t = tracker(16 << 10, 1 << 20).expect("an empty set");
        assert_eq!(t.add(&keys(0..1000)), Err(Stop::Full(1 << 20)));
        // Sized up front for an estimate within the budget, never past it.
        let (pool, disk) = room();
        let t = KeyTracker::<u64>::new(1, Some(1 << 30), &pool, disk, 64 << 10).expect("room");
        assert_eq!(t.keys[0].seen.capacity(), 3584);
    }

    #[test]
    fn the_plan_follows_the_dataset_history() {
        assert_eq!(KeyPass::choose(0, true), KeyPass::None);
        assert_eq!(KeyPass::choose(1, false), KeyPass::InPass);
        assert_eq!(KeyPass::choose(2, true), KeyPass::PrePass);
        // 3 million keys: 4 Mi buckets, 36 MiB of table and 28 MiB to sort them in.
        assert_eq!(set_cost::<u64>(3_000_000), 64 << 20);
    }
}
