//! A map split into independently locked shards, so unrelated keys never
//! contend. Internal to the crate.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};

use parking_lot::{Mutex, RwLock};
use rustc_hash::{FxBuildHasher, FxHashMap};

// Power of two, so a shard is picked with a mask. 64 shards keep contention
// low on many cores and cost ~3 KiB when empty.
const SHARDS: usize = 64;

fn index<Q: Hash + ?Sized>(key: &Q) -> usize {
    // The top bits of Fx are the well-mixed ones.
    (FxBuildHasher.hash_one(key) >> 58) as usize & (SHARDS - 1)
}

/// Shards read far more often than written (clients, channels).
pub(crate) struct RwShards<K, V> {
    shards: Box<[RwLock<FxHashMap<K, V>>]>,
}

impl<K: Hash + Eq, V> RwShards<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(FxHashMap::default())).collect(),
        }
    }

    pub(crate) fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &RwLock<FxHashMap<K, V>>
    where
        K: Borrow<Q>,
    {
        &self.shards[index(key)]
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &RwLock<FxHashMap<K, V>>> {
        self.shards.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }
}

/// Shards mutated on most accesses (engine streams, presence).
pub(crate) struct MutexShards<K, V> {
    shards: Box<[Mutex<FxHashMap<K, V>>]>,
}

impl<K: Hash + Eq, V> MutexShards<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(FxHashMap::default())).collect(),
        }
    }

    pub(crate) fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Mutex<FxHashMap<K, V>>
    where
        K: Borrow<Q>,
    {
        &self.shards[index(key)]
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Mutex<FxHashMap<K, V>>> {
        self.shards.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_the_shards() {
        // What the sharding is for: unrelated channels and clients land in
        // different shards, so they do not contend for one lock.
        let mut used = [0usize; SHARDS];
        for i in 0..1_000 {
            used[index(format!("chat:{i}").as_str())] += 1;
            used[index(&(i as u64))] += 1;
        }
        let shards_used = used.iter().filter(|&&n| n > 0).count();
        assert!(
            shards_used >= SHARDS * 3 / 4,
            "{shards_used} of {SHARDS} shards used"
        );
        let fullest = used.iter().max().copied().unwrap_or(0);
        assert!(fullest < 2_000 / 8, "one shard holds {fullest} of 2000 keys");
    }
}
