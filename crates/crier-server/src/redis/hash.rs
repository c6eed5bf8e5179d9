//! Which shard a channel lives on: FNV-1a of the channel name, then Lamping
//! and Veach's jump consistent hash. Adding a shard moves only about 1/n of
//! the channels, and every node computes the same answer.

/// FNV-1a, 64 bits.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Jump consistent hash ("A Fast, Minimal Memory, Consistent Hash
/// Algorithm", Lamping & Veach 2014): a bucket in `0..buckets` for `key`.
/// `buckets` of 0 is treated as 1.
pub(crate) fn jump_consistent_hash(mut key: u64, buckets: usize) -> usize {
    let buckets = buckets.max(1) as i64;
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

/// The shard of `channel` among `shards`.
pub(crate) fn shard_of(channel: &str, shards: usize) -> usize {
    jump_consistent_hash(fnv1a64(channel.as_bytes()), shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn jump_hash_is_stable() {
        // Pinned answers (checked against a straight transcription of the
        // paper's C++ in Python): every node and every version must agree,
        // or channels would move between shards.
        let got: Vec<usize> = (0..8u64).map(|k| jump_consistent_hash(k, 10)).collect();
        assert_eq!(got, [0, 6, 6, 8, 1, 4, 9, 0]);
        assert_eq!(jump_consistent_hash(0xdead_beef, 1000), 285);
        assert_eq!(jump_consistent_hash(1 << 63, 100), 84);
        let shards: Vec<usize> = ["news", "chat:1", "a", ""]
            .iter()
            .map(|c| shard_of(c, 3))
            .collect();
        assert_eq!(shards, [2, 0, 2, 1]);
        assert_eq!(jump_consistent_hash(u64::MAX, 1), 0);
        assert_eq!(jump_consistent_hash(7, 0), 0);
        // Growing from n to n + 1 buckets only ever moves a key to bucket n.
        for key in (0..2_000u64).map(|k| fnv1a64(&k.to_le_bytes())) {
            for n in 1..40 {
                let (a, b) = (jump_consistent_hash(key, n), jump_consistent_hash(key, n + 1));
                assert!(a < n && (b == a || b == n), "key {key} n {n}: {a} -> {b}");
            }
        }
    }

    #[test]
    fn jump_hash_moves_few_keys_when_a_shard_is_added() {
        let n = 10_000u64;
        let moved = (0..n)
            .filter(|k| {
                let key = fnv1a64(&k.to_le_bytes());
                let (a, b) = (jump_consistent_hash(key, 4), jump_consistent_hash(key, 5));
                if a != b {
                    // A key only ever moves to the new shard.
                    assert_eq!(b, 4);
                }
                a != b
            })
            .count() as f64;
        // Ideal: n / 5 = 2,000.
        assert!((1_600.0..2_400.0).contains(&moved), "moved {moved}");
    }

    #[test]
    fn channels_are_balanced_over_shards() {
        let shards = 3;
        let mut counts = [0usize; 3];
        for i in 0..30_000 {
            counts[shard_of(&format!("chat:room-{i}"), shards)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }
}
