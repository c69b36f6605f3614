//! Kafka's default partitioner: `(murmur2(key) & 0x7fffffff) % partitions`, bit-for-bit as
//! the Java client computes it, so a record keyed by folio, a Java client or kcat lands on
//! the same partition.

/// MurmurHash2 (32-bit) with Kafka's seed, as in the Java client's `Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition a keyed record goes to among `partitions` partitions.
///
/// # Panics
/// Never for `partitions >= 1`; callers obtain counts from topic metadata, which is positive.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    let partitions = partitions.max(1);
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from the Java client's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: [(&str, i32); 6] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key.as_bytes()), want, "murmur2({key:?})");
        }
    }

    #[test]
    fn partition_is_non_negative_modulo_count() {
        // "foobar" hashes negative: the sign bit is masked, as Java does.
        let p = partition_for_key(b"foobar", 3);
        assert_eq!(p, ((-790_332_482i32 & 0x7fff_ffff) % 3));
        for key in ["1", "2", "42", "1000"] {
            let p = partition_for_key(key.as_bytes(), 2);
            assert!((0..2).contains(&p));
        }
    }
}
