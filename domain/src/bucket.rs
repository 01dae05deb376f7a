//! Portable bucketing: `bucket = xxh3_64_with_seed(entity_key bytes, salt) mod 10000`.
//!
//! xxh3-64 has implementations in every mainstream language and its seeded variant takes the
//! salt directly, so any client can reproduce the server's buckets. `testdata/bucketing.csv` at
//! the repository root lists published vectors; [`tests::published_vectors_hold`] checks them.
//! Integer entity keys are bucketed by their decimal text.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Number of buckets; equal to the basis-point scale so `bucket < rollout` reads directly.
pub const BUCKETS: u32 = 10_000;

#[inline]
pub fn bucket(salt: u64, entity_key: &[u8]) -> u32 {
    (xxh3_64_with_seed(entity_key, salt) % u64::from(BUCKETS)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: &str = include_str!("../../testdata/bucketing.csv");

    #[test]
    fn published_vectors_hold() {
        let mut rows = 0;
        for line in VECTORS.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let cols: Vec<&str> = line.split(',').collect();
            let [salt, key, hash, expected] = cols[..] else {
                panic!("malformed vector row {line:?}");
            };
            let salt: u64 = salt.parse().unwrap();
            let key = key.trim_matches('"');
            assert_eq!(
                format!("{:016x}", xxh3_64_with_seed(key.as_bytes(), salt)),
                hash,
                "hash of {key:?} with salt {salt}"
            );
            assert_eq!(
                bucket(salt, key.as_bytes()),
                expected.parse::<u32>().unwrap()
            );
            rows += 1;
        }
        assert!(rows >= 20, "only {rows} vectors");
    }

    #[test]
    fn buckets_spread_evenly() {
        let mut counts = [0u32; 10];
        for i in 0..100_000u32 {
            counts[(bucket(42, i.to_string().as_bytes()) / 1_000) as usize] += 1;
        }
        for c in counts {
            assert!((9_500..=10_500).contains(&c), "{counts:?}");
        }
    }
}
