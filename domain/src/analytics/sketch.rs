//! A mergeable distinct-count sketch: exact while small, HyperLogLog beyond.
//!
//! - Up to [`EXACT_LIMIT`] distinct members it keeps their 64-bit hashes, so small counts
//!   are exact. The hash of a user id is a bijection ([`hash_id`]), so two ids never collide.
//! - Past that it switches to HyperLogLog with 2^14 one-byte registers: 16 KiB, a standard
//!   error of 1.04/√16384 ≈ 0.81%, so estimates stay within 2% at about 2.5σ.
//! - Merging is a union; it is associative, commutative and idempotent, so figures from
//!   several partitions and windows combine in any order.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// Distinct members kept exactly before switching to HyperLogLog.
pub const EXACT_LIMIT: usize = 1024;
const P: u32 = 14;
const M: usize = 1 << P;

/// A distinct-count sketch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sketch {
    /// Sorted, de-duplicated member hashes.
    Exact(Vec<u64>),
    /// HyperLogLog registers.
    Dense(Box<[u8]>),
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch::Exact(Vec::new())
    }
}

/// A well-mixed 64-bit hash of an integer id: MurmurHash3's finalizer, a bijection on u64.
pub fn hash_id(id: i64) -> u64 {
    let mut k = id as u64;
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

impl Sketch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Sketch::Exact(v) if v.is_empty())
    }

    /// Adds a member by its id.
    pub fn insert_id(&mut self, id: i64) {
        self.insert_hash(hash_id(id));
    }

    pub fn insert_hash(&mut self, h: u64) {
        match self {
            Sketch::Exact(v) => {
                if let Err(pos) = v.binary_search(&h) {
                    v.insert(pos, h);
                    if v.len() > EXACT_LIMIT {
                        self.densify();
                    }
                }
            }
            Sketch::Dense(regs) => add_to_registers(regs, h),
        }
    }

    fn densify(&mut self) {
        if let Sketch::Exact(v) = self {
            let mut regs = vec![0u8; M].into_boxed_slice();
            for &h in v.iter() {
                add_to_registers(&mut regs, h);
            }
            *self = Sketch::Dense(regs);
        }
    }

    /// Adds every member of `other`.
    pub fn merge(&mut self, other: &Sketch) {
        match other {
            Sketch::Exact(hs) => {
                if let Sketch::Exact(v) = self {
                    if v.is_empty() {
                        v.extend_from_slice(hs);
                        return;
                    }
                    let mut merged = Vec::with_capacity(v.len() + hs.len());
                    let (mut i, mut j) = (0, 0);
                    while i < v.len() && j < hs.len() {
                        match v[i].cmp(&hs[j]) {
                            std::cmp::Ordering::Less => {
                                merged.push(v[i]);
                                i += 1;
                            }
                            std::cmp::Ordering::Greater => {
                                merged.push(hs[j]);
                                j += 1;
                            }
                            std::cmp::Ordering::Equal => {
                                merged.push(v[i]);
                                i += 1;
                                j += 1;
                            }
                        }
                    }
                    merged.extend_from_slice(&v[i..]);
                    merged.extend_from_slice(&hs[j..]);
                    *v = merged;
                    if v.len() > EXACT_LIMIT {
                        self.densify();
                    }
                } else {
                    for &h in hs {
                        self.insert_hash(h);
                    }
                }
            }
            Sketch::Dense(theirs) => {
                self.densify();
                if let Sketch::Dense(regs) = self {
                    for (a, b) in regs.iter_mut().zip(theirs.iter()) {
                        *a = (*a).max(*b);
                    }
                }
            }
        }
    }

    /// The number of distinct members: exact in the exact form, estimated beyond.
    pub fn estimate(&self) -> u64 {
        match self {
            Sketch::Exact(v) => v.len() as u64,
            Sketch::Dense(regs) => estimate_registers(regs),
        }
    }

    /// A compact binary form: a tag byte, then the hashes (little-endian) or the registers.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Sketch::Exact(v) => {
                let mut out = Vec::with_capacity(1 + v.len() * 8);
                out.push(1);
                for h in v {
                    out.extend_from_slice(&h.to_le_bytes());
                }
                out
            }
            Sketch::Dense(regs) => {
                let mut out = Vec::with_capacity(1 + M);
                out.push(2);
                out.extend_from_slice(regs);
                out
            }
        }
    }

    pub fn from_bytes(b: &[u8]) -> Result<Sketch, String> {
        match b.split_first() {
            None => Ok(Sketch::default()),
            Some((1, rest)) if rest.len() % 8 == 0 && rest.len() / 8 <= EXACT_LIMIT => {
                let mut v: Vec<u64> = rest
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect();
                v.sort_unstable();
                v.dedup();
                Ok(Sketch::Exact(v))
            }
            Some((2, rest)) if rest.len() == M && rest.iter().all(|&r| r <= 64 - P as u8 + 1) => {
                Ok(Sketch::Dense(rest.to_vec().into_boxed_slice()))
            }
            _ => Err("sketch bytes are malformed".into()),
        }
    }

    pub fn to_base64(&self) -> String {
        B64.encode(self.to_bytes())
    }

    pub fn from_base64(s: &str) -> Result<Sketch, String> {
        let bytes = B64
            .decode(s)
            .map_err(|e| format!("sketch is not base64: {e}"))?;
        Sketch::from_bytes(&bytes)
    }
}

fn add_to_registers(regs: &mut [u8], h: u64) {
    let idx = (h >> (64 - P)) as usize;
    let w = (h << P) | (1 << (P - 1));
    let rank = (w.leading_zeros() + 1) as u8;
    if regs[idx] < rank {
        regs[idx] = rank;
    }
}

fn estimate_registers(regs: &[u8]) -> u64 {
    let m = M as f64;
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let mut sum = 0.0;
    let mut zeros = 0usize;
    for &r in regs {
        sum += 2f64.powi(-i32::from(r));
        if r == 0 {
            zeros += 1;
        }
    }
    let raw = alpha * m * m / sum;
    let est = if raw <= 2.5 * m && zeros > 0 {
        m * (m / zeros as f64).ln()
    } else {
        raw
    };
    est.round() as u64
}

impl serde::Serialize for Sketch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for Sketch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Sketch::from_base64(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_counts_are_exact() {
        let mut s = Sketch::new();
        for id in 1..=EXACT_LIMIT as i64 {
            s.insert_id(id);
            s.insert_id(id);
        }
        assert_eq!(s.estimate(), EXACT_LIMIT as u64);
        assert!(matches!(s, Sketch::Exact(_)));
    }

    #[test]
    fn large_counts_stay_within_two_percent() {
        for n in [5_000i64, 50_000, 500_000] {
            let mut s = Sketch::new();
            for id in 0..n {
                s.insert_id(id * 7919 + 13);
            }
            let est = s.estimate() as f64;
            let err = (est - n as f64).abs() / n as f64;
            assert!(err < 0.02, "n={n} estimate={est} error={err:.4}");
        }
    }

    #[test]
    fn merge_is_a_union() {
        let (mut a, mut b, mut all) = (Sketch::new(), Sketch::new(), Sketch::new());
        for id in 0..3_000 {
            a.insert_id(id);
            all.insert_id(id);
        }
        for id in 2_000..6_000 {
            b.insert_id(id);
            all.insert_id(id);
        }
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab, all);
        let mut twice = ab.clone();
        twice.merge(&b);
        assert_eq!(twice, ab);
        let mut small = Sketch::new();
        small.insert_id(1);
        small.merge(&{
            let mut t = Sketch::new();
            t.insert_id(2);
            t.insert_id(1);
            t
        });
        assert_eq!(small.estimate(), 2);
    }

    #[test]
    fn bytes_round_trip_and_garbage_is_refused() {
        let mut s = Sketch::new();
        for id in 0..10 {
            s.insert_id(id);
        }
        assert_eq!(Sketch::from_base64(&s.to_base64()), Ok(s.clone()));
        for id in 0..5_000 {
            s.insert_id(id);
        }
        assert_eq!(Sketch::from_bytes(&s.to_bytes()), Ok(s));
        assert!(Sketch::from_bytes(&[9, 1, 2]).is_err());
        assert!(Sketch::from_base64("***").is_err());
    }
}
